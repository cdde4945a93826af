"""What choosing K costs: `kmeans.n_clusters=auto`'s sweep (segments/sweep.py, trials as Ray
tasks) beside one K-means fit at the default K on the same vectors, for several K ranges
and local Rays of several CPU counts.

    python bench/sweep_bench.py --users ARTIFACTS/user_embeddings.parquet [--cpus 1 2]
        [--k-max 8 16 32]

Prints one JSON line per (CPUs, K range): the sweep's seconds, its fits, one fit's seconds
at K = 8 (whole sample, in process, same run) and the ratio, and the chosen K.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def user_vectors(path: str, rows: int) -> np.ndarray:
    import pyarrow.dataset as ds

    from raypipe.arrays import to_numpy
    table = ds.dataset(path).to_table()
    column = "segment_vector" if "segment_vector" in table.column_names else "vector"
    x = to_numpy(table[column])
    return x[np.random.default_rng(0).permutation(len(x))[:rows]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", required=True, help="a run's user_embeddings.parquet")
    p.add_argument("--rows", type=int, default=20_000, help="the sweep's sample (default)")
    p.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    p.add_argument("--k-max", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--resamples", type=int, default=4)
    args = p.parse_args()
    import ray

    from raypipe.jobs import runtime
    from raypipe.jobs.sweep import sweep_on_ray
    from raypipe.segments.kmeans import KMeans
    from raypipe.segments.sweep import SweepConfig
    x = user_vectors(args.users, args.rows)
    start = time.perf_counter()
    KMeans(8, random_state=0).fit(x)
    one = time.perf_counter() - start
    for cpus in args.cpus:
        runtime.start(num_cpus=cpus)
        for k_max in args.k_max:
            cfg = SweepConfig(k_min=2, k_max=k_max, resamples=args.resamples)
            result = sweep_on_ray(x, cfg)
            print(json.dumps({"bench": "sweep", "rows": len(x), "dim": int(x.shape[1]),
                              "cpus": cpus, "k_range": [2, k_max], "fits": result["trials"],
                              "seconds": result["seconds"], "one_fit_k8_s": round(one, 2),
                              "ratio_to_one_fit": round(result["seconds"] / one, 1),
                              "chosen_k": result["chosen_k"]}), flush=True)
        ray.shutdown()


if __name__ == "__main__":
    main()
