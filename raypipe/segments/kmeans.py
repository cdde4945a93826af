"""K-means over sharded vectors, as a scikit-learn estimator. Knows nothing about Ray.

Follows faiss `contrib/clustering.py`: the data is a set of shards (inputs.py) that answer
one question, `lloyd_step(x, state, centroids) -> (state, (sums, counts))` (lloyd.py; the
state holds distance bounds so rows whose label cannot change skip the distance
computation); the driver adds the answers, `update` turns totals into centroids, and
`split_empty` re-seeds empty clusters by splitting the largest. `LocalShards` keeps shards
in memory; `jobs/kmeans_tasks.RayShards` keeps them in Ray's object store and answers with
Ray tasks. Both run through the same `KMeans.fit` loop, so they give the same result for the
same seed. `fit(array)` with Ray running shards a large array across the cluster's CPUs
(`inputs.as_shards`); a small one stays in process, where the shard functions use every core
through threads. Restarts (`n_init`) run concurrently on Ray shards, one after another in
process; each has its own seed, so both orders give the same result.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from sklearn.base import (BaseEstimator, ClassNamePrefixFeaturesOutMixin, ClusterMixin,
                          TransformerMixin)
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from raypipe.segments.nearest import own_cores
from raypipe.segments.inputs import Checkpoint, LocalShards, as_shards
from raypipe.segments.seeding import canonical, kmeans_parallel, kmeans_plus_plus
from raypipe.segments.shard import (assign, check_finite, lloyd_step, shard_labels,
                                    shard_moments, shard_predict, uniform)

log = logging.getLogger(__name__)
__all__ = ["KMeans", "LocalShards", "assign", "shard_predict", "update", "split_empty"]
INITS = ("k-means||", "k-means++", "random")
ARI_ROWS = 100_000     # restarts' agreement is measured on at most this many rows
# k-means|| seeds from at most max(SEED_ROWS, SEED_PER_CLUSTER x k) rows of `sample_size`:
# 25,000 rather than 100,000 moved the inertia after 20 iterations by under 0.1% on the
# bench's shapes, and the seeding had taken up to a quarter of a fit.
SEED_ROWS, SEED_PER_CLUSTER = 25_000, 100


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


class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator):
    """K-means in scikit-learn's vocabulary (get_params, fit, predict, transform, score,
    sample_weight), so it works in Pipelines and GridSearchCV. `fit(X)`: an (n, d) array
    (sharded over a running Ray when large, see `inputs.as_shards`) or a shards object
    (`LocalShards`, `jobs.kmeans_tasks.RayShards`).

    After fit: cluster_centers_, labels_, inertia_, n_iter_, n_features_in_, n_shards_,
    restarts_ (each restart's seed run, inertia and iterations) and restart_ari_ (mean
    adjusted Rand index between restarts' labels; None with one restart)."""

    def __init__(self, n_clusters: int = 8, *, init="k-means||", n_init: int = 1,
                 max_iter: int = 50, tol: float = 1e-4, random_state=None,
                 spherical: bool = False, sample_size: int = 100_000,
                 checkpoint_path: str | None = None):
        self.n_clusters, self.init, self.n_init = n_clusters, init, n_init
        self.max_iter, self.tol, self.random_state = max_iter, tol, random_state
        self.spherical, self.sample_size = spherical, sample_size
        self.checkpoint_path = checkpoint_path

    def fit(self, X, y=None, sample_weight=None) -> "KMeans":
        self._check_params()
        with own_cores():       # the cores to the shard's threads, not to BLAS (nearest.py)
            return self._fit(X, sample_weight)

    def _fit(self, X, sample_weight) -> "KMeans":
        shards = self._shards(X, sample_weight)
        self.n_shards_ = len(shards.sizes)
        n, k = sum(shards.sizes), self.n_clusters
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}")
        shards.map(check_finite)
        rng = np.random.default_rng(self.random_state)
        sample_seed = int(rng.integers(2**31))
        weighted = getattr(shards, "weights", None) is not None
        # The sample seeds k-means++, random and weighted fits; k-means|| reads the shards.
        sample, sample_w = self._sample(shards, sample_seed) if weighted or (
            isinstance(self.init, str) and self.init != "k-means||") else (None, None)
        tol = self.tol * self._variance(shards, sample, sample_w) if self.tol > 0 else 0.0
        base = int(rng.integers(2**62))
        checkpoint = Checkpoint(self.checkpoint_path)
        runs = 1 if isinstance(self.init, np.ndarray) else self.n_init
        fit_one = lambda run, best, resume: self._fit_one(     # noqa: E731
            shards, sample, sample_w, tol, base, run, best, resume, checkpoint)
        if shards.concurrent and runs > 1 and not self.checkpoint_path:
            with ThreadPoolExecutor(runs) as pool:
                results = list(pool.map(lambda r: fit_one(r, None, None), range(runs)))
        else:
            results = self._sequential(fit_one, runs, checkpoint, k, shards.dim)
        best = min(results, key=lambda r: r["inertia"])
        self.cluster_centers_, self.inertia_ = best["centroids"], best["inertia"]
        self.n_iter_, self.labels_ = best["n_iter"], best["labels"]
        if self.labels_ is None:     # the best run finished before a resumed checkpoint
            self.labels_ = np.concatenate(shards.map(shard_predict, self.cluster_centers_))
        self.restarts_ = [{key: r[key] for key in ("run", "inertia", "n_iter")} for r in results]
        self.restart_ari_ = mean_pairwise_ari([r["some_labels"] for r in results if "some_labels" in r])
        return self

    def _check_params(self) -> None:
        if not isinstance(self.n_clusters, (int, np.integer)) or self.n_clusters < 1 or \
                self.n_init < 1 or self.max_iter < 1:
            raise ValueError(f"n_clusters={self.n_clusters}, n_init={self.n_init}, max_iter="
                             f"{self.max_iter} should all be integers >= 1")
        if not isinstance(self.init, np.ndarray) and self.init not in INITS:
            raise ValueError(f"init={self.init!r} should be one of {INITS} or an array")

    def _shards(self, X, sample_weight):
        if _is_shards(X):
            self.n_features_in_ = X.dim
            return as_shards(X, self.n_clusters, sample_weight)
        X = validate_data(self, X, dtype=[np.float32, np.float64], ensure_all_finite=False,
                          ensure_min_samples=1)
        w = None if sample_weight is None else _check_sample_weight(
            sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if w is not None and np.count_nonzero(w) < self.n_clusters:
            raise ValueError(f"sample_weight has {np.count_nonzero(w)} non-zero weights, "
                             f"fewer than n_clusters={self.n_clusters}")
        return as_shards(X, self.n_clusters, w)

    def _sequential(self, fit_one, runs: int, checkpoint: Checkpoint, k: int, d: int) -> list:
        """Restarts one after another, resuming from the checkpoint where there is one."""
        state, start, results, best = checkpoint.load(k, d), 0, [], None
        if state is not None:
            start = int(state["run"])
            if state["best_inertia"] >= 0:
                best = (state["best"], float(state["best_inertia"]), int(state["best_iter"]))
                results.append({"run": -1, "centroids": best[0], "inertia": best[1],
                                "n_iter": best[2], "labels": None})
            log.info("k-means: resuming run %d at iteration %d", start, int(state["iteration"]))
        for run in range(start, runs):
            result = fit_one(run, best, state if run == start else None)
            results.append(result)
            if best is None or result["inertia"] < best[1]:
                best = (result["centroids"], result["inertia"], result["n_iter"])
        return results

    def _fit_one(self, shards, sample, sample_w, tol, base, run, best, resume, checkpoint):
        rng = np.random.default_rng([base, run])
        seeds = self._init(shards, sample, sample_w, rng)
        centroids, n_iter, states = self._run(shards, seeds, tol, rng, run, best, resume,
                                              checkpoint)
        final = shards.scan(shard_labels, states, centroids)[1]
        labels = np.concatenate([f[0] for f in final])
        inertia = sum(f[1] for f in final)
        log.info("k-means run %d: inertia %.4f after %d iterations", run, inertia, n_iter)
        return {"run": run, "centroids": centroids, "inertia": inertia, "n_iter": n_iter,
                "labels": labels, "some_labels": labels[::max(1, len(labels) // ARI_ROWS)]}

    @staticmethod
    def _variance(shards, sample, sample_w) -> float:
        """Mean per-feature variance: of the weighted sample for weighted fits, else of
        every row (float64 sums per shard, so it does not depend on the sharding)."""
        if sample_w is not None:
            mean = np.average(sample, 0, sample_w)
            return float(np.average((sample - mean) ** 2, 0, sample_w).mean())
        parts = shards.map(shard_moments)
        n = sum(p[0] for p in parts)
        mean = sum(p[1] for p in parts) / n
        return float(np.maximum(sum(p[2] for p in parts) / n - mean ** 2, 0).mean())

    def _sample(self, shards, seed: int):
        """About `sample_size` rows (at least 20 per cluster) in an order fixed by their
        contents, so the same data and seed give the same result however it is sharded;
        -> (rows, their weights or None)."""
        n = sum(shards.sizes)
        fraction = min(1.0, max(self.sample_size, 20 * self.n_clusters) / n)
        if getattr(shards, "weights", None) is not None:      # one in-process shard
            x, w = shards.shards[0], shards.weights[0]
            keep = np.flatnonzero((uniform(x, seed) < fraction) & (w > 0))
            if len(keep) < self.n_clusters:
                keep = np.flatnonzero(w > 0)
            return x[keep], w[keep]
        rows = np.concatenate(shards.sample(fraction, seed))
        if len(rows) < self.n_clusters:
            rows = np.concatenate(shards.sample(1.0, seed))
        return canonical(rows, seed), None

    def _init(self, shards, sample: np.ndarray, sample_w, rng) -> np.ndarray:
        """Seeds; weighted fits seed by weighted k-means++ on the weighted sample."""
        if isinstance(self.init, np.ndarray):
            if self.init.shape != (self.n_clusters, shards.dim):
                raise ValueError(f"init shape {self.init.shape} should be "
                                 f"{(self.n_clusters, shards.dim)}")
            return self.init.astype(np.float32)
        if self.init == "random":
            p = None if sample_w is None else sample_w / sample_w.sum()
            return sample[rng.choice(len(sample), self.n_clusters, replace=False, p=p)].copy()
        if self.init == "k-means++" or sample_w is not None:
            return kmeans_plus_plus(sample, self.n_clusters, rng, weights=sample_w)
        rows = min(self.sample_size, max(SEED_ROWS, SEED_PER_CLUSTER * self.n_clusters))
        return kmeans_parallel(shards, self.n_clusters, rng, sample_size=rows)

    def _run(self, shards, centroids, tol, rng, run, best, resume, checkpoint):
        first = 1
        if resume is not None:
            centroids, first = resume["centroids"], int(resume["iteration"]) + 1
            rng.bit_generator.state = _rng_state(resume)
        it, states = first - 1, None
        for it in range(first, self.max_iter + 1):
            states, stats = shards.scan(lloyd_step, states, centroids)
            sums, counts = sum(s[0] for s in stats), sum(s[1] for s in stats)
            new = split_empty(update(sums, counts, self.spherical), counts, rng)
            shift = float(((new - centroids) ** 2).sum())
            centroids = new
            checkpoint.save(centroids=centroids, iteration=it, run=run,
                            rng=np.frombuffer(repr(rng.bit_generator.state).encode(), np.uint8),
                            best=best[0] if best else centroids,
                            best_inertia=best[1] if best else -1.0,
                            best_iter=best[2] if best else 0)
            if shift <= tol:      # tol=0: stops exactly when no label changes
                break
        return centroids, it, states

    def _input(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        return X

    def predict(self, X) -> np.ndarray:
        return shard_predict(np.asarray(self._input(X), np.float32), self.cluster_centers_)

    def fit_predict(self, X, y=None, sample_weight=None) -> np.ndarray:
        return self.fit(X, sample_weight=sample_weight).labels_

    def transform(self, X) -> np.ndarray:
        """(n, d) -> (n, k) Euclidean distances to each centroid, in X's float dtype."""
        X = self._input(X)
        c = self.cluster_centers_.astype(X.dtype)
        d2 = np.einsum("ij,ij->i", X, X)[:, None] + np.einsum("ij,ij->i", c, c) - 2 * X @ c.T
        return np.sqrt(np.maximum(d2, 0))

    def score(self, X, y=None, sample_weight=None) -> float:
        """Minus the (weighted) inertia of X against the centroids."""
        X = self._input(X)
        w = _check_sample_weight(sample_weight, X, dtype=np.float64)
        x = np.asarray(X, np.float32)
        diff = x - self.cluster_centers_[shard_predict(x, self.cluster_centers_)]
        return -float(np.einsum("ij,ij->i", diff, diff, dtype=np.float64) @ w)

    @property
    def _n_features_out(self) -> int:
        return self.cluster_centers_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _is_shards(x) -> bool:
    return hasattr(x, "scan") and hasattr(x, "sizes")


def mean_pairwise_ari(labelings: list[np.ndarray]) -> float | None:
    """Mean adjusted Rand index over pairs of labelings; None with fewer than two."""
    from sklearn.metrics import adjusted_rand_score
    pairs = [(a, b) for i, a in enumerate(labelings) for b in labelings[i + 1:]]
    return float(np.mean([adjusted_rand_score(a, b) for a, b in pairs])) if pairs else None


def _rng_state(state) -> dict:
    import ast
    return ast.literal_eval(bytes(state["rng"]).decode())
