"""Helpers between numpy matrices and Arrow vector columns (fixed-size lists of float32),
and the seeded hash that picks validation users and cold items."""
from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa


def to_arrow(x: np.ndarray) -> pa.FixedSizeListArray:
    """(n, d) float32 -> fixed_size_list<float32>[d] column."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def to_numpy(col) -> np.ndarray:
    """fixed_size_list (or list) column, chunked or not -> (n, d) float32."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if isinstance(col, np.ndarray):     # Ray's tensor columns arrive as numpy already
        return np.ascontiguousarray(col, dtype=np.float32)
    n = len(col)
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(flat.reshape(n, -1) if n else flat.reshape(0, 0), np.float32)


def normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def seeded_rank(keys, salt) -> np.ndarray:
    """Each key's hash with `salt` as a number uniform in [0, 1): the same whatever the
    order or partitioning of the keys, so every worker decides alone."""
    return np.array([int.from_bytes(hashlib.blake2b(f"{salt}:{k}".encode(), digest_size=8)
                                    .digest(), "little") / 2.0 ** 64 for k in keys],
                    np.float64)
