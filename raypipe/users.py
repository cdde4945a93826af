"""User vectors from behaviour sequences. Knows nothing about Ray.

`pooled`: event-weighted, recency-decayed mean of the item vectors of a user's history; the
same weights give each history item its share in the user's interests (profiles.py).
"""
from __future__ import annotations

import numpy as np

from raypipe.config import UserConfig
from raypipe.vectors import normalize


def history_weights(event_types: list[list[str]], cfg: UserConfig) -> list[np.ndarray]:
    """Per user, weight of each history event: event weight x 0.5 ** (age in events / half life)."""
    out = []
    for types in event_types:
        n = len(types)
        age = np.arange(n - 1, -1, -1, dtype=np.float64)
        ev = np.array([cfg.event_weights.get(t, 1.0) for t in types], np.float64)
        out.append(ev * 0.5 ** (age / cfg.half_life))
    return out


def pool(item_index: list[np.ndarray], weights: list[np.ndarray],
         item_vectors: np.ndarray) -> np.ndarray:
    """Per user (item row indices, weights) -> (n_users, d) L2-normalised weighted means.
    Users with an empty history get a zero vector."""
    n, d = len(item_index), item_vectors.shape[1]
    out = np.zeros((n, d), np.float32)
    lengths = np.array([len(ix) for ix in item_index])
    nonempty = np.flatnonzero(lengths)
    if len(nonempty) == 0:
        return out
    idx = np.concatenate([item_index[u] for u in nonempty])
    w = np.concatenate([weights[u] for u in nonempty]).astype(np.float32)
    starts = np.r_[0, np.cumsum(lengths[nonempty])[:-1]]
    sums = np.add.reduceat(item_vectors[idx] * w[:, None], starts, axis=0)
    out[nonempty] = normalize(sums)
    return out


def history_rows(item_ids, index) -> list[np.ndarray]:
    """List column of item ids -> per user the items' rows in the catalogue.
    index: pandas.Index of catalogue item ids (every history item is in it after cleaning)."""
    import pyarrow as pa
    if isinstance(item_ids, pa.ChunkedArray):
        item_ids = item_ids.combine_chunks()
    offsets = item_ids.offsets.to_numpy()
    flat = index.get_indexer(item_ids.flatten().to_numpy(zero_copy_only=False))
    if (flat < 0).any():
        raise ValueError(f"{int((flat < 0).sum())} history items are not in the catalogue")
    return np.split(flat, offsets[1:-1] - offsets[0]) if len(item_ids) else []
