"""Item-to-item co-occurrence: how often item b comes within `window` events after item a in
the users' histories ("b follows a"). A user's co-occurrence score for an item sums the counts
from the user's `recent` latest items, halved per step back, scaled so that the user's best
item scores 1. `blend` mixes it with the vector and segment scores. Knows nothing about Ray.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from scipy import sparse

from raypipe.arrays import seeded_rank

PAIRS = pa.schema([("src", pa.int64()), ("dst", pa.int64()), ("count", pa.int64()),
                   ("held", pa.int64())])


def held_out(user_ids, share: float, seed: int) -> np.ndarray:
    """The users held out for validation: a seeded hash of the user id below `share`, so that
    every worker decides alone, whatever the order and partitioning of the users."""
    return held_rank(user_ids, seed) < share


def held_rank(user_ids, seed: int) -> np.ndarray:
    """Each user's seeded hash as a number uniform in [0, 1)."""
    return seeded_rank(user_ids, seed)


def follower_pairs(item_index: list[np.ndarray], n_items: int, window: int,
                   held: np.ndarray | None = None) -> pa.Table:
    """Per user catalogue rows, oldest first -> one row per distinct (src, dst) pair of the
    batch with its `count`; `held` counts the pairs whose dst is the last item of a held-out
    user (validation takes them out: that is the item it asks for)."""
    lengths = np.array([len(r) for r in item_index], np.int64)
    if lengths.sum() == 0:
        return PAIRS.empty_table()
    rows = np.concatenate(item_index).astype(np.int64)
    user = np.repeat(np.arange(len(item_index)), lengths)
    last = np.zeros(len(rows), bool)
    last[np.cumsum(lengths)[lengths > 0] - 1] = True
    held_last = last & (held[user] if held is not None else False)
    keys, marks = [], []
    for g in range(1, window + 1):
        same = user[:-g] == user[g:]
        keys.append(rows[:-g][same] * n_items + rows[g:][same])
        marks.append(held_last[g:][same])
    keys, marks = np.concatenate(keys), np.concatenate(marks)
    uniq, inverse = np.unique(keys, return_inverse=True)
    return pa.table({"src": uniq // n_items, "dst": uniq % n_items,
                     "count": np.bincount(inverse, minlength=len(uniq)).astype(np.int64),
                     "held": np.bincount(inverse, weights=marks, minlength=len(uniq))
                     .astype(np.int64)}, schema=PAIRS)


SMALL_PRODUCT = 20_000  # row_max: follower terms up to this are summed in numpy


