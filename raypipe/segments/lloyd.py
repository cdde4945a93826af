"""One Lloyd step on one shard: exact labels, computed only where they can have changed.

Knows nothing about Ray. Yinyang K-means' bounds (Ding et al., ICML 2015), laid out for a
BLAS: the centroids are split into groups of about GROUP_SIZE (a small K-means over the
first step's centroids, kept for the fit). Each row keeps an upper bound on its distance to
its own centroid and, per group, a lower bound on its distance to that group's nearest
centroid other than its own. Each step moves the bounds by the centroids' shifts (a group's
bound by its largest shift), then:
1. a row whose upper bound is below every group's lower bound (or below half the gap from
   its centroid to the nearest other, Hamerly's test) keeps its label with no distance
   computed;
2. the others get their exact distance to their own centroid, and the test again;
3. rows still in doubt are measured only against the groups whose bound they cannot clear:
   for each such group, the rows that need it are gathered and multiplied by the group's
   centroids in one (rows x group) product, which runs near the BLAS's full rate from about
   16 centroids up, and a compiled pass folds the group into each row's nearest and bounds.
Data with structure clears most groups (overlapping Gaussians asked for 4x their number of
segments: about 5% of Lloyd's distances; real user vectors 20-45%; uniform noise 40-50%).
Sums are patched with the rows that moved, or recounted when many did. With a GPU, rows in
doubt are measured against every centroid (one group).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from raypipe.segments import kernels
from raypipe.segments.nearest import (BLOCK, Centroids, assign, half_distances, nearest2,
                                      parallel_blocks, parallel_map, row_norms, threads,
                                      use_gpu)

# Centroids per group: (rows x 16) products already run at about 80% of the rate of wide
# ones; larger groups clear fewer rows.
GROUP_SIZE = 16
# At most this many groups, and at most half a row's width (the bounds then take at most
# half the memory of the rows).
MAX_GROUPS = 64
# Rows in doubt that need more than whole_share(d) of all centroids are measured against
# all of them in one product, without per-group gathers and calls. Per distance, a whole
# product costs about 2d / 90 + 1 ns here (BLAS at 90 GFLOP/s, the compiled pass), the
# group path about 2d / 75 + 4 (narrower products, gathers, calls): 0.43 of the centroids
# at d = 64, 0.67 at d = 384. None: that rule; a number: that share whatever d.
WHOLE_SHARE: float | None = None


def whole_share(d: int) -> float:
    return WHOLE_SHARE if WHOLE_SHARE is not None else (d + 45) / (1.2 * d + 180)

# Rows in doubt per job, at most (fewer where that leaves under 8 jobs per thread, down to
# BLOCK): each job measures its rows against the groups they need.
DOUBT_BLOCK = 4 * BLOCK
# More than this share of rows moved: the sums are recounted instead of patched.
MOVED_SHARE = 0.25
# Above this many centroids the (k x k) gaps between them are not computed.
MAX_CANDIDATE_K = 4096


class Bounds(NamedTuple):
    """What a shard keeps between steps: its labels, the distance to the own centroid from
    above (upper, (n,)), to each group's nearest other centroid from below (lower, (n, t)),
    the sums and counts those labels give, the centroids they were measured against, each
    row's |x|^2 and each centroid's group (k,)."""
    labels: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    centroids: np.ndarray
    x_sq: np.ndarray
    group: np.ndarray


def lloyd_step(x: np.ndarray, state: Bounds | None, centroids: np.ndarray,
               weights: np.ndarray | None = None):
    """-> (state, (sums (k, d) float64, counts (k,))); with `weights` (n,), the sums and
    counts are weighted."""
    if state is None:
        return _first_step(x, centroids, weights)
    k, old = len(centroids), state.labels
    upper, lower, doubt, half_gap = _drift(state, centroids)
    labels = old.copy()
    if use_gpu():
        labels[doubt], near, far = nearest2(x[doubt], centroids)
        upper[doubt], lower[doubt, 0] = _sqrt(near), _sqrt(far)
    else:
        groups = Groups(centroids, state.group)
        size = min(DOUBT_BLOCK, max(BLOCK, -(-len(doubt) // (8 * threads()))))
        parallel_map(lambda rows: _recheck(x, state.x_sq, groups, half_gap, rows, labels,
                                           upper, lower),
                     [doubt[i:i + size] for i in range(0, len(doubt), size)])
    moved = np.flatnonzero(labels != old)
    sums, counts = state.sums, state.counts
    if len(moved) > MOVED_SHARE * len(x):
        sums, counts = sums_of(x, labels, k, weights)
    elif len(moved):
        w = None if weights is None else weights[moved]
        sums = sums + _moved_sums(x[moved], old[moved], labels[moved], k, w)
        counts = counts + np.bincount(labels[moved], w, minlength=k) - \
            np.bincount(old[moved], w, minlength=k)
    return Bounds(labels, upper, lower, sums, counts, centroids, state.x_sq, state.group), \
        (sums, counts)


class Groups:
    """The centroids by group: for group g, its labels `ids[g]`, |c|^2 `sq[g]` and c^T as a
    contiguous (d, m) matrix `c_t[g]`; `c` all centroids, `of` each centroid's group."""

    def __init__(self, centroids: np.ndarray, group: np.ndarray):
        self.c = np.ascontiguousarray(centroids, np.float32)
        self.of = group
        self.ids = [np.flatnonzero(group == g) for g in range(int(group.max()) + 1)]
        self.sq = [row_norms(self.c[i]) for i in self.ids]
        self.c_t = [np.ascontiguousarray(self.c[i].T) for i in self.ids]
        self.size = np.array([len(i) for i in self.ids])
        self.order = np.concatenate(self.ids)
        self.starts = np.r_[0, np.cumsum(self.size)]
        self.ordered = Centroids(self.c[self.order])   # for whole products (first_bounds)

    def measure_all(self, xb: np.ndarray, labels, upper, lower) -> None:
        """Rows against every centroid: labels, upper and lower bounds from scratch."""
        kernels.first_bounds(half_distances(xb, self.ordered), row_norms(xb), self.order,
                             self.starts, labels, upper, lower)


