"""raypipe's K-means beside faiss.Kmeans and scikit-learn KMeans, same data, same process.

    .venv/bin/python bench/kmeans_bench.py                 # 500,000 x 128, k=256, 20 iterations
    .venv/bin/python bench/kmeans_bench.py --n 100000 --skip-sklearn   # quicker

Every method runs exactly `--iters` Lloyd iterations from its own seeding (tol=0, no early
stop, no subsampling: faiss's max_points_per_centroid is raised). raypipe runs with Ray
started, its workers warmed by one small fit, and the data held as shards in the object
store (`--shards`, default one per CPU); its time includes k-means|| seeding, which faiss
(random seeding) and scikit-learn (k-means++ inside its time) do differently.
Prints one JSON line: seconds and inertia per method, and raypipe's time ratio to each peer.

With `--seeds N` every method is run with seeds 0..N-1 on the same data (the data's seed
stays `--seed`); the line then gives each method's per-seed inertias and times, their means,
and the ratios of the means, so a quality comparison is not one draw of the seeding.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def make_data(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    """Gaussian mixture with k centres: structured enough for K-means to mean something."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)).astype(np.float32) * 4
    x = centres[rng.integers(k, size=n)] + rng.standard_normal((n, d)).astype(np.float32)
    return np.ascontiguousarray(x, np.float32)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run_raypipe(x, k, iters, shards, seeds, sample_size):
    import ray

    from raypipe.jobs import runtime
    from raypipe.jobs.kmeans_tasks import RayShards
    from raypipe.segments.kmeans import KMeans
    runtime.start()
    # Warm the workers (imports) as on a running cluster; the data goes to the object store
    # before timing, as the pipeline's shards are already there.
    KMeans(4, max_iter=2).fit(RayShards.from_arrays(np.array_split(x[:5000], shards)))
    data = RayShards.from_arrays(np.array_split(x, shards))
    runs = []
    for seed in seeds:
        km = KMeans(k, max_iter=iters, tol=0.0, random_state=seed, sample_size=sample_size)
        seconds, km = timed(lambda: km.fit(data))
        runs.append({"seconds": round(seconds, 2), "inertia": km.inertia_,
                     "iterations": km.n_iter_})
    ray.shutdown()
    return {**summarise(runs), "shards": shards}


def run_faiss(x, k, iters, seeds):
    import faiss
    runs = []
    for seed in seeds:
        km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed,
                          max_points_per_centroid=10**9, verbose=False)
        seconds, _ = timed(lambda: km.train(x))
        runs.append({"seconds": round(seconds, 2),
                     "inertia": float(km.index.search(x, 1)[0].sum())})
    return {**summarise(runs), "threads": faiss.omp_get_max_threads()}


def run_sklearn(x, k, iters, seeds):
    from sklearn.cluster import KMeans
    runs = []
    for seed in seeds:
        km = KMeans(k, n_init=1, max_iter=iters, tol=0.0, random_state=seed, algorithm="lloyd")
        seconds, km = timed(lambda: km.fit(x))
        runs.append({"seconds": round(seconds, 2), "inertia": float(km.inertia_),
                     "iterations": km.n_iter_})
    return summarise(runs)


def summarise(runs: list[dict]) -> dict:
    """One run as itself; several as their means plus the per-seed lists."""
    if len(runs) == 1:
        return runs[0]
    out = {key: [r[key] for r in runs] for key in runs[0]}
    out["seconds"] = round(float(np.mean(out.pop("seconds"))), 2)
    out["inertias"] = out.pop("inertia")
    out["inertia"] = float(np.mean(out["inertias"]))
    out["per_seed_seconds"] = [r["seconds"] for r in runs]
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=500_000)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--shards", type=int, default=os.cpu_count())
    p.add_argument("--seed", type=int, default=0, help="data seed, and method seed")
    p.add_argument("--seeds", type=int, default=1,
                   help="run each method with seeds 0..N-1 and compare means")
    p.add_argument("--sample-size", type=int, default=100_000,
                   help="rows raypipe's k-means|| seeds from (KMeans.sample_size)")
    p.add_argument("--skip-sklearn", action="store_true")
    a = p.parse_args()
    x = make_data(a.n, a.d, a.k, a.seed)
    seeds = [a.seed] if a.seeds == 1 else list(range(a.seeds))
    out = {"bench": "kmeans", "n": a.n, "d": a.d, "k": a.k, "iters": a.iters, "seeds": seeds,
           "raypipe": run_raypipe(x, a.k, a.iters, a.shards, seeds, a.sample_size),
           "faiss": run_faiss(x, a.k, a.iters, seeds)}
    if not a.skip_sklearn:
        out["sklearn"] = run_sklearn(x, a.k, a.iters, seeds)
    ours = out["raypipe"]
    for peer in ("faiss", "sklearn"):
        if peer in out:
            out[f"time_ratio_to_{peer}"] = round(ours["seconds"] / out[peer]["seconds"], 3)
            out[f"inertia_ratio_to_{peer}"] = round(ours["inertia"] / out[peer]["inertia"], 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
