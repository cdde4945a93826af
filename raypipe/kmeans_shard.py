"""What one shard of vectors answers, as pure functions of (shard, small arguments).

Knows nothing about Ray: `kmeans.LocalShards` calls these in process, `jobs/kmeans_tasks`
calls them as Ray tasks on shards in the object store. Distances are blocked matrix products
in torch (its BLAS is several times faster than the faiss-cpu wheel's on small machines), on
the GPU when the process has one; float32 throughout.
"""
from __future__ import annotations

import numpy as np
import torch

BLOCK = 8192           # rows per distance block (BLOCK x k floats); measured best here


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tensor(a: np.ndarray, dev) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(dev)


def _nearest(x: np.ndarray, centroids: np.ndarray, k: int = 1):
    """Yield (row slice, squared distances (b, k), labels (b, k)) block by block: on the GPU
    with torch when there is one, else with numpy's BLAS (faster than torch's on CPU here)."""
    if device().type == "cuda":
        yield from _nearest_torch(x, centroids, k)
        return
    c = np.ascontiguousarray(centroids, np.float32)
    c_sq = (c * c).sum(1)
    for start in range(0, len(x), BLOCK):
        xb = np.ascontiguousarray(x[start:start + BLOCK], np.float32)
        d = xb @ c.T
        d *= -2.0
        d += c_sq                                   # |c|^2 - 2 x.c, |x|^2 added below
        if k == 1:
            labels = d.argmin(1)[:, None]
        else:
            labels = np.argpartition(d, k - 1, axis=1)[:, :k]
            labels = np.take_along_axis(labels, np.take_along_axis(d, labels, 1).argsort(1), 1)
        best = np.take_along_axis(d, labels, 1) + np.einsum("ij,ij->i", xb, xb)[:, None]
        yield slice(start, start + len(xb)), np.maximum(best, 0), labels


def _nearest_torch(x: np.ndarray, centroids: np.ndarray, k: int):
    dev = device()
    c = _tensor(centroids, dev)
    c_sq = (c * c).sum(1)
    for start in range(0, len(x), BLOCK):
        xb = _tensor(x[start:start + BLOCK], dev)
        d = torch.addmm(c_sq.unsqueeze(0), xb, c.T, alpha=-2.0)
        best, labels = torch.topk(d, k, dim=1, largest=False)
        best += (xb * xb).sum(1, keepdim=True)
        yield (slice(start, start + len(xb)), best.clamp_(min=0).cpu().numpy(),
               labels.cpu().numpy())


def assign(x: np.ndarray, centroids: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """x: (n, d), centroids: (c, d) -> (squared distances (n, k), labels (n, k)), nearest first."""
    if x.shape[1] != centroids.shape[1]:
        raise ValueError(f"dimension mismatch: x has d={x.shape[1]}, centroids "
                         f"d={centroids.shape[1]}")
    d2 = np.empty((len(x), k), np.float32)
    labels = np.empty((len(x), k), np.int64)
    for rows, best, lab in _nearest(x, centroids, k):
        d2[rows], labels[rows] = best, lab
    return d2, labels


def _add_rows(sums: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> None:
    """sums[labels[i]] += rows[i], by sorting labels (np.add.at is far slower)."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=len(sums))
    present = np.flatnonzero(counts)
    starts = np.r_[0, np.cumsum(counts[present])[:-1]]
    sums[present] += np.add.reduceat(rows[order], starts, axis=0)


def shard_stats(x: np.ndarray, centroids: np.ndarray):
    """One shard's answer for given centroids: per-cluster sums (k, d) float64, counts (k,),
    inertia (sum of squared distances to the nearest centroid)."""
    k, d = centroids.shape
    sums = np.zeros((k, d), np.float64)       # float32 within a block, float64 across
    labels_all = np.empty(len(x), np.int64)
    inertia = 0.0
    for rows, best, labels in _nearest(x, centroids):
        labels_all[rows] = labels[:, 0]
        _add_rows(sums, labels[:, 0], x[rows])
        inertia += float(best.sum(dtype=np.float64))
    return sums, np.bincount(labels_all, minlength=k), inertia


def shard_predict(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return assign(x, centroids)[1][:, 0]


def row_hashes(x: np.ndarray, seed: int) -> np.ndarray:
    """(n, d) -> (n,) uint64 seeded hashes of each row's contents."""
    words = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    mult = np.random.default_rng(seed).integers(1, 2**63, size=x.shape[1], dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = (words * (mult | np.uint64(1))).sum(1, dtype=np.uint64)
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return h


def uniform(x: np.ndarray, seed: int) -> np.ndarray:
    """A uniform [0, 1) draw per row that depends on the row's contents and the seed only, so
    sampling decisions do not depend on how rows are split into shards."""
    return (row_hashes(x, seed) >> np.uint64(11)).astype(np.float64) / float(2**53)


def shard_sample(x: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Rows drawn with probability `fraction`, decided by each row's contents and the seed."""
    return x[uniform(x, seed) < fraction] if fraction < 1 else x


# k-means|| keeps, per shard, each row's distance to its nearest candidate so far and that
# candidate's index (the state), so each round measures distances to the new candidates only.

def parallel_update(x: np.ndarray, state, candidates: np.ndarray, offset: int):
    """Fold new candidates (numbered from `offset`) into the state -> (state, shard cost)."""
    d2, nearest = (np.full(len(x), np.inf, np.float32), np.zeros(len(x), np.int64)) \
        if state is None else state
    new_d2, new_nearest = assign(x, candidates)
    closer = new_d2[:, 0] < d2
    d2 = np.where(closer, new_d2[:, 0], d2)
    nearest = np.where(closer, new_nearest[:, 0] + offset, nearest)
    return (d2, nearest), float(d2.sum(dtype=np.float64))


def parallel_sample(x: np.ndarray, state, ell: float, cost: float, seed: int):
    """Keep each row with probability min(1, ell * d^2 / cost) (Bahmani et al. 2012)."""
    p = np.minimum(1.0, ell * state[0].astype(np.float64) / max(cost, 1e-30))
    return state, x[uniform(x, seed) < p]


def parallel_weights(x: np.ndarray, state, n_candidates: int):
    """How many of the shard's rows each candidate is nearest to."""
    return state, np.bincount(state[1], minlength=n_candidates)


def check_finite(x: np.ndarray) -> None:
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} rows hold NaN or inf, first at row "
                         f"{int(np.flatnonzero(bad)[0])} of its shard")
