"""Ranking primitives over (users, candidates) matrices: the first k valid candidates, the
users' excluded rows, per-group caps and sorted-key lookups. Knows nothing about Ray."""
from __future__ import annotations

import numpy as np


def over_cap(rows: np.ndarray, groups: np.ndarray, cap: int, valid: np.ndarray) -> np.ndarray:
    """(n, m) candidates best first -> True where a valid candidate would be its group's
    cap+1-th or later in its row."""
    n, m = rows.shape
    g = np.where(valid, groups[np.maximum(rows, 0)], -1)
    order = np.argsort(g, axis=1, kind="stable")       # group-major, rank order within
    sorted_g = np.take_along_axis(g, order, axis=1)
    idx = np.broadcast_to(np.arange(m), (n, m))
    start = np.ones((n, m), bool)
    start[:, 1:] = sorted_g[:, 1:] != sorted_g[:, :-1]
    first = np.maximum.accumulate(np.where(start, idx, 0), axis=1)
    occurrence = np.empty((n, m), np.int64)
    np.put_along_axis(occurrence, order, idx - first, axis=1)
    return valid & (occurrence >= cap)


class Ranked:
    """One strategy's answer for a batch of users: `rows` and `scores` (n_users, k), best
    first, padded with -1 rows where fewer than k items qualify. `ranked[u]` is user u's
    (rows, scores) without the padding."""

    def __init__(self, rows: np.ndarray, scores: np.ndarray):
        self.rows, self.scores = rows, scores

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        keep = self.rows[u] >= 0
        return self.rows[u][keep], self.scores[u][keep]

    def prefix(self, k: int) -> "Ranked":
        return Ranked(self.rows[:, :k], self.scores[:, :k])


def first_k(rows: np.ndarray, scores: np.ndarray, excluded: np.ndarray, k: int) -> Ranked:
    """(n, m) candidates best first -> the first k per row that are real (>= 0) and not
    excluded, packed to the left."""
    keep = (rows >= 0) & ~excluded
    pos = np.cumsum(keep, axis=1) - 1
    u, c = np.nonzero(keep & (pos < k))
    out_rows = np.full((len(rows), k), -1, np.int64)
    out_scores = np.zeros((len(rows), k), np.float32)
    out_rows[u, pos[u, c]] = rows[u, c]
    out_scores[u, pos[u, c]] = scores[u, c]
    return Ranked(out_rows, out_scores)


class ExcludedRows:
    """Per user a set of catalogue rows, as one sorted array of keys user * n_items + row, so
    that a whole (users, candidates) matrix is checked at once."""

    def __init__(self, exclude: list[set], n_items: int):
        lengths = np.array([len(e) for e in exclude], np.int64)
        users = np.repeat(np.arange(len(exclude), dtype=np.int64), lengths)
        rows = np.fromiter((r for e in exclude for r in e), np.int64, int(lengths.sum()))
        self.keys, self.n_items = np.sort(users * n_items + rows), n_items
        self.n_users = len(exclude)
        self.most = int(lengths.max(initial=0))

    def mask(self, rows: np.ndarray) -> np.ndarray:
        keys = np.arange(len(rows), dtype=np.int64)[:, None] * self.n_items + rows
        return np.isin(keys, self.keys) & (rows >= 0)


def lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Sorted int keys and their values -> the value of each wanted key, 0 where absent."""
    if not len(keys):
        return np.zeros(wanted.shape, np.float32)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, values[at], 0.0).astype(np.float32)
