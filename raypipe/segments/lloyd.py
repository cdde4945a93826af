"""One Lloyd step on one shard: exact labels, computed only where they can have changed.

Knows nothing about Ray. Three filters, cheapest first, each exact:
1. Hamerly's bounds (Hamerly 2010): a row whose distance to its own centroid (from above)
   is below half the gap to the nearest other centroid, or below its distance to any other
   (from below), keeps its label without any distance computed.
2. Candidate centroids: a row at distance u from its centroid j can only move to a centroid
   l with |c_j - c_l| < 2u (triangle inequality). Rows in doubt are grouped by centroid;
   each group is measured against its candidates only, one matrix product per group.
   Clustered data asked for more segments than it has (sub-clusters of the same blob) has
   a handful of candidates per centroid; overlapping or structureless data in many
   dimensions has nearly all of them.
3. Groups with most centroids as candidates are measured against all of them, in whole
   contiguous blocks where most of a block is in doubt (one product, no gather), else in
   gathered blocks. That is plain blocked Lloyd, at the rate of `nearest.block_nearest`.
Sums are patched with the rows that moved, or recounted when many did.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from raypipe.segments.nearest import (BLOCK, Centroids, assign, block_nearest, block_rows, blocks,
                                      nearest2,
                                      parallel_blocks, parallel_map, row_norms, use_gpu)

# A group with more than this share of all centroids as candidates is measured against all.
FULL_SHARE = 0.5
# A block where more than this share of rows is measured against all centroids is
# recomputed whole (one product over contiguous rows) rather than gathered.
DENSE_SHARE = 0.8
# More than this share of rows moved: the sums are recounted instead of patched.
MOVED_SHARE = 0.25
# Above this many centroids the (k x k) gaps between them are not kept: no candidate sets.
MAX_CANDIDATE_K = 4096


class Bounds(NamedTuple):
    """What a shard keeps between steps: its labels, Hamerly's bounds (distance to the own
    centroid from above, to any other from below), the sums and counts those labels give,
    the centroids they were measured against, and each row's |x|^2."""
    labels: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    sums: np.ndarray
    counts: np.ndarray
    centroids: np.ndarray
    x_sq: np.ndarray


def lloyd_step(x: np.ndarray, state: Bounds | None, centroids: np.ndarray,
               weights: np.ndarray | None = None):
    """-> (state, (sums (k, d) float64, counts (k,))); with `weights` (n,), the sums and
    counts are weighted."""
    if state is None:
        return _first_step(x, centroids, weights)
    k, old = len(centroids), state.labels
    gaps = _gaps(centroids)
    upper, lower, bound = _bounds(state, centroids, gaps)
    labels = old.copy()
    if use_gpu():
        check = np.flatnonzero(upper > bound)
        labels[check], near, far = nearest2(x[check], centroids)
        upper[check], lower[check] = _sqrt(near), _sqrt(far)
    else:
        _recheck(x, state.x_sq, Centroids(centroids), gaps, labels, upper, lower, bound)
    moved = np.flatnonzero(labels != old)
    sums, counts = state.sums, state.counts
    if len(moved) > MOVED_SHARE * len(x):
        sums, counts = sums_of(x, labels, k, weights)
    elif len(moved):
        w = None if weights is None else weights[moved]
        sums = sums + _moved_sums(x[moved], old[moved], labels[moved], k, w)
        counts = counts + np.bincount(labels[moved], w, minlength=k) - \
            np.bincount(old[moved], w, minlength=k)
    return Bounds(labels, upper, lower, sums, counts, centroids, state.x_sq), (sums, counts)


def _first_step(x: np.ndarray, centroids: np.ndarray, weights=None):
    labels, near, far = nearest2(x, centroids)
    sums, counts = sums_of(x, labels, len(centroids), weights)
    x_sq = np.empty(len(x), np.float32)
    parallel_blocks(lambda rows: x_sq.__setitem__(rows, row_norms(x[rows])), len(x))
    return Bounds(labels, _sqrt(near), _sqrt(far), sums, counts, centroids, x_sq), \
        (sums, counts)


def _gaps(centroids: np.ndarray) -> np.ndarray | None:
    """(k, k) distances between centroids, inf on the diagonal; None above MAX_CANDIDATE_K."""
    k = len(centroids)
    if k < 2 or k > MAX_CANDIDATE_K:
        return None
    c = centroids.astype(np.float64)
    sq = (c * c).sum(1)
    gaps = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * c @ c.T, 0)).astype(np.float32)
    np.fill_diagonal(gaps, np.inf)
    return gaps


