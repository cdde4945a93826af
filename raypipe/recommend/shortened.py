"""Pooled scores of shortened histories: for a block of users, what each recommended item
would score if one of the user's distinct history items (every event of it) left the
history, as the service would score the shortened history, without re-encoding anyone.
Knows nothing about Ray; occlusion.py turns these into citations.

A pooled vector is S = sum_j w_j v_j with w_j = event weight x 0.5 ** (age_j / H), the age
counted in events back from the latest. Without item i, an event j loses the c_j
occurrences of i after it from its age, so its weight becomes w_j 2 ** (c_j / H).

Two ways to the same numbers, chosen by history length so that a user always takes the
same one (the batch and the service must cite alike):
- `gram` (histories up to GRAM_MAX events, the default sequences.max_length is 50): the
  shortened histories' weights W' (distinct items x events) against the Gram matrix
  G = V V^T and the events' scores T = V E^T, all BLAS: score' = W'T / sqrt(W' G W'^T).
- `prefix` (longer ones): linear in the events; between two occurrences of i the factor is
  constant, so with prefix sums P of w_j v_j, S_without_i = sum_t 2 ** ((m - t) / H)
  (P[p_(t+1)] - P[p_t + 1]) over the m + 1 stretches around i's positions.
Float64 throughout: a drop is a difference of two near scores, and blocks differ between
the batch and the service, so their rounding must stay far below the drops.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy import sparse

GRAM_MAX = 64     # events: up to this the quadratic BLAS path, above it the linear one


@dataclasses.dataclass
class Shortened:
    """One block of users (b) with k recommended items each. cited: (b, L) each user's
    distinct history rows, ascending (-1 padding); drops: (b, L, k) the query score's
    drop without each (-inf at padding); nearest: (b, L) the leaf nearest the taste without
    each (-1 where that taste is empty), or None; closeness: (b, L) each cited item's
    vector's dot product with its user's own centre, or None."""
    cited: np.ndarray
    drops: np.ndarray
    nearest: np.ndarray | None = None
    closeness: np.ndarray | None = None


class Histories:
    """The users' histories (catalogue rows, oldest first) and per-event weightings
    [(per-user weights, half-life or None for no re-ageing)], the query's first, then the
    taste's if wanted; flattened once for many blocks."""

    def __init__(self, history: list[np.ndarray], weightings: list):
        self.history, self.weightings = history, weightings
        self.lengths = np.array([len(h) for h in history], np.int64)
        self.starts = np.cumsum(self.lengths) - self.lengths
        flat = lambda parts, dtype: np.concatenate(   # noqa: E731
            [np.asarray(p, dtype) for p in parts]) if self.lengths.sum() else np.zeros(0, dtype)
        self.rows = flat(history, np.int64)
        self.weights = [flat(w, np.float64) for w, _ in weightings]

    def padded(self, users: np.ndarray):
        """-> (b, L) rows (-1 padding), [(b, L) weights (0 padding)], (b, L) event mask."""
        lengths = self.lengths[users]
        width = max(int(lengths.max(initial=0)), 1)
        real = np.arange(width) < lengths[:, None]
        at = np.where(real, self.starts[users][:, None] + np.arange(width), 0)
        rows = np.where(real, self.rows[at] if len(self.rows) else -1, -1)
        return rows, [np.where(real, w[at], 0.0) if len(w) else np.zeros(real.shape)
                      for w in self.weights], real


def shortened(hist: Histories, users: np.ndarray, space: np.ndarray,
              item_vectors: np.ndarray, targets: np.ndarray, leaves: np.ndarray | None = None,
              own: np.ndarray | None = None) -> Shortened:
    """For `users` (indices into `hist`), targets (b, k) their recommended rows (-1
    padding), leaves (c, d) the segmentation's (with a taste weighting), own (b, d) the
    users' segment centres, if wanted -> Shortened."""
    longest = int(hist.lengths[users].max(initial=0))
    way = _gram if longest <= GRAM_MAX else _prefix
    out = way(hist, users, space, item_vectors[np.maximum(targets, 0)].astype(np.float64),
              None if leaves is None else np.asarray(leaves, np.float64),
              None if own is None else np.asarray(own, np.float64))
    out.drops[out.cited < 0] = -np.inf
    return out


def _nearest(dots: np.ndarray, squared: np.ndarray, leaves: np.ndarray) -> np.ndarray:
    """Sums' dot products with the leaves (..., c), their squared norms (...) -> the leaf
    nearest each normalised sum, -1 for an empty sum."""
    norm = np.sqrt(np.maximum(squared, 0.0))
    gain = 2.0 * dots / np.maximum(norm, 1e-300)[..., None] - (leaves * leaves).sum(1)
    return np.where(norm > 1e-9, np.argmax(gain, axis=-1), -1)


def _distinct(rows: np.ndarray, real: np.ndarray) -> np.ndarray:
    """(b, L) rows -> (b, L') each user's distinct rows ascending, -1 padding."""
    big = np.iinfo(np.int64).max
    ordered = np.sort(np.where(real, rows, big), axis=1)
    new = (ordered < big) & np.c_[np.ones(len(rows), bool), ordered[:, 1:] != ordered[:, :-1]]
    width = max(int(new.sum(1).max(initial=0)), 1)
    cited = np.full((len(rows), width), -1, np.int64)
    user, _ = np.nonzero(new)
    cited[user, (np.cumsum(new, 1) - 1)[new]] = ordered[new]
    return cited


