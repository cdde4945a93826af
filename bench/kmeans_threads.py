"""An in-process K-means fit with the BLAS held at one thread for the whole fit (the default,
`segments.nearest.own_cores`) against the BLAS left as it is (the fit before 2026-12-04),
same data, same process, alternating.

    .venv/bin/python bench/kmeans_threads.py --users OUT/user_embeddings.parquet [--ray]

Prints one JSON line: seconds per fit (best and worst of --fits) for each, and the ratio of
the bests. --ray starts a local Ray first, as `KMeans.fit(array)` finds one in a job.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--users", required=True, help="a run's user_embeddings.parquet")
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--fits", type=int, default=5)
    p.add_argument("--ray", action="store_true")
    a = p.parse_args()
    from kmeans_bench import users_table
    import raypipe.segments.kmeans as kmeans
    x = users_table(a.users)
    if a.ray:
        from raypipe.jobs import runtime
        runtime.start()
    own = kmeans.own_cores
    ways = {"one_blas_thread": own, "blas_as_is": contextlib.nullcontext}
    times = {w: [] for w in ways}
    kmeans.KMeans(a.k, max_iter=2, tol=0.0, random_state=0).fit(x)        # compile, warm
    for _ in range(a.fits):
        for way, ctx in ways.items():
            kmeans.own_cores = ctx
            start = time.perf_counter()
            kmeans.KMeans(a.k, max_iter=a.iters, tol=0.0, random_state=0).fit(x)
            times[way].append(time.perf_counter() - start)
    kmeans.own_cores = own
    out = {"bench": "kmeans_threads", "n": len(x), "d": x.shape[1], "k": a.k,
           "iters": a.iters, "ray": a.ray,
           **{w: {"best_s": round(min(t), 3), "worst_s": round(max(t), 3)}
              for w, t in times.items()},
           "ratio_best": round(min(times["one_blas_thread"]) / min(times["blas_as_is"]), 3)}
    print(json.dumps(out))
    if a.ray:
        import ray
        ray.shutdown()


if __name__ == "__main__":
    main()
