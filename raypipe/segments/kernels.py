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