def _bounds(state: Bounds, centroids: np.ndarray, gaps):
    """Hamerly's bounds moved by the centroids' shifts -> (upper, lower, bound): a row with
    upper <= bound provably keeps its centroid."""
    shift = np.sqrt(((centroids - state.centroids) ** 2).sum(1)).astype(np.float32)
    top = np.argsort(shift)[::-1][:2]
    upper = state.upper + shift[state.labels]
    # The lower bound drops by the largest shift among the other centroids.
    lower = state.lower - np.where(state.labels == top[0], shift[top[-1]], shift[top[0]])
    if len(centroids) < 2:
        return upper, lower, np.full(len(upper), np.inf, np.float32)
    if gaps is None:
        half_gap = 0.5 * _sqrt(_nearest_other(centroids))
    else:
        half_gap = 0.5 * gaps.min(1)
    return upper, lower, np.maximum(half_gap[state.labels], lower)


def _nearest_other(centroids: np.ndarray) -> np.ndarray:
    return assign(centroids, centroids, 2)[0][:, 1]


def _recheck(x, x_sq, cents: Centroids, gaps, labels, upper, lower, bound) -> None:
    """Exact labels and bounds, written in place, for the rows the bounds cannot vouch for."""
    doubt = np.flatnonzero(upper > bound)
    if not len(doubt):
        return
    k = len(cents)
    full = np.ones(k, bool)
    if gaps is not None:
        reach = np.zeros(k, np.float32)                 # the farthest doubtful row per group
        np.maximum.at(reach, labels[doubt], upper[doubt])
        candidates = gaps < 2 * reach[:, None]
        full = candidates.sum(1) + 1 > FULL_SHARE * k
    everything = doubt[full[labels[doubt]]]
    size = max(BLOCK, block_rows(k))
    parts = blocks(len(x), size)
    lengths = np.array([p.stop - p.start for p in parts])
    per_block = np.bincount(everything // size, minlength=len(parts))
    whole = per_block > DENSE_SHARE * lengths
    rest = everything[~whole[everything // size]]
    jobs = [("all", parts[i]) for i in np.flatnonzero(whole)]
    jobs += [("all", rest[i:i + size]) for i in range(0, len(rest), size)]
    if gaps is not None:       # rows of whole blocks are measured there, once
        few = doubt[~full[labels[doubt]]]
        jobs += _candidate_jobs(few[~whole[few // size]], labels, candidates, gaps)

    def one(job):
        if job[0] == "all":
            at = job[1]
            lab, near, far = block_nearest(x[at], cents, True, x_sq[at])
            labels[at], upper[at], lower[at] = lab, _sqrt(near), _sqrt(far)
        else:
            _measure_candidates(x, x_sq, cents, *job[1:], labels, upper, lower)

    parallel_map(one, jobs)


def _candidate_jobs(rows: np.ndarray, labels, candidates: np.ndarray, gaps: np.ndarray):
    """Rows grouped by centroid, in blocks, each with its candidate centroids (itself first)
    and the gap to the nearest centroid that is not a candidate."""
    if not len(rows):
        return []
    rows = rows[np.argsort(labels[rows], kind="stable")]
    own = labels[rows]
    starts = np.flatnonzero(np.r_[True, own[1:] != own[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    jobs = []
    for s, e in zip(starts, ends):
        j = int(own[s])
        cand = np.r_[j, np.flatnonzero(candidates[j])]
        outside = gaps[j][~candidates[j]]
        outside = outside[np.isfinite(outside)]
        beyond = float(outside.min()) if len(outside) else np.inf
        for b in range(s, e, BLOCK):
            jobs.append(("cand", rows[b:min(b + BLOCK, e)], cand, beyond))
    return jobs


def _measure_candidates(x, x_sq, cents: Centroids, at, cand, beyond, labels, upper,
                        lower) -> None:
    """Rows of one group against its candidates. The second-nearest candidate bounds the
    other candidates; a centroid outside the set is at least `beyond` - (distance to the
    own centroid) away, so the lower bound is the smaller of the two."""
    lab, near, far, own = block_nearest(x[at], cents.subset(cand), True, x_sq[at], first=True)
    own = _sqrt(own)
    labels[at] = cand[lab]
    upper[at] = _sqrt(near)
    lower[at] = np.minimum(_sqrt(far), beyond - own)


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
