"""What one shard of vectors answers, as pure functions of (shard, small arguments).

Knows nothing about Ray: `kmeans.LocalShards` calls these in process, `jobs/kmeans_tasks`
calls them as Ray tasks on shards in the object store. The Lloyd step is `lloyd.py`;
distances come from `nearest.py` (blocked float32 products: numpy's BLAS on CPU, torch on
a GPU).
"""
from __future__ import annotations

import numpy as np

from raypipe.segments import kernels
from raypipe.segments.lloyd import lloyd_step
from raypipe.segments.nearest import assign, parallel_blocks

def shard_predict(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return assign(x, centroids)[1][:, 0]


def shard_labels(x: np.ndarray, state, centroids: np.ndarray, weights=None):
    """Final pass: labels against these centroids (one more bounded step) and the exact
    inertia (weighted with `weights`). -> (state, (labels, inertia))."""
    state, _ = lloyd_step(x, state, centroids, weights)
    labels = state.labels

    def block_inertia(rows: slice) -> float:
        diff = x[rows] - centroids[labels[rows]]
        if weights is None:
            return float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))
        return float(np.einsum("ij,ij->i", diff, diff, dtype=np.float64) @ weights[rows])

    return state, (labels, sum(parallel_blocks(block_inertia, len(x))))


HASHED_COLUMNS = 16    # enough to tell rows apart; hashing every column costs a Lloyd pass


def row_hashes(x: np.ndarray, seed: int) -> np.ndarray:
    """(n, d) -> (n,) uint64 seeded hashes of each row's contents (up to 16 columns)."""
    cols = np.linspace(0, x.shape[1] - 1, min(HASHED_COLUMNS, x.shape[1])).astype(int)
    mult = np.random.default_rng(seed).integers(1, 2**63, size=len(cols), dtype=np.uint64)
    return kernels.row_hashes(x, cols, mult | np.uint64(1))


def uniform(x: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) draw per row that depends on the row's contents and the seed only, so
    sampling decisions do not depend on how rows are split into shards."""
    return (row_hashes(x, seed) >> np.uint64(11)).astype(np.float64) / float(2**53)


def shard_sample(x: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Rows drawn with probability `fraction`, decided by each row's contents and the seed."""
    return x[uniform(x, seed) < fraction] if fraction < 1 else x


# k-means|| keeps, per shard, the rows it seeds from (all, or a content-hash sample), each
# one's distance to its nearest candidate so far and that candidate's index (the state), so
# each round measures distances to the new candidates only.

def parallel_update(x: np.ndarray, state, candidates: np.ndarray, offset: int,
                    fraction: float = 1.0, seed: int = 0):
    """Fold new candidates (numbered from `offset`) into the state -> (state, shard cost)."""
    if state is None:
        rows = shard_sample(x, fraction, seed)
        state = (rows, np.full(len(rows), np.inf, np.float32), np.zeros(len(rows), np.int64))
    rows, d2, nearest = state
    new_d2, new_nearest = assign(rows, candidates)
    closer = new_d2[:, 0] < d2
    d2 = np.where(closer, new_d2[:, 0], d2)
    nearest = np.where(closer, new_nearest[:, 0] + offset, nearest)
    return (rows, d2, nearest), float(d2.sum(dtype=np.float64))


def parallel_sample(x: np.ndarray, state, ell: float, cost: float, seed: int):
    """Keep each row with probability min(1, ell * d^2 / cost) (Bahmani et al. 2012)."""
    rows, d2, _ = state
    p = np.minimum(1.0, ell * d2.astype(np.float64) / max(cost, 1e-30))
    return state, rows[uniform(rows, seed) < p]


def parallel_weights(x: np.ndarray, state, n_candidates: int):
    """How many of the shard's (seeding) rows each candidate is nearest to."""
    return state, np.bincount(state[2], minlength=n_candidates)


def shard_moments(x: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(rows, per-feature sums, per-feature sums of squares), the sums in float64."""
    def block(rows: slice):
        xb = np.asarray(x[rows], np.float64)
        return xb.sum(0), np.einsum("ij,ij->j", xb, xb)

    parts = parallel_blocks(block, len(x), size=4096)
    d = x.shape[1]
    return len(x), sum((p[0] for p in parts), np.zeros(d)), sum((p[1] for p in parts),
                                                                   np.zeros(d))


def check_finite(x: np.ndarray) -> None:
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} rows hold NaN or inf, first at row "
                         f"{int(np.flatnonzero(bad)[0])} of its shard")