def n_groups(k: int, d: int) -> int:
    if use_gpu():
        return 1
    return int(max(1, min(round(k / GROUP_SIZE), MAX_GROUPS, d // 2)))


def group_centroids(centroids: np.ndarray, t: int, iters: int = 5) -> np.ndarray:
    """(k,) group of each centroid: `iters` Lloyd steps over the centroids from t evenly
    spaced ones (as Yinyang K-means does), empty groups dropped. Only speed depends on it."""
    k = len(centroids)
    if t <= 1 or k <= t:
        return np.zeros(k, np.int64) if t <= 1 else np.arange(k)
    c = centroids.astype(np.float64)
    means = c[np.linspace(0, k - 1, t).astype(int)]
    for _ in range(iters):
        d = (c * c).sum(1)[:, None] + (means * means).sum(1) - 2 * c @ means.T
        group = d.argmin(1)
        counts = np.bincount(group, minlength=t)
        sums = np.zeros_like(means)
        np.add.at(sums, group, c)
        means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], means)
    return np.unique(group, return_inverse=True)[1].astype(np.int64)


def _first_step(x: np.ndarray, centroids: np.ndarray, weights=None):
    k = len(centroids)
    group = group_centroids(centroids, n_groups(k, x.shape[1]))
    t = int(group.max()) + 1
    x_sq = np.empty(len(x), np.float32)
    labels = np.empty(len(x), np.int64)
    upper = np.empty(len(x), np.float32)
    lower = np.empty((len(x), t), np.float32)
    parallel_blocks(lambda rows: x_sq.__setitem__(rows, row_norms(x[rows])), len(x))
    if use_gpu():
        labels[:], near, far = nearest2(x, centroids)
        upper[:], lower[:, 0] = _sqrt(near), _sqrt(far)
    else:
        groups = Groups(centroids, group)
        parallel_blocks(lambda rows: groups.measure_all(
            np.ascontiguousarray(x[rows], np.float32), labels[rows], upper[rows],
            lower[rows]), len(x))
    sums, counts = sums_of(x, labels, k, weights)
    return Bounds(labels, upper, lower, sums, counts, centroids, x_sq, group), (sums, counts)


def _drift(state: Bounds, centroids: np.ndarray):
    """Bounds moved by the centroids' shifts -> (upper, lower, rows in doubt, half gaps)."""
    shift = np.sqrt(((centroids - state.centroids) ** 2).sum(1)).astype(np.float32)
    t = state.lower.shape[1]
    group_shift = np.zeros(t, np.float32)
    np.maximum.at(group_shift, state.group, shift)
    half_gap = _half_gap(centroids)
    n = len(state.labels)
    upper, lower = np.empty(n, np.float32), np.empty((n, t), np.float32)
    doubt = np.empty(n, np.bool_)

    def one(rows: slice):
        kernels.drift(state.labels[rows], state.upper[rows], state.lower[rows], shift,
                      group_shift, half_gap, upper[rows], lower[rows], doubt[rows])

    parallel_blocks(one, n, 16 * BLOCK)
    return upper, lower, np.flatnonzero(doubt), half_gap


def _half_gap(centroids: np.ndarray) -> np.ndarray:
    """Half the distance from each centroid to its nearest other (inf for k = 1)."""
    k = len(centroids)
    if k < 2:
        return np.full(k, np.inf, np.float32)
    if k > MAX_CANDIDATE_K:
        return 0.5 * _sqrt(assign(centroids, centroids, 2)[0][:, 1])
    c = centroids.astype(np.float64)
    sq = (c * c).sum(1)
    gaps = np.maximum(sq[:, None] + sq[None] - 2 * c @ c.T, 0)
    np.fill_diagonal(gaps, np.inf)
    return (0.5 * np.sqrt(gaps.min(1))).astype(np.float32)


def _recheck(x, x_sq, groups: Groups, half_gap, rows, labels, upper, lower) -> None:
    """Exact labels and bounds, written in place, for rows the moved bounds cannot vouch
    for: their own distance first, then only the groups they cannot clear."""
    u = np.empty(len(rows), np.float32)
    kernels.own_distance(x, rows, groups.c, labels, u)
    upper[rows] = u
    doubt, ptr, members = kernels.needs(rows, u, labels, lower, half_gap)
    if not len(doubt):
        return
    rows, u = rows[doubt], u[doubt]
    if (np.diff(ptr) * groups.size).sum() > whole_share(x.shape[1]) * len(rows) * len(groups.c):
        lab, up, low = (np.empty(len(rows), np.int64), np.empty(len(rows), np.float32),
                        np.empty((len(rows), len(groups.size)), np.float32))
        groups.measure_all(np.take(x, rows, axis=0), lab, up, low)
        labels[rows], upper[rows], lower[rows] = lab, up, low
        return
    low = lower[rows]
    best, best_label = u * u, labels[rows]
    best_group = groups.of[best_label]
    for g in np.flatnonzero(ptr[1:] > ptr[:-1]):
        sel = members[ptr[g]:ptr[g + 1]]
        at = rows[sel]
        dots = np.matmul(np.take(x, at, axis=0), groups.c_t[g])
        kernels.group_pass(dots, groups.sq[g], x_sq[at], groups.ids[g], g, sel, best,
                           best_label, best_group, low)
    labels[rows], upper[rows], lower[rows] = best_label, np.sqrt(best), low


def sums_of(x: np.ndarray, labels: np.ndarray, k: int, weights: np.ndarray | None = None):
    """Per-centroid float64 sums of the rows and their counts (weighted with `weights`)
    -> ((k, d), (k,))."""
    def block(rows: slice) -> np.ndarray:
        return _block_sums(x[rows], labels[rows], k, None if weights is None else weights[rows])

    parts = parallel_blocks(block, len(x), size=4 * BLOCK)
    sums = np.sum(parts, axis=0) if parts else np.zeros((k, x.shape[1]))
    return sums, np.bincount(labels, weights, minlength=k)


def _block_sums(rows: np.ndarray, labels: np.ndarray, k: int, w=None) -> np.ndarray:
    """sums[labels[i]] += rows[i] in float64: a (k x b) one-hot sparse matrix times the
    rows, one pass over them (several times faster than sorting by label, a hundred times
    than np.add.at). float64, so totals do not depend on how rows are split into shards."""
    import scipy.sparse as sp
    onehot = sp.csc_matrix((np.ones(len(labels)) if w is None else w, labels,
                            np.arange(len(labels) + 1)),
                           shape=(k, len(labels)))
    return np.asarray(onehot @ np.asarray(rows, np.float64))


def _moved_sums(rows: np.ndarray, old: np.ndarray, new: np.ndarray, k: int,
                w=None) -> np.ndarray:
    """What moving these rows from `old` to `new` does to the sums: one pass, each row a
    column with -w at its old centroid and +w at its new one (w = 1 unweighted)."""
    import scipy.sparse as sp
    n = len(rows)
    signs = np.tile([-1.0, 1.0], n) if w is None else np.stack([-w, w], 1).ravel()
    onehot = sp.csc_matrix((signs, np.stack([old, new], 1).ravel(),
                            np.arange(0, 2 * n + 1, 2)), shape=(k, n))
    return np.asarray(onehot @ np.asarray(rows, np.float64))


def _sqrt(a: np.ndarray) -> np.ndarray:
    return np.sqrt(a, dtype=np.float32)
