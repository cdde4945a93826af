"""K-means over sharded vectors. Knows nothing about Ray but where it says so below.

Follows faiss `contrib/clustering.py`: the data is a set of shards that answer one question,
`lloyd_step(x, state, centroids) -> (state, (sums, counts))` (lloyd.py; the state holds
distance bounds so rows whose label cannot change skip the distance computation); the
driver adds the answers, `update` turns totals into centroids, and `split_empty` re-seeds
empty clusters by splitting the largest. `LocalShards` keeps shards in memory;
`jobs/kmeans_tasks.RayShards` keeps them in Ray's object store and answers with Ray tasks. Both run through the same
`KMeans.fit` loop, so they give the same result for the same seed. `fit(array)` with Ray
running in the process shards a large array across the cluster's CPUs (the one place this
module looks for Ray, lazily); a small one stays in process, where the shard functions use
every core through threads.
"""
from __future__ import annotations

import io
import logging
import sys

import numpy as np

from raypipe.run import paths as rio
from raypipe.segments.seeding import canonical, kmeans_parallel, kmeans_plus_plus
from raypipe.segments.shard import (assign, check_finite, lloyd_step, shard_labels,
                                  shard_predict, shard_sample)

log = logging.getLogger(__name__)
__all__ = ["KMeans", "LocalShards", "assign", "shard_predict", "update", "split_empty"]


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


# Below this much work per iteration (rows x clusters x dimensions), Ray's per-task cost
# outweighs a cluster's extra cores: the array stays in process.
RAY_MIN_WORK = 2 ** 30


def as_shards(x, k: int):
    """A shards object as is; an array as Ray shards (one per CPU of the running Ray) when
    Ray is running and the work is large, else as one in-process shard."""
    if hasattr(x, "map"):
        return x
    x = np.asarray(x, np.float32)
    if x.ndim != 2:
        raise ValueError(f"expected an (n, d) array, got shape {x.shape}")
    cpus = _ray_cpus()
    if cpus > 1 and x.shape[0] >= 2 * cpus and x.size * k >= RAY_MIN_WORK:
        from raypipe.jobs.kmeans_tasks import RayShards
        return RayShards.from_arrays(np.array_split(x, cpus))
    return LocalShards([x])


def _ray_cpus() -> int:
    ray = sys.modules.get("ray")            # never imported here: only a running Ray counts
    if ray is None or not ray.is_initialized():
        return 0
    return int(ray.cluster_resources().get("CPU", 0))


class LocalShards:
    """Shards as in-memory arrays; `map(fn, *args)` calls fn(shard, *args) for each."""

    def __init__(self, shards: list[np.ndarray]):
        self.shards = [np.ascontiguousarray(s, np.float32) for s in shards]
        self.sizes = [len(s) for s in self.shards]
        self.dim = self.shards[0].shape[1]

    def map(self, fn, *args) -> list:
        return [fn(s, *args) for s in self.shards]

    def sample(self, fraction: float, seed: int) -> list[np.ndarray]:
        return self.map(shard_sample, fraction, seed)

    def scan(self, fn, states, *args) -> tuple[list, list]:
        """fn(shard, state, *args) -> (state, result) for each shard, keeping the states."""
        out = [fn(s, st, *args) for s, st in zip(self.shards, states or [None] * len(self.shards))]
        return [o[0] for o in out], [o[1] for o in out]


class Checkpoint:
    """Centroids after every iteration, so an interrupted fit resumes where it stopped."""

    def __init__(self, uri: str | None):
        self.uri = uri

    def load(self, k: int, d: int):
        if not self.uri:
            return None
        fs, path = rio.resolve(self.uri)
        if fs.get_file_info(path).type.name == "NotFound":
            return None
        with fs.open_input_stream(path) as f:
            z = np.load(io.BytesIO(f.read()))
            state = {name: z[name] for name in z.files}
        if state["centroids"].shape != (k, d):
            raise ValueError(f"checkpoint {self.uri} holds centroids of shape "
                             f"{state['centroids'].shape}, expected {(k, d)}")
        return state

    def save(self, **state) -> None:
        if not self.uri:
            return
        buf = io.BytesIO()
        np.savez(buf, **state)
        fs, path = rio.resolve(self.uri)
        with fs.open_output_stream(path + ".tmp") as f:
            f.write(buf.getvalue())
        fs.move(path + ".tmp", path)           # a reader never sees half a checkpoint


