"""What one shard of vectors answers, as pure functions of (shard, small arguments).

Knows nothing about Ray: `kmeans.LocalShards` calls these in process, `jobs/kmeans_tasks`
calls them as Ray tasks on shards in the object store. Distances are blocked matrix products
in torch (its BLAS is several times faster than the faiss-cpu wheel's on small machines), on
the GPU when the process has one; float32 throughout.
"""
from __future__ import annotations

import numpy as np
import torch

BLOCK = 32768          # rows per distance block: BLOCK x k floats stay in cache-friendly sizes


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _tensor(a: np.ndarray, dev) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(dev)


def _nearest(x: np.ndarray, centroids: np.ndarray, k: int = 1):
    """Yield (row slice, squared distances (b, k), labels (b, k)) block by block."""
    dev = device()
    c = _tensor(centroids, dev)
    c_sq = (c * c).sum(1)
    for start in range(0, len(x), BLOCK):
        xb = _tensor(x[start:start + BLOCK], dev)
        d = torch.addmm(c_sq.unsqueeze(0), xb, c.T, alpha=-2.0)   # |c|^2 - 2 x.c
        best, labels = torch.topk(d, k, dim=1, largest=False) if k > 1 else d.min(1, keepdim=True)
        best += (xb * xb).sum(1, keepdim=True)
        yield slice(start, start + len(xb)), best.clamp_(min=0), labels


def assign(x: np.ndarray, centroids: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """x: (n, d), centroids: (c, d) -> (squared distances (n, k), labels (n, k)), nearest first."""
    if x.shape[1] != centroids.shape[1]:
        raise ValueError(f"dimension mismatch: x has d={x.shape[1]}, centroids "
                         f"d={centroids.shape[1]}")
    d2 = np.empty((len(x), k), np.float32)
    labels = np.empty((len(x), k), np.int64)
    for rows, best, lab in _nearest(x, centroids, k):
        d2[rows], labels[rows] = best.cpu().numpy(), lab.cpu().numpy()
    return d2, labels


def shard_stats(x: np.ndarray, centroids: np.ndarray):
    """One shard's answer for given centroids: per-cluster sums (k, d) float64, counts (k,),
    inertia (sum of squared distances to the nearest centroid)."""
    dev = device()
    k, d = centroids.shape
    sums = torch.zeros((k, d), dtype=torch.float32, device=dev)
    counts = torch.zeros(k, dtype=torch.int64, device=dev)
    inertia = 0.0
    for rows, best, labels in _nearest(x, centroids):
        labels = labels[:, 0]
        sums.index_add_(0, labels, _tensor(x[rows], dev))
        counts += torch.bincount(labels, minlength=k)
        inertia += float(best.sum(dtype=torch.float64))
    return sums.double().cpu().numpy(), counts.cpu().numpy(), inertia


def shard_predict(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return assign(x, centroids)[1][:, 0]


def shard_cost(x: np.ndarray, centroids: np.ndarray) -> float:
    return float(sum(float(best.sum(dtype=torch.float64)) for _, best, _ in _nearest(x, centroids)))


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


def shard_sample(x: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows drawn with probability `fraction`, with their hashes (for a canonical order)."""
    keep = uniform(x, seed) < fraction if fraction < 1 else np.ones(len(x), bool)
    return x[keep], row_hashes(x[keep], seed)


def parallel_round(x: np.ndarray, candidates: np.ndarray, ell: float, cost: float,
                   seed: int) -> tuple[np.ndarray, float]:
    """One k-means|| oversampling round (Bahmani et al. 2012): keep each row with
    probability min(1, ell * d^2(row, candidates) / cost). -> (rows kept, shard's cost)."""
    d2 = assign(x, candidates)[0][:, 0].astype(np.float64)
    p = np.minimum(1.0, ell * d2 / max(cost, 1e-30))
    return x[uniform(x, seed) < p], float(d2.sum())


def candidate_weights(x: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """How many of the shard's rows each candidate is nearest to."""
    return np.bincount(assign(x, candidates)[1][:, 0], minlength=len(candidates))


def check_finite(x: np.ndarray) -> None:
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} rows hold NaN or inf, first at row "
                         f"{int(np.flatnonzero(bad)[0])} of its shard")
