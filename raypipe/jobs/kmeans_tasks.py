"""K-means shards kept in Ray's object store; each question is answered by Ray tasks.

Only centroids (k x d) go out and partial sums, counts and inertia come back each iteration.
Tasks are pure functions of (shard, centroids), so Ray's retries are safe.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from raypipe.segments.shard import shard_sample
from raypipe.arrays import to_numpy


@ray.remote(max_retries=3)
def _apply(fn, shard, *args):
    return fn(shard, *args)


@ray.remote(max_retries=3, num_returns=2)
def _scan(fn, shard, state, *args):
    return fn(shard, state, *args)


@ray.remote(max_retries=3)
def _to_matrix(block: pa.Table, column: str) -> np.ndarray:
    return to_numpy(block[column])


class RayShards:
    """Same interface as `kmeans.LocalShards`, over object-store references."""

    concurrent = True         # restarts run at the same time: their tasks share the cluster

    def __init__(self, refs: list, sizes: list[int], dim: int):
        self.refs, self.sizes, self.dim = refs, sizes, dim

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray]) -> "RayShards":
        arrays = [np.ascontiguousarray(a, np.float32) for a in arrays]
        return cls([ray.put(a) for a in arrays], [len(a) for a in arrays], arrays[0].shape[1])

    @classmethod
    def from_dataset(cls, ds, column: str = "vector") -> "RayShards":
        """One shard per block of a dataset's `column`, in block order (only that column is
        read and held)."""
        refs = [_to_matrix.remote(b, column) for b in ds.select_columns([column]).to_arrow_refs()]
        shapes = ray.get([_apply.remote(np.shape, r) for r in refs])
        keep = [i for i, s in enumerate(shapes) if s[0] > 0]
        return cls([refs[i] for i in keep], [shapes[i][0] for i in keep], shapes[keep[0]][1])

    def map(self, fn, *args) -> list:
        args = [ray.put(a) if isinstance(a, np.ndarray) else a for a in args]
        return ray.get([_apply.remote(fn, r, *args) for r in self.refs])

    def sample(self, fraction: float, seed: int) -> list[np.ndarray]:
        return ray.get([_apply.remote(shard_sample, r, fraction, seed) for r in self.refs])

    def scan(self, fn, states, *args) -> tuple[list, list]:
        """fn(shard, state, *args) -> (state, result); states stay in the object store."""
        args = [ray.put(a) if isinstance(a, np.ndarray) else a for a in args]
        refs = [_scan.remote(fn, r, st, *args)
                for r, st in zip(self.refs, states or [None] * len(self.refs))]
        return [s for s, _ in refs], ray.get([res for _, res in refs])