def _gram(hist: Histories, users, space, targets, leaves, own) -> Shortened:
    rows, weights, real = hist.padded(users)
    cited = _distinct(rows, real)
    same = (rows[:, None, :] == cited[:, :, None]) & (cited >= 0)[:, :, None]   # (b, L', L)
    after = np.cumsum(same[:, :, ::-1], axis=2)[:, :, ::-1] - same    # i's events newer
    vectors = space[np.maximum(rows, 0)].astype(np.float64)
    gram = np.matmul(vectors, vectors.transpose(0, 2, 1))
    without = []
    for w, (_, half_life) in zip(weights, hist.weightings):
        gain = np.ones(rows.shape[1] + 1) if half_life is None else \
            2.0 ** (np.arange(rows.shape[1] + 1) / half_life)
        without.append(np.where(same, 0.0, w[:, None, :] * gain[after]))
    squared = [np.einsum("bpl,bpl->bp", np.matmul(w_, gram), w_) for w_ in without]
    w = weights[0]
    scores = np.matmul(vectors, targets.transpose(0, 2, 1))           # (b, L, k)
    full = _unit(np.einsum("bl,blk->bk", w, scores)[:, None],
                 np.einsum("bl,blm,bm->b", w, gram, w)[:, None])
    out = Shortened(cited, full - _unit(np.matmul(without[0], scores), squared[0]))
    if leaves is not None:
        out.nearest = _nearest(np.matmul(without[1], vectors @ leaves.T), squared[1], leaves)
    if own is not None:
        mine = np.einsum("bld,bd->bl", vectors, own)
        out.closeness = np.where(same, mine[:, None, :], -np.inf).max(2, initial=-np.inf)
    return out


def _unit(dots: np.ndarray, squared: np.ndarray) -> np.ndarray:
    """Dot products of pooled sums with items, the sums' squared norms -> the scores of the
    normalised sums (0 where a sum is empty, as the pooled query of an empty history)."""
    norm = np.sqrt(np.maximum(squared, 0.0))[..., None]
    return np.where(norm > 1e-9, dots / np.maximum(norm, 1e-300), 0.0)


def _prefix(hist: Histories, users, space, targets, leaves, own) -> Shortened:
    pu, items, sums, totals = without_sums(hist.history, hist.weightings, users, space)
    pos = np.arange(len(pu)) - np.searchsorted(pu, pu)
    width = int(pos.max()) + 1 if len(pu) else 1
    without = np.zeros((len(users), width, space.shape[1]))
    without[pu, pos] = sums[0]
    cited = np.full((len(users), width), -1, np.int64)
    cited[pu, pos] = items
    full, short = (_unit(np.matmul(x, targets.transpose(0, 2, 1)), np.einsum("bld,bld->bl", x, x))
                   for x in (totals[0][:, None], without))
    out = Shortened(cited, full - short)
    if leaves is not None:
        out.nearest = np.full(cited.shape, -1, np.int64)
        taste = sums[1]
        out.nearest[pu, pos] = _nearest(taste @ leaves.T, np.einsum("pd,pd->p", taste, taste),
                                        leaves)
    if own is not None:
        out.closeness = np.full(cited.shape, -np.inf)
        out.closeness[pu, pos] = np.einsum("pd,pd->p", space[items].astype(np.float64), own[pu])
    return out


def without_sums(history: list[np.ndarray], weightings: list, users: np.ndarray,
                 space: np.ndarray):
    """For `users`, every distinct (user, history row) pair, user-major, rows ascending,
    and for each (per-user weights, half-life) of `weightings`: the pooled sum without that
    row. -> (user index into `users` (P,), row (P,), [sums (P, d)], [the whole histories'
    sums (len(users), d)]), float64. A half-life of None: no re-ageing."""
    b, d = len(users), space.shape[1]
    lengths = np.array([len(history[u]) for u in users], np.int64)
    n = int(lengths.sum())
    if not n:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64),
                [np.zeros((0, d))] * len(weightings), [np.zeros((b, d))] * len(weightings))
    local = np.repeat(np.arange(b), lengths)
    rows = np.concatenate([np.asarray(history[u], np.int64) for u in users])
    ends = np.cumsum(lengths)
    starts = ends - lengths
    key = local * len(space) + rows
    at = np.lexsort((np.arange(n), key))          # events by (user, row), then position
    first = np.flatnonzero(np.r_[True, key[at][1:] != key[at][:-1]])
    m = np.diff(np.r_[first, n])                  # each pair's number of events
    pair_user = local[at[first]]
    # the m + 1 stretches around each pair's events, t = 0 .. m
    pair = np.repeat(np.arange(len(first)), m + 1)
    t = np.arange(len(pair)) - np.repeat(np.cumsum(m + 1) - (m + 1), m + 1)
    event = first[pair] + t                       # the pair's (t + 1)-th event, in `at`
    lo = np.where(t == 0, starts[pair_user][pair], at[np.maximum(event - 1, 0)] + 1)
    hi = np.where(t == m[pair], ends[pair_user][pair], at[np.minimum(event, n - 1)])
    hi = np.maximum(hi, lo)
    # each pair's sum is a signed, re-aged combination of the prefix sums' rows
    vectors = space[rows].astype(np.float64)
    sums, totals = [], []
    for weights, half_life in weightings:
        w = np.concatenate([np.asarray(weights[u], np.float64) for u in users])
        prefix = np.zeros((n + 1, d))
        np.cumsum(vectors * w[:, None], axis=0, out=prefix[1:])
        gain = np.ones(len(pair)) if half_life is None else 2.0 ** ((m[pair] - t) / half_life)
        combine = sparse.csr_matrix((np.r_[gain, -gain], (np.r_[pair, pair], np.r_[hi, lo])),
                                    shape=(len(first), n + 1))
        sums.append(np.asarray(combine @ prefix))
        totals.append(prefix[ends] - prefix[starts])
    return pair_user, key[at[first]] % len(space), sums, totals
