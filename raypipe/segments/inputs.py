"""What `KMeans.fit` runs over: shards of vectors that answer the shard functions (shard.py,
lloyd.py), and the checkpoint an interrupted fit resumes from. Knows nothing about Ray but
where it says so: `as_shards` looks for a running Ray (lazily) to shard a large array."""
from __future__ import annotations

import io
import sys

import numpy as np

from raypipe.run import paths as rio
from raypipe.segments.shard import shard_sample

# Below this much work per iteration (rows x clusters x dimensions), Ray's per-task cost
# outweighs a cluster's extra cores: the array stays in process.
RAY_MIN_WORK = 2 ** 30


def as_shards(x, k: int, weights: np.ndarray | None = None):
    """A shards object as is; an array as Ray shards (one per CPU of the running Ray) when
    Ray is running and the work is large, else as one in-process shard. Weighted arrays
    stay in process."""
    if hasattr(x, "scan") and hasattr(x, "sizes"):
        if weights is not None:
            raise ValueError("sample_weight is supported for arrays, not for a shards object")
        return x
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected an (n, d) array, got shape {x.shape}")
    cpus = _ray_cpus()
    if weights is None and cpus > 1 and x.shape[0] >= 2 * cpus and x.size * k >= RAY_MIN_WORK:
        from raypipe.jobs.kmeans_tasks import RayShards
        return RayShards.from_arrays(np.array_split(x, cpus))
    return LocalShards([x], None if weights is None else [weights])


def _ray_cpus() -> int:
    ray = sys.modules.get("ray")            # never imported here: only a running Ray counts
    if ray is None or not ray.is_initialized():
        return 0
    return int(ray.cluster_resources().get("CPU", 0))


class LocalShards:
    """Shards as in-memory arrays; `map(fn, *args)` calls fn(shard, *args) for each. With
    `weights` (one (n,) float64 array per shard), `scan` passes each shard's weights to
    the functions that take them (lloyd_step, shard_labels)."""

    concurrent = False        # fits share the process's cores: restarts run one at a time

    def __init__(self, shards: list[np.ndarray], weights: list[np.ndarray] | None = None):
        self.shards = [np.ascontiguousarray(s, np.float32) for s in shards]
        self.sizes = [len(s) for s in self.shards]
        self.dim = self.shards[0].shape[1]
        self.weights = None if weights is None else [np.asarray(w, np.float64) for w in weights]

    def map(self, fn, *args) -> list:
        return [fn(s, *args) for s in self.shards]

    def sample(self, fraction: float, seed: int) -> list[np.ndarray]:
        return self.map(shard_sample, fraction, seed)

    def scan(self, fn, states, *args) -> tuple[list, list]:
        """fn(shard, state, *args) -> (state, result) for each shard, keeping the states."""
        states = states or [None] * len(self.shards)
        weights = self.weights or [None] * len(self.shards)
        out = [fn(s, st, *args, **({"weights": w} if w is not None else {}))
               for s, st, w in zip(self.shards, states, weights)]
        return [o[0] for o in out], [o[1] for o in out]


class Checkpoint:
    """Centroids after every iteration, so an interrupted fit resumes where it stopped."""

    def __init__(self, uri: str | None):
        self.uri = uri

    def load(self, k: int, d: int):
        if not self.uri:
            return None
        fs, path = rio.resolve(self.uri)
        if fs.get_file_info(path).type.name == "NotFound":
            return None
        with fs.open_input_stream(path) as f:
            z = np.load(io.BytesIO(f.read()))
            state = {name: z[name] for name in z.files}
        if state["centroids"].shape != (k, d):
            raise ValueError(f"checkpoint {self.uri} holds centroids of shape "
                             f"{state['centroids'].shape}, expected {(k, d)}")
        return state

    def save(self, **state) -> None:
        if not self.uri:
            return
        buf = io.BytesIO()
        np.savez(buf, **state)
        fs, path = rio.resolve(self.uri)
        with fs.open_output_stream(path + ".tmp") as f:
            f.write(buf.getvalue())
        fs.move(path + ".tmp", path)           # a reader never sees half a checkpoint
