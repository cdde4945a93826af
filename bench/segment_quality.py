"""Segment quality of finished runs, side by side: sizes and silhouette of the segments over
the vectors they were made from (encoder: `segment_vector`; pooled/text: `vector`).

    .venv/bin/python bench/segment_quality.py ARTIFACTS [ARTIFACTS ...] [--sample 5000]

Silhouette (scikit-learn, Euclidean, as K-means minimises) on a seeded sample of users.
Prints one JSON line per run.
"""
from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    from sklearn.metrics import silhouette_score

    from raypipe.run.artifacts import read_manifest, read_table
    from raypipe.arrays import to_numpy
    p = argparse.ArgumentParser()
    p.add_argument("artifacts", nargs="+")
    p.add_argument("--sample", type=int, default=5000)
    a = p.parse_args()
    for path in a.artifacts:
        users = read_table(path, "user_embeddings")
        column = "segment_vector" if "segment_vector" in users.column_names else "vector"
        seg = read_table(path, "profiles").to_pandas().set_index("user_id")["segment"]
        x = to_numpy(users[column])
        labels = seg.loc[users["user_id"].to_pylist()].to_numpy()
        rows = np.random.default_rng(0).permutation(len(x))[: a.sample]
        sizes = np.bincount(labels).tolist()
        print(json.dumps({"artifacts": path,
                          "user_repr": read_manifest(path)["config"]["user_repr"],
                          "column": column, "dim": x.shape[1], "sizes": sizes,
                          "largest_share": round(max(sizes) / len(labels), 3),
                          "silhouette": round(float(silhouette_score(x[rows], labels[rows])), 4),
                          "sample": len(rows)}))


if __name__ == "__main__":
    main()
