"""raypipe's K-means beside faiss.Kmeans and scikit-learn KMeans on several shapes of data.

    .venv/bin/python bench/kmeans_bench.py                       # every synthetic shape
    .venv/bin/python bench/kmeans_bench.py --shapes overlapping,uniform --scale 0.2
    .venv/bin/python bench/kmeans_bench.py --shapes generated_pooled \\
        --users beauty_pooled=OUT/user_embeddings.parquet      # real user vectors too

Shapes (k is what each is clustered with):
  separated    500,000 x 128, 256 well-separated Gaussians, k = 256 (k = true clusters)
  overlapping  500,000 x 128, 64 Gaussians with 3x the noise, k = 256 (4x the true clusters)
  uniform      400,000 x 64 uniform in a ball (no structure), k = 128
  highdim      150,000 x 384 (the text model's width), 32 Gaussians, k = 128
  generated_pooled  pooled MiniLM vectors of 300,000 synthetic users (`raypipe generate`'s
               generator, item titles embedded with the shipped model), k = 64
  NAME=PATH    (--users, repeatable) the `vector` column of a run's user_embeddings.parquet,
               e.g. the pooled and encoder vectors of an amazon-beauty run, k = --users-k

Every method runs exactly `--iters` Lloyd iterations from its own seeding (tol=0, no early
stop, no subsampling: faiss's max_points_per_centroid is raised), one after another in this
process; each reports the best of up to 3 runs, fewer once 5 s are spent (a large shape
runs once). raypipe is called as a user would: `KMeans.fit(array)` with a local Ray running
(its workers warmed by one small fit), so a large array is sharded across Ray's CPUs and a
small one stays in process; its time includes k-means|| seeding and the final labelling.
`lloyd_gflops` is the Lloyd arithmetic (iters x 2nkd) over raypipe's time, `blas_share` that
rate over this machine's sgemm rate measured at the start (a 4096 x 4096 product).
Prints one JSON line per shape, then a summary line with the worst ratios.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

SYNTHETIC = ("separated", "overlapping", "uniform", "highdim")


def mixture(n: int, d: int, centres: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, d)).astype(np.float32) * 4
    x = means[rng.integers(centres, size=n)]
    x += noise * rng.standard_normal((n, d), dtype=np.float32)
    return x


def ball(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x * rng.random((n, 1), dtype=np.float32) ** (1.0 / d)


def generated_pooled(n_users: int, seed: int) -> np.ndarray:
    """Mean of the item-title vectors over each synthetic user's log, unit length."""
    import scipy.sparse as sp

    from raypipe.config import SyntheticConfig
    from raypipe.events.synthetic import CATEGORIES, make_events, make_items
    from raypipe.vectors.embed import Embedder
    rng = np.random.default_rng(seed)
    cfg = SyntheticConfig(users=n_users, events=24 * n_users, seed=seed)
    items = make_items(cfg.items, rng)
    names = list(CATEGORIES)
    category = np.array([names.index(c) for c in items["category"].to_pylist()])
    events, _ = make_events(cfg, category, rng)
    item_vectors = Embedder(device="cpu").encode(items["title"].to_pylist())
    user = np.array([int(u[1:]) for u in events["user_id"].to_pylist()])
    item = np.array([int(i[1:]) for i in events["item_id"].to_pylist()])
    counts = sp.csr_matrix((np.ones(len(user), np.float32), (user, item)),
                           shape=(n_users, cfg.items))
    x = np.asarray(counts @ item_vectors, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def users_table(path: str) -> np.ndarray:
    import pyarrow.parquet as pq

    from raypipe.arrays import to_numpy
    return to_numpy(pq.read_table(path, columns=["vector"])["vector"])


def make_shape(name: str, scale: float, seed: int) -> tuple[np.ndarray, int]:
    n = lambda base: max(1000, int(base * scale))     # noqa: E731
    if name == "separated":
        return mixture(n(500_000), 128, 256, 1.0, seed), 256
    if name == "overlapping":
        return mixture(n(500_000), 128, 64, 3.0, seed), 256
    if name == "uniform":
        return ball(n(400_000), 64, seed), 128
    if name == "highdim":
        return mixture(n(150_000), 384, 32, 1.0, seed), 128
    if name == "generated_pooled":
        return generated_pooled(n(300_000), seed), 64
    raise SystemExit(f"unknown shape {name!r}; shapes: {', '.join(SYNTHETIC)}, "
                     f"generated_pooled, or --users NAME=PATH")


def sgemm_rate() -> float:
    """GFLOP/s of a 4096 x 4096 float32 product on every core (best of 5)."""
    a = np.random.default_rng(0).standard_normal((4096, 4096), dtype=np.float32)
    a @ a
    best = min(_seconds(lambda: a @ a)[0] for _ in range(5))
    return 2 * 4096 ** 3 / best / 1e9


def _seconds(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _best(fn, runs: int = 3, budget_s: float = 5.0):
    """The best of up to `runs` timed calls, stopping once `budget_s` is spent (a large
    shape runs once): -> (seconds, the last call's result). Every method gets the same rule."""
    best, spent, out = float("inf"), 0.0, None
    for _ in range(runs):
        seconds, out = _seconds(fn)
        best, spent = min(best, seconds), spent + seconds
        if spent >= budget_s:
            break
    return best, out


def run_raypipe(x, k, iters, seed):
    from raypipe.segments.kmeans import KMeans
    km = KMeans(k, max_iter=iters, tol=0.0, random_state=seed)
    seconds, km = _best(lambda: km.fit(x))
    return {"seconds": round(seconds, 3), "inertia": km.inertia_, "iterations": km.n_iter_,
            "shards": km.n_shards_}


def run_faiss(x, k, iters, seed):
    import faiss
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, max_points_per_centroid=10**9,
                      verbose=False)
    seconds, _ = _best(lambda: km.train(x))
    return {"seconds": round(seconds, 3), "inertia": float(km.index.search(x, 1)[0].sum())}


def run_sklearn(x, k, iters, seed):
    from sklearn.cluster import KMeans
    km = KMeans(k, n_init=1, max_iter=iters, tol=0.0, random_state=seed, algorithm="lloyd")
    seconds, km = _best(lambda: km.fit(x))
    return {"seconds": round(seconds, 3), "inertia": float(km.inertia_)}


def bench_shape(name, x, k, a, blas) -> dict:
    out = {"bench": "kmeans", "shape": name, "n": len(x), "d": x.shape[1], "k": k,
           "iters": a.iters, "raypipe": run_raypipe(x, k, a.iters, a.seed),
           "faiss": run_faiss(x, k, a.iters, a.seed)}
    if not a.skip_sklearn:
        out["sklearn"] = run_sklearn(x, k, a.iters, a.seed)
    ours = out["raypipe"]
    best = min(out[m]["inertia"] for m in ("raypipe", "faiss", "sklearn") if m in out)
    out["inertia_ratio_to_best"] = round(ours["inertia"] / best, 4)
    for peer in ("faiss", "sklearn"):
        if peer in out:
            out[f"time_ratio_to_{peer}"] = round(ours["seconds"] / out[peer]["seconds"], 3)
    gflops = a.iters * 2 * len(x) * k * x.shape[1] / ours["seconds"] / 1e9
    out.update(lloyd_gflops=round(gflops, 1), sgemm_gflops=round(blas, 1),
               blas_share=round(gflops / blas, 3))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default=",".join(SYNTHETIC + ("generated_pooled",)))
    p.add_argument("--users", action="append", default=[], metavar="NAME=PATH",
                   help="also cluster the vectors of a run's user_embeddings.parquet")
    p.add_argument("--users-k", type=int, default=64)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every synthetic n")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="data seed, and method seed")
    p.add_argument("--skip-sklearn", action="store_true")
    a = p.parse_args()
    from raypipe.jobs import runtime
    from raypipe.segments.kmeans import KMeans
    blas = sgemm_rate()
    runtime.start()
    from raypipe.jobs.kmeans_tasks import RayShards
    warm = np.random.default_rng(0).standard_normal((20_000, 8), dtype=np.float32)
    KMeans(4, max_iter=2).fit(warm)                           # in process: imports
    KMeans(4, max_iter=2).fit(RayShards.from_arrays(np.array_split(warm, 2)))  # workers
    shapes = [(s, None) for s in a.shapes.split(",") if s] + \
        [tuple(u.split("=", 1)) for u in a.users]
    lines = []
    for name, path in shapes:
        x, k = (users_table(path), a.users_k) if path else make_shape(name, a.scale, a.seed)
        lines.append(bench_shape(name, x, k, a, blas))
        print(json.dumps(lines[-1]), flush=True)
    summary = {"bench": "kmeans_summary", "shapes": [line["shape"] for line in lines],
               "worst_time_ratio_to_faiss": max(line["time_ratio_to_faiss"] for line in lines),
               "worst_inertia_ratio_to_best": max(line["inertia_ratio_to_best"]
                                                  for line in lines),
               "sgemm_gflops": round(blas, 1)}
    print(json.dumps(summary))
    import ray
    ray.shutdown()


if __name__ == "__main__":
    main()
