"""The two loops numpy cannot do in one pass, compiled with numba.

Knows nothing about Ray. Both release the GIL, so `nearest.parallel_map`'s threads run them
on every core, and both are cached on disk (numba's `cache=True`), so a process compiles
them once per machine, not per call.

- `two_nearest`: over a (k, b) block of dot products c.x, one pass that yields, per row,
  the nearest centroid, the smallest and second-smallest squared distance, and the distance
  to centroid 0. The pass runs along the b rows of each centroid's line, so it vectorizes
  across rows (8 floats per AVX2 instruction) with no horizontal reductions; numpy needs an
  argmin, a take, a masked copy and a second argmin over the (b, k) matrix for the same, four
  times the memory traffic and, at d = 64, half the time of the product itself.
- `first_bounds`, `drift`, `own_distance`, `group_pass`: the passes of Yinyang K-means'
  bounds (lloyd.py): per row and centroid group, the distance to the group's nearest
  centroid other than the row's own, moved by the groups' drift each step, and refreshed
  group by group from small (rows x group) products.
- `row_hashes`: a seeded 64-bit hash of each row's bits in up to 16 spread columns (K-means'
  content-hash sample and canonical order), one pass over the rows instead of numpy's five
  temporaries.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, boundscheck=False)
def two_nearest(dots, c_sq, x_sq, labels, near, far, first):   # pragma: no cover (compiled)
    """dots (k, b) = c.x; c_sq (k,) = |c|^2; x_sq (b,) = |x|^2. Writes labels (b,) int64,
    near, far and first (b,) float32: squared distances to the nearest, the second nearest
    (inf when k = 1) and centroid 0, clipped at 0. Ties go to the lower index (argmin's)."""
    k, b = dots.shape
    two, zero = np.float32(2.0), np.float32(0.0)      # float32 throughout: 8 lanes per op
    for i in range(b):
        near[i] = np.inf
        far[i] = np.inf
        labels[i] = 0
    for j in range(k):
        line = dots[j]
        cj = c_sq[j]
        for i in range(b):
            v = cj - two * line[i]
            best = near[i]
            far[i] = min(far[i], max(v, best))
            if v < best:
                near[i] = v
                labels[i] = j
    for i in range(b):
        first[i] = max(c_sq[0] - two * dots[0, i] + x_sq[i], zero)
        near[i] = max(near[i] + x_sq[i], zero)
        far[i] = max(far[i] + x_sq[i], zero)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def first_bounds(prod, x_sq, order, starts, labels, upper, lower):  # pragma: no cover
    """prod (b, k) = |c|^2 - 2 x.c with the centroids in group order (group g is columns
    starts[g]:starts[g + 1], column j is centroid order[j]). Writes labels (b,), upper (b,)
    the distance to the nearest centroid, lower (b, t) per group the distance to its nearest
    centroid other than the row's own (inf for a group of one that holds it)."""
    b, t = prod.shape[0], len(starts) - 1
    zero = np.float32(0.0)
    for i in range(b):
        best, best_j, best_g, best_m2 = np.inf, 0, 0, np.inf
        for g in range(t):
            m1, m2, j1 = np.float32(np.inf), np.float32(np.inf), starts[g]
            for j in range(starts[g], starts[g + 1]):      # branch-free, as group_pass
                v = prod[i, j]
                m2 = min(m2, max(v, m1))
                closer = v < m1
                j1 = j if closer else j1
                m1 = v if closer else m1
            lower[i, g] = m1
            if m1 < best:
                best, best_j, best_g, best_m2 = m1, j1, g, m2
        lower[i, best_g] = best_m2
        for g in range(t):
            lower[i, g] = np.sqrt(max(lower[i, g] + x_sq[i], zero))
        labels[i] = order[best_j]
        upper[i] = np.sqrt(max(best + x_sq[i], zero))


@numba.njit(cache=True, nogil=True, boundscheck=False)
def drift(labels, upper, lower, shift, group_shift, half_gap, new_upper, new_lower,
          doubt):                                               # pragma: no cover
    """Bounds after the centroids moved: the own centroid's shift added to the upper bound,
    each group's largest shift taken from its lower bound. doubt (b,) bool: the row's label
    may have changed (upper above both the smallest lower bound and half the gap from its
    centroid to the nearest other)."""
    n, t = lower.shape
    for i in range(n):
        a = labels[i]
        u = upper[i] + shift[a]
        new_upper[i] = u
        low = np.inf
        for g in range(t):
            v = lower[i, g] - group_shift[g]
            new_lower[i, g] = v
            low = min(low, v)
        doubt[i] = u > max(low, half_gap[a])


# Reassociation lets the sum vectorize; inf and NaN keep their meaning (no full fastmath).
@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})
def own_distance(x, rows, c, labels, out):                     # pragma: no cover
    """out[r] = |x[rows[r]] - c[labels[rows[r]]]|, summed directly (no cancellation)."""
    d = x.shape[1]
    for r in range(len(rows)):
        i = rows[r]
        ci = c[labels[i]]
        s = np.float32(0.0)
        for f in range(d):
            diff = x[i, f] - ci[f]
            s += diff * diff
        out[r] = np.sqrt(s)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def needs(rows, u, labels, lower, half_gap):                   # pragma: no cover
    """Which rows (positions in `rows`) are still in doubt with their exact distance u to
    their own centroid, and which groups each must be measured against (lower bound below
    u), as lists per group: -> (doubt (s,), ptr (t + 1,), members): group g's rows are
    positions members[ptr[g]:ptr[g + 1]] in `doubt`."""
    t = lower.shape[1]
    doubt = np.empty(len(rows), np.int64)
    ptr = np.zeros(t + 1, np.int64)
    s = 0
    for r in range(len(rows)):
        i = rows[r]
        low = np.inf
        for g in range(t):
            low = min(low, lower[i, g])
        if u[r] > max(low, half_gap[labels[i]]):
            doubt[s] = r
            s += 1
            for g in range(t):
                if lower[i, g] < u[r]:
                    ptr[g + 1] += 1
    for g in range(t):
        ptr[g + 1] += ptr[g]
    fill = ptr[:-1].copy()
    members = np.empty(ptr[t], np.int64)
    for p in range(s):
        r = doubt[p]
        i = rows[r]
        for g in range(t):
            if lower[i, g] < u[r]:
                members[fill[g]] = p
                fill[g] += 1
    return doubt[:s], ptr, members


