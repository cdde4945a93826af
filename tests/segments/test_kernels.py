"""The compiled passes of K-means (segments/kernels.py) against plain numpy."""
import numpy as np
import pytest

from raypipe.segments import kernels
from raypipe.segments.shard import row_hashes, uniform


@pytest.mark.parametrize("k,b", [(1, 7), (2, 64), (37, 513), (256, 1024)])
def test_two_nearest_equals_a_sort(k, b):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((b, 5)).astype(np.float32)
    c = rng.standard_normal((k, 5)).astype(np.float32)
    if k > 2:
        c[k // 2] = c[1]                      # an exact tie: the lower index wins
    dots = np.ascontiguousarray(c @ x.T)
    c_sq, x_sq = (c * c).sum(1), (x * x).sum(1)
    labels = np.empty(b, np.int64)
    near, far, first = (np.empty(b, np.float32) for _ in range(3))
    kernels.two_nearest(dots, c_sq, x_sq, labels, near, far, first)
    d = np.maximum(c_sq[:, None] - 2 * dots + x_sq, 0).astype(np.float32)   # (k, b)
    np.testing.assert_array_equal(labels, d.argmin(0))
    ordered = np.sort(d, 0)
    np.testing.assert_allclose(near, ordered[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(first, d[0], rtol=1e-6, atol=1e-6)
    if k == 1:
        assert np.isinf(far).all()
    else:
        np.testing.assert_allclose(far, ordered[1], rtol=1e-6, atol=1e-6)
    if k > 2:
        assert not (labels == k // 2).any()


def _numpy_hashes(x, seed):
    """The formula the kernel compiles, in numpy (wrapping uint64 arithmetic)."""
    cols = np.linspace(0, x.shape[1] - 1, min(16, x.shape[1])).astype(int)
    words = np.ascontiguousarray(x[:, cols], np.float32).view(np.uint32).astype(np.uint64)
    mult = np.random.default_rng(seed).integers(1, 2**63, size=len(cols), dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (words * (mult | np.uint64(1))).sum(1, dtype=np.uint64)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return h


@pytest.mark.parametrize("d", [1, 3, 16, 40])
def test_row_hashes_follow_the_formula_and_the_rows_only(d):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((3000, d)).astype(np.float32)
    x[10] = x[20]
    h = row_hashes(x, 5)
    np.testing.assert_array_equal(h, _numpy_hashes(x, 5))
    assert h[10] == h[20] and len(np.unique(h)) == 2999
    np.testing.assert_array_equal(np.concatenate([row_hashes(x[:1234], 5),
                                                  row_hashes(x[1234:], 5)]), h)
    assert (row_hashes(x, 6) != h).mean() > 0.99
    assert np.asfortranarray(x).flags.f_contiguous
    np.testing.assert_array_equal(row_hashes(np.asfortranarray(x), 5), h)
    u = uniform(x, 5)
    assert ((u >= 0) & (u < 1)).all() and abs(u.mean() - 0.5) < 0.03
