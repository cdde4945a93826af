"""K-means over sharded vectors. Knows nothing about Ray.

Follows faiss `contrib/clustering.py`: the data is a set of shards that answer one question,
`shard_stats(x, centroids) -> (sums, counts, inertia)`; the driver adds the answers, `update`
turns totals into centroids, and `split_empty` re-seeds empty clusters by splitting the
largest. `LocalShards` keeps shards in memory; `jobs/kmeans_tasks.RayShards` keeps them in
Ray's object store and answers with Ray tasks. Both run through the same `KMeans.fit` loop.
"""
from __future__ import annotations

import logging

import faiss
import numpy as np

log = logging.getLogger(__name__)


def assign(x: np.ndarray, centroids: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """x: (n, d), centroids: (c, d) -> (squared distances (n, k), labels (n, k)), nearest first."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, np.float32))
    d2, labels = index.search(np.ascontiguousarray(x, np.float32), k)
    return np.maximum(d2, 0), labels


def shard_stats(x: np.ndarray, centroids: np.ndarray):
    """One shard's answer: per-cluster sums (k, d) float64, counts (k,), inertia."""
    k = centroids.shape[0]
    d2, labels = assign(x, centroids)
    labels = labels[:, 0]
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros((k, x.shape[1]), np.float64)
    order = np.argsort(labels, kind="stable")
    present = np.flatnonzero(counts)
    starts = np.r_[0, np.cumsum(counts[present])[:-1]]
    sums[present] = np.add.reduceat(x[order].astype(np.float64), starts, axis=0)
    return sums, counts, float(d2.sum())


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


def shard_sample(x: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose content hash falls below `fraction` of the hash range, with their hashes.
    The sample depends on the rows alone, not on how they are split into shards."""
    h = row_hashes(x, seed)
    keep = h <= np.uint64(min(fraction, 1.0) * float(2**64 - 1)) if fraction < 1 else \
        np.ones(len(x), bool)
    return x[keep], h[keep]


def update(sums: np.ndarray, counts: np.ndarray, spherical: bool = False) -> np.ndarray:
    """Totals -> new centroids; empty clusters come out as NaN rows for `split_empty`."""
    with np.errstate(invalid="ignore", divide="ignore"):
        c = (sums / counts[:, None]).astype(np.float32)
    if spherical:
        c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    return c


def split_empty(centroids: np.ndarray, counts: np.ndarray, rng) -> np.ndarray:
    """Re-seed each empty cluster by splitting the currently largest one in two (faiss)."""
    c, counts = centroids.copy(), counts.astype(np.float64).copy()
    for j in np.flatnonzero(counts == 0):
        big = int(np.argmax(counts))
        eps = 1e-4 * rng.standard_normal(c.shape[1]).astype(np.float32)
        c[j], c[big] = c[big] + eps, c[big] - eps
        counts[j] = counts[big] = counts[big] / 2
    return c


def _sq_dist(a: np.ndarray, x: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    """(m, d), (n, d) -> (m, n) squared distances, by matrix product."""
    a64 = a.astype(np.float64)
    return np.maximum((a64 ** 2).sum(1)[:, None] - 2 * a64 @ x.T.astype(np.float64) + x_sq, 0)


def kmeans_plus_plus(x: np.ndarray, k: int, rng, trials: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; scikit-learn's default): each
    step draws `trials` candidates by D^2 sampling and keeps the one that lowers the potential
    most. x: (n, d) -> (k, d)."""
    trials = trials or 2 + int(np.log(k))
    x_sq = (x.astype(np.float64) ** 2).sum(1)
    centers = [x[rng.integers(len(x))]]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:
            cand = rng.integers(len(x), size=trials)
        else:
            cand = np.searchsorted(np.cumsum(d2), rng.random(trials) * total).clip(0, len(x) - 1)
        cand_d2 = np.minimum(d2[None, :], _sq_dist(x[cand], x, x_sq))
        best = int(np.argmin(cand_d2.sum(1)))
        centers.append(x[cand[best]])
        d2 = cand_d2[best]
    return np.array(centers, np.float32)


class LocalShards:
    """Shards as in-memory arrays; `map(fn, *args)` calls fn(shard, *args) for each."""

    def __init__(self, shards: list[np.ndarray]):
        self.shards = [np.ascontiguousarray(s, np.float32) for s in shards]
        self.sizes = [len(s) for s in self.shards]
        self.dim = self.shards[0].shape[1]

    def map(self, fn, *args) -> list:
        return [fn(s, *args) for s in self.shards]

    def sample(self, fraction: float, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        return [shard_sample(s, fraction, seed) for s in self.shards]


def check_finite(x: np.ndarray) -> None:
    bad = ~np.isfinite(x).all(1)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} rows hold NaN or inf, first at row "
                         f"{int(np.flatnonzero(bad)[0])}")


class KMeans:
    """scikit-learn's vocabulary; `fit(x)` takes an (n, d) array or a shards object."""

    def __init__(self, n_clusters: int = 8, *, init="k-means++", n_init: int = 1,
                 max_iter: int = 50, tol: float = 1e-4, random_state: int | None = None,
                 spherical: bool = False, sample_size: int = 100_000):
        self.n_clusters, self.init, self.n_init = n_clusters, init, n_init
        self.max_iter, self.tol, self.random_state = max_iter, tol, random_state
        self.spherical, self.sample_size = spherical, sample_size

    def fit(self, x) -> "KMeans":
        shards = x if hasattr(x, "map") else LocalShards([np.asarray(x, np.float32)])
        n, k = sum(shards.sizes), self.n_clusters
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}")
        shards.map(check_finite)
        rng = np.random.default_rng(self.random_state)
        sample = self._sample(shards, rng)
        tol = self.tol * float(sample.var(0).mean())
        best = None
        for run in range(self.n_init):
            centroids, n_iter = self._run(shards, self._init(sample, rng), tol, rng)
            inertia = sum(s[2] for s in shards.map(shard_stats, centroids))
            log.info("k-means run %d: inertia %.4f after %d iterations", run, inertia, n_iter)
            if best is None or inertia < best[1]:
                best = (centroids, inertia, n_iter)
        self.cluster_centers_, self.inertia_, self.n_iter_ = best
        self.labels_ = np.concatenate(shards.map(shard_predict, self.cluster_centers_))
        return self

    def _sample(self, shards, rng) -> np.ndarray:
        """About `sample_size` rows (at least 20 per cluster) in a canonical order, so the
        same data and seed give the same seeds however the data is sharded."""
        n = sum(shards.sizes)
        want = max(self.sample_size, 20 * self.n_clusters)
        parts = shards.sample(want / n if want < n else 1.0, int(rng.integers(2**31)))
        rows = np.concatenate([p[0] for p in parts])
        hashes = np.concatenate([p[1] for p in parts])
        order = np.lexsort((*rows.T[::-1], hashes))     # ties (equal rows) stay canonical
        if len(rows) < self.n_clusters:
            raise ValueError(f"sample of {len(rows)} rows is smaller than "
                             f"n_clusters={self.n_clusters}")
        return rows[order]

    def _init(self, sample: np.ndarray, rng) -> np.ndarray:
        if isinstance(self.init, np.ndarray):
            if self.init.shape != (self.n_clusters, sample.shape[1]):
                raise ValueError(f"init shape {self.init.shape} should be "
                                 f"{(self.n_clusters, sample.shape[1])}")
            return self.init.astype(np.float32)
        if self.init == "random":
            return sample[rng.choice(len(sample), self.n_clusters, replace=False)].copy()
        if self.init == "k-means++":
            return kmeans_plus_plus(sample, self.n_clusters, rng)
        raise ValueError(f"init={self.init!r} should be 'k-means++', 'random' or an array")

    def _run(self, shards, centroids: np.ndarray, tol: float, rng):
        for it in range(1, self.max_iter + 1):
            stats = shards.map(shard_stats, centroids)
            sums = sum(s[0] for s in stats)
            counts = sum(s[1] for s in stats)
            new = split_empty(update(sums, counts, self.spherical), counts, rng)
            shift = float(((new - centroids) ** 2).sum())
            centroids = new
            if shift <= tol:
                break
        return centroids, it

    def predict(self, x: np.ndarray) -> np.ndarray:
        return shard_predict(np.asarray(x, np.float32), self.cluster_centers_)

    def fit_predict(self, x) -> np.ndarray:
        return self.fit(x).labels_