@numba.njit(cache=True, nogil=True, boundscheck=False)
def group_pass(dots, c_sq, x_sq, ids, g, sel, best, best_label, best_group,
               lower):                                          # pragma: no cover
    """Folds centroid group g into some rows' running nearest. dots (s, m) = x.c of the
    rows at positions sel (s,) against the group's centroids (labels ids (m,)); x_sq (s,).
    best (squared distance), best_label, best_group (b,) and lower (b, t) are indexed by
    position. The group's lower bound becomes its nearest other than the row's final
    centroid; a centroid it displaces becomes part of its own group's bound."""
    zero, two = np.float32(0.0), np.float32(2.0)
    for r in range(len(sel)):
        i = sel[r]
        m1, m2, j1 = np.float32(np.inf), np.float32(np.inf), 0
        for j in range(dots.shape[1]):        # branch-free: selects, no mispredictions
            v = c_sq[j] - two * dots[r, j]
            m2 = min(m2, max(v, m1))
            closer = v < m1
            j1 = j if closer else j1
            m1 = v if closer else m1
        m1 = max(m1 + x_sq[r], zero)
        m2 = max(m2 + x_sq[r], zero)
        if m1 < best[i] or ids[j1] == best_label[i]:
            h = best_group[i]
            if h != g:
                lower[i, h] = min(lower[i, h], np.sqrt(best[i]))
            lower[i, g] = np.sqrt(m2)
            best[i] = min(m1, best[i]) if ids[j1] == best_label[i] else m1
            best_label[i], best_group[i] = ids[j1], g
        else:
            lower[i, g] = np.sqrt(m1)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _mix(bits, cols, mult, out):                                # pragma: no cover (compiled)
    for i in range(bits.shape[0]):
        h = np.uint64(0)
        for j in range(len(cols)):
            h += np.uint64(bits[i, cols[j]]) * mult[j]
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
        out[i] = h


def row_hashes(x: np.ndarray, cols: np.ndarray, mult: np.ndarray) -> np.ndarray:
    """x (n, d) float32, cols (m,) column indices, mult (m,) odd uint64 -> (n,) uint64: the
    sum of the columns' float bits times mult (mod 2^64), then murmur3's 64-bit finalizer."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    out = np.empty(len(bits), np.uint64)
    _mix(bits, np.asarray(cols, np.int64), np.asarray(mult, np.uint64), out)
    return out