class KMeans:
    """scikit-learn's vocabulary. `fit(x)`: x is an (n, d) float32 array (sharded over a
    running Ray when large, see `as_shards`) or a shards object (`LocalShards`,
    `jobs.kmeans_tasks.RayShards`)."""

    def __init__(self, n_clusters: int = 8, *, init="k-means||", n_init: int = 1,
                 max_iter: int = 50, tol: float = 1e-4, random_state: int | None = None,
                 spherical: bool = False, sample_size: int = 100_000,
                 checkpoint_path: str | None = None):
        if n_clusters < 1 or n_init < 1 or max_iter < 1:
            raise ValueError(f"n_clusters={n_clusters}, n_init={n_init}, max_iter={max_iter} "
                             f"should all be >= 1")
        self.n_clusters, self.init, self.n_init = n_clusters, init, n_init
        self.max_iter, self.tol, self.random_state = max_iter, tol, random_state
        self.spherical, self.sample_size = spherical, sample_size
        self.checkpoint = Checkpoint(checkpoint_path)

    def fit(self, x) -> "KMeans":
        shards = as_shards(x, self.n_clusters)
        self.n_shards_ = len(shards.sizes)
        n, k = sum(shards.sizes), self.n_clusters
        if n < k:
            raise ValueError(f"n_samples={n} should be >= n_clusters={k}")
        shards.map(check_finite)
        rng = np.random.default_rng(self.random_state)
        sample = self._sample(shards, rng)
        tol = self.tol * float(sample.var(0).mean())
        state = self.checkpoint.load(k, shards.dim)
        best, start = None, 0
        if state is not None:
            start = int(state["run"])
            best = (state["best"], float(state["best_inertia"]), int(state["best_iter"])) \
                if state["best_inertia"] >= 0 else None
            log.info("k-means: resuming run %d at iteration %d", start, int(state["iteration"]))
        for run in range(start, self.n_init):
            seeds = self._init(shards, sample, rng)   # drawn even when resumed: same rng path
            resume = state if state is not None and run == start else None
            centroids, n_iter, states = self._run(shards, seeds, tol, rng, run, best, resume)
            final = shards.scan(shard_labels, states, centroids)[1]
            inertia = sum(f[1] for f in final)
            log.info("k-means run %d: inertia %.4f after %d iterations", run, inertia, n_iter)
            if best is None or inertia < best[1]:
                best = (centroids, inertia, n_iter, [f[0] for f in final])
        self.cluster_centers_, self.inertia_, self.n_iter_ = best[:3]
        self.labels_ = np.concatenate(best[3]) if len(best) > 3 else \
            np.concatenate(shards.map(shard_predict, self.cluster_centers_))
        return self

    def _sample(self, shards, rng) -> np.ndarray:
        """About `sample_size` rows (at least 20 per cluster) in an order fixed by their
        contents, so the same data and seed give the same result however it is sharded."""
        n = sum(shards.sizes)
        want = max(self.sample_size, 20 * self.n_clusters)
        seed = int(rng.integers(2**31))
        rows = np.concatenate(shards.sample(min(1.0, want / n), seed))
        if len(rows) < self.n_clusters:
            rows = np.concatenate(shards.sample(1.0, seed))
        return canonical(rows, seed)

    def _init(self, shards, sample: np.ndarray, rng) -> np.ndarray:
        if isinstance(self.init, np.ndarray):
            if self.init.shape != (self.n_clusters, shards.dim):
                raise ValueError(f"init shape {self.init.shape} should be "
                                 f"{(self.n_clusters, shards.dim)}")
            return self.init.astype(np.float32)
        if self.init == "random":
            return sample[rng.choice(len(sample), self.n_clusters, replace=False)].copy()
        if self.init == "k-means++":
            return kmeans_plus_plus(sample, self.n_clusters, rng)
        if self.init == "k-means||":
            return kmeans_parallel(shards, self.n_clusters, rng, sample_size=self.sample_size)
        raise ValueError(f"init={self.init!r} should be 'k-means||', 'k-means++', 'random' "
                         f"or an array")

    def _run(self, shards, centroids, tol, rng, run, best, resume):
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
            self.checkpoint.save(centroids=centroids, iteration=it, run=run,
                                 rng=np.frombuffer(repr(rng.bit_generator.state).encode(),
                                                   np.uint8),
                                 best=best[0] if best else centroids,
                                 best_inertia=best[1] if best else -1.0,
                                 best_iter=best[2] if best else 0)
            if shift <= tol:      # tol=0: stops exactly when no label changes
                break
        return centroids, it, states

    def predict(self, x: np.ndarray) -> np.ndarray:
        return shard_predict(np.asarray(x, np.float32), self.cluster_centers_)

    def fit_predict(self, x) -> np.ndarray:
        return self.fit(x).labels_


def _rng_state(state) -> dict:
    import ast
    return ast.literal_eval(bytes(state["rng"]).decode())