class Followers:
    """Each item's `top` most frequent followers, as a sparse (n_items, n_items) matrix."""

    def __init__(self, src: np.ndarray, dst: np.ndarray, count: np.ndarray, n_items: int,
                 top: int):
        src, dst, count = (np.asarray(a, np.int64) for a in (src, dst, count))
        keep = count > 0
        src, dst, count = src[keep], dst[keep], count[keep]
        order = np.lexsort((dst, -count, src))
        src, dst, count = src[order], dst[order], count[order]
        first = np.searchsorted(src, src)               # each src's first row
        keep = np.arange(len(src)) - first < top
        self.n_items, self.top = n_items, top
        self.src, self.dst, self.count = src[keep], dst[keep], count[keep]
        self.matrix = sparse.csr_matrix((self.count.astype(np.float32), (self.src, self.dst)),
                                        shape=(n_items, n_items))

    @classmethod
    def from_pairs(cls, pairs: pa.Table, n_items: int, top: int,
                   validation: bool = False) -> "Followers":
        """Summed pair counts (src, dst, count, held) -> Followers; `validation` leaves out
        the pairs that end at a held-out user's last item."""
        count = pairs["count"].to_numpy()
        if validation:
            count = count - pairs["held"].to_numpy()
        return cls(pairs["src"].to_numpy(), pairs["dst"].to_numpy(), count, n_items, top)

    def to_table(self, item_ids: list[str]) -> pa.Table:
        """-> rows (item_id, follower_id, count): `item_followers.parquet`."""
        ids = pa.array(item_ids, pa.string())
        return pa.table({"item_id": ids.take(pa.array(self.src)),
                         "follower_id": ids.take(pa.array(self.dst)),
                         "count": pa.array(self.count, pa.int64())})

    @classmethod
    def from_table(cls, table: pa.Table, item_index, top: int) -> "Followers":
        """`item_followers` rows -> Followers. item_index: pandas.Index of the catalogue."""
        src = item_index.get_indexer(table["item_id"].to_numpy(zero_copy_only=False))
        dst = item_index.get_indexer(table["follower_id"].to_numpy(zero_copy_only=False))
        if (src < 0).any() or (dst < 0).any():
            raise ValueError("item_followers names items outside the catalogue")
        return cls(src, dst, table["count"].to_numpy(), len(item_index), top)

    def scores(self, item_index: list[np.ndarray], recent: int,
               scaled: bool = True) -> sparse.csr_matrix:
        """Per user catalogue rows, oldest first -> (n_users, n_items) sparse scores in
        [0, 1] (`scaled`; else the summed, halved counts). Rows past the catalogue (items
        new to the service) have no followers."""
        if not len(item_index):
            return sparse.csr_matrix((0, self.n_items), dtype=np.float32)
        users, cols, weights = latest(item_index, recent)
        known = cols < self.n_items
        start = sparse.csr_matrix((weights[known].astype(np.float32),
                                   (users[known], cols[known])),
                                  shape=(len(item_index), self.n_items))
        out = (start @ self.matrix).tocsr()
        out.sum_duplicates()
        sizes = np.diff(out.indptr)
        if out.nnz and scaled:         # each non-empty row's segments of data end where the next begins
            best = np.maximum.reduceat(out.data, out.indptr[:-1][sizes > 0])
            out.data = out.data / np.repeat(best, sizes[sizes > 0])
        return out

    def counts(self, items: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """(m,) rows, (m, k) rows -> (m, k) float64 how often each target followed its row
        (0 for -1 and rows past the catalogue, on either side)."""
        inside = (targets >= 0) & (targets < self.n_items) & (items < self.n_items)[:, None]
        got = np.zeros(targets.shape)
        m, j = np.nonzero(inside)
        if len(m):
            got[m, j] = np.asarray(self.matrix[items[m], targets[m, j]], np.float64).ravel()
        return got

    def row_max(self, users: np.ndarray, cols: np.ndarray, weights: np.ndarray,
                n: int) -> np.ndarray:
        """(user, row, weight) entries, sorted by user -> (n,) the largest unscaled score in
        each user's row (what `scores` divides by), 1 where the row is empty. Few entries
        (a service request) are summed in numpy, many in one sparse product; both add the
        same float32 terms in the same order, so they agree to the bit."""
        known = cols < self.n_items
        users, cols = users[known], cols[known]
        weights = np.asarray(weights, np.float32)[known]
        m = self.matrix
        sizes = m.indptr[cols + 1] - m.indptr[cols]
        if int(sizes.sum()) > SMALL_PRODUCT:
            indptr = np.r_[0, np.cumsum(np.bincount(users, minlength=n))]
            rows = sparse.csr_matrix((weights, cols, indptr), shape=(n, self.n_items)) @ m
            keys, sums = np.repeat(np.arange(n), np.diff(rows.indptr)), rows.data
        else:
            entry = np.repeat(np.arange(len(cols)), sizes)
            at = m.indptr[cols][entry] + np.arange(len(entry)) - \
                np.repeat(np.cumsum(sizes) - sizes, sizes)
            keys, inverse = np.unique(users[entry] * self.n_items + m.indices[at],
                                      return_inverse=True)
            sums = np.zeros(len(keys), np.float32)
            np.add.at(sums, inverse, weights[entry] * m.data[at])
            keys = keys // self.n_items
        best = np.ones(n)
        if len(keys):
            first = np.r_[0, np.flatnonzero(np.diff(keys)) + 1]
            best[keys[first]] = np.maximum.reduceat(sums, first)
        return best

    def scores_at(self, users: np.ndarray, cols: np.ndarray, weights: np.ndarray,
                  targets: np.ndarray) -> np.ndarray:
        """`scores` read at `targets` (n, k) rows only, from (user, row, weight) entries
        sorted by user -> (n, k) float64, without building the rows (only their maxima,
        to scale)."""
        n, k = targets.shape
        got = self.counts(cols, targets[users]) * np.asarray(weights, np.float64)[:, None]
        out = np.zeros((n, k))
        np.add.at(out, users, got)
        return out / self.row_max(users, cols, weights, n)[:, None]


def latest(item_index: list[np.ndarray], recent: int):
    """Per user catalogue rows, oldest first -> the `recent` latest events of each as
    (user, row, 0.5 ** steps back) entries, newest first: what co-occurrence scores."""
    n = len(item_index)
    lengths = np.array([len(r) for r in item_index], np.int64)
    take = np.minimum(lengths, recent)
    back = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)
    flat = np.concatenate(item_index).astype(np.int64, copy=False) if lengths.sum() else \
        np.zeros(0, np.int64)
    cols = flat[np.repeat(np.cumsum(lengths), take) - 1 - back]
    return np.repeat(np.arange(n), take), cols, 0.5 ** back
