"""User vectors from behaviour sequences. Knows nothing about Ray.

`pooled`: event-weighted, recency-decayed mean of the item vectors of a user's history; the
same weights give each history item its share in the user's interests (profiles.py).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.config import UserConfig
from raypipe.arrays import normalize


def event_types_array(event_types) -> pa.ListArray:
    """A list<string> column (Arrow, possibly chunked or sliced) or lists of strings -> one
    Arrow list array."""
    if isinstance(event_types, pa.ChunkedArray):
        return event_types.combine_chunks()
    if isinstance(event_types, pa.Array):
        return event_types
    return pa.array(event_types, pa.list_(pa.string()))


def history_weights(event_types, cfg: UserConfig) -> list[np.ndarray]:
    """Per user, weight of each history event: event weight x 0.5 ** (age in events / half life).
    event_types: a list<string> column or lists of strings."""
    lists = event_types_array(event_types)
    lengths = np.diff(lists.offsets.to_numpy())
    names = list(cfg.event_weights)
    code = pc.index_in(lists.flatten(), value_set=pa.array(names, pa.string()))
    code = code.fill_null(len(names)).to_numpy()
    ev = np.array([float(cfg.event_weights[n]) for n in names] + [1.0], np.float64)[code]
    ends = np.cumsum(lengths)
    age = (np.repeat(ends, lengths) - 1 - np.arange(int(ends[-1]) if len(ends) else 0))
    w = ev * 0.5 ** (age.astype(np.float64) / cfg.half_life)
    return np.split(w, ends[:-1]) if len(lengths) else []


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
    if isinstance(item_ids, pa.ChunkedArray):
        item_ids = item_ids.combine_chunks()
    offsets = item_ids.offsets.to_numpy()
    flat = index.get_indexer(item_ids.flatten().to_numpy(zero_copy_only=False))
    if (flat < 0).any():
        raise ValueError(f"{int((flat < 0).sum())} history items are not in the catalogue")
    return np.split(flat, offsets[1:-1] - offsets[0]) if len(item_ids) else []
