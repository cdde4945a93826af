"""Which segment tree: Ward over K-means micro-segments, bisecting over them, or
anchored (Ward within flat K-means' segments at --main), or scikit-learn's BisectingKMeans
on the users, each against flat K-means at every level.

    python bench/hierarchy_bench.py --users RUN/user_embeddings.parquet [--truth users.parquet]
    python bench/hierarchy_bench.py --blobs        # unequal Gaussian blobs, truth known

At each level L (default 2 4 8 16 32; the finest is the micro-segments), per method: the
users' inertia over flat K-means' at L (1.0 = as tight as a flat fit, which is not bound by
a tree), the adjusted Rand index to the planted truth where there is one, and stability
(ARI between the method's segments from seeds 0 and 1). Prints one JSON line per
(data, method, level). Also the seconds each tree takes on top of the micro-segments' fit.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def user_vectors(path: str, truth: str | None):
    import pandas as pd
    import pyarrow.dataset as ds

    from raypipe.arrays import to_numpy
    table = ds.dataset(path).to_table()
    column = "segment_vector" if "segment_vector" in table.column_names else "vector"
    x, ids = to_numpy(table[column]), table["user_id"].to_pandas()
    if not truth:
        return x, None
    planted = pd.read_parquet(truth).set_index("user_id")["true_segment"]
    return x, planted.reindex(ids).to_numpy()


def blobs(seed=0, n=20_000, d=32, k=12, spread=2.5):
    rng = np.random.default_rng(seed)
    sizes = (rng.dirichlet(np.full(k, 1.5)) * n).astype(int) + 50
    centres = rng.normal(size=(k, d)) * spread
    y = np.repeat(np.arange(k), sizes)
    return (centres[y] + rng.normal(size=(len(y), d))).astype(np.float32), y


def inertia(x, labels):
    return float(sum(((x[labels == s] - x[labels == s].mean(0)) ** 2).sum()
                     for s in np.unique(labels)))


def segmentations(x, levels, seed, main):
    """-> {method: {level: labels}}, {method: seconds beyond the micro-segments}."""
    from sklearn.cluster import BisectingKMeans

    from raypipe.segments import tree
    from raypipe.segments.kmeans import KMeans
    out, seconds = {"flat": {}, "sklearn-bisecting": {}}, {}
    for level in levels:
        out["flat"][level] = KMeans(level, n_init=3, random_state=seed).fit(x).labels_
        t = time.perf_counter()
        out["sklearn-bisecting"][level] = BisectingKMeans(
            level, random_state=seed, bisecting_strategy="largest_cluster").fit(x).labels_
        seconds["sklearn-bisecting"] = seconds.get("sklearn-bisecting", 0) + \
            time.perf_counter() - t
    micro = KMeans(levels[-1], n_init=3, random_state=seed).fit(x)
    sizes = np.bincount(micro.labels_, minlength=levels[-1])
    anchors = tree.leaf_anchors(micro.labels_, out["flat"][main], levels[-1])
    for method in tree.TREES:
        t = time.perf_counter()
        paths = tree.build(micro.cluster_centers_, sizes, levels, method, anchors)
        seconds[method] = time.perf_counter() - t
        out[method] = {lv: paths[micro.labels_, j] for j, lv in enumerate(levels)}
    return out, seconds


def main() -> None:
    from sklearn.metrics import adjusted_rand_score as ari
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", help="a run's user_embeddings.parquet")
    p.add_argument("--truth", help="the planted users.parquet of a synthetic run")
    p.add_argument("--blobs", action="store_true")
    p.add_argument("--levels", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--name", default=None)
    p.add_argument("--main", type=int, default=8, help="the anchored tree's main level")
    args = p.parse_args()
    x, y = blobs() if args.blobs else user_vectors(args.users, args.truth)
    keep = np.random.default_rng(0).permutation(len(x))[:args.rows]
    x, y = x[keep], (y[keep] if y is not None else None)
    levels = tuple(sorted(args.levels))
    runs = [segmentations(x, levels, seed, args.main) for seed in (0, 1)]
    name = args.name or ("blobs" if args.blobs else args.users)
    for method in runs[0][0]:
        for level in levels:
            a, b = runs[0][0][method][level], runs[1][0][method][level]
            row = {"data": name, "rows": len(x), "method": method, "level": level,
                   "inertia_vs_flat": round(inertia(x, a) / inertia(x, runs[0][0]["flat"][level]), 4),
                   "stability_ari": round(ari(a, b), 4),
                   "seconds": round(runs[0][1].get(method, 0.0), 3)}
            if y is not None:
                row["truth_ari"] = round(ari(y, a), 4)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
