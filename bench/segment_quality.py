"""Segment quality of finished runs, side by side: silhouette over the vectors the segments
were made from (encoder: `segment_vector`; pooled/text: `vector`), category purity where
the item texts hold categories, stability across seeds, and the `segment` strategy's
NDCG@10 over most-popular (from the run's metrics).

    .venv/bin/python bench/segment_quality.py ARTIFACTS [ARTIFACTS ...] [--sample 5000]
        [--k K] [--category-part -2 --category-words 3]

- silhouette (scikit-learn, Euclidean, as K-means minimises) on a seeded sample of users;
- purity: each user's items' categories (event-weighted) summed per segment; a segment's
  purity is its most common category's share; the run's is the size-weighted mean, beside
  the same share over all users (what a single segment would score). The category is the
  `--category-part`-th ". "-separated part of the item text (amazon-scientific's texts are
  title. categories. brand), its first `--category-words` words after the store's name;
- stability: adjusted Rand index between K-means fits with seeds 0 and 1 at the run's K;
- `--k K`: the same measures for a fresh K-means at K on the run's vectors (no NDCG).
Prints one JSON line per run.
"""
from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np


def category(text: str, part: int, words: int) -> str:
    parts = [p for p in (text or "").split(". ")]
    if len(parts) < abs(part) + 1:
        return ""
    tokens = parts[part].split()
    if tokens[:3] == ["Industrial", "&", "Scientific"]:
        tokens = tokens[3:]
    return " ".join(tokens[:words])


def purity(labels: np.ndarray, histories: list, item_category: dict) -> tuple[float, float]:
    """-> (size-weighted mean of each segment's top-category share, the same overall)."""
    per: dict = {}
    overall: Counter = Counter()
    for s, items in zip(labels, histories):
        counts = Counter(item_category.get(i, "") for i in items)
        counts.pop("", None)
        per.setdefault(int(s), Counter()).update(counts)
        overall.update(counts)
    total = sum(sum(c.values()) for c in per.values()) or 1
    mean = sum(max(c.values(), default=0) for c in per.values()) / total
    return mean, max(overall.values(), default=0) / (sum(overall.values()) or 1)


def measure(path: str, args) -> dict:
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    from raypipe.arrays import to_numpy
    from raypipe.run.artifacts import read_manifest, read_table
    from raypipe.segments.kmeans import KMeans
    manifest = read_manifest(path)
    users = read_table(path, "user_embeddings")
    column = "segment_vector" if "segment_vector" in users.column_names else "vector"
    x, ids = to_numpy(users[column]), users["user_id"].to_pylist()
    k = args.k or manifest["kmeans"]["n_clusters"]
    fits = [KMeans(k, n_init=3, random_state=seed).fit(x).labels_ for seed in (0, 1)]
    if args.k:
        labels = fits[0]
    else:
        seg = read_table(path, "profiles").to_pandas().set_index("user_id")["segment"]
        labels = seg.loc[ids].to_numpy()
    rows = np.random.default_rng(0).permutation(len(x))[: args.sample]
    out = {"artifacts": path, "user_repr": manifest["config"]["user_repr"], "k": int(k),
           "refit": bool(args.k), "sizes": np.bincount(labels).tolist(),
           "largest_share": round(float(np.bincount(labels).max() / len(labels)), 3),
           "silhouette": round(float(silhouette_score(x[rows], labels[rows])), 4),
           "stability_ari": round(float(adjusted_rand_score(*fits)), 4)}
    if args.category_words:
        items = read_table(path, "items").to_pandas()
        cats = {i: category(t, args.category_part, args.category_words)
                for i, t in zip(items.item_id, items.text)}
        seqs = read_table(path, "sequences").to_pandas().set_index("user_id")["item_ids"]
        got, base = purity(labels, [list(seqs.loc[u]) for u in ids], cats)
        out.update(purity=round(got, 4), purity_one_segment=round(base, 4),
                   categories=len(set(cats.values()) - {""}))
    strategies = (manifest.get("metrics") or {}).get("strategies") or {}
    if not args.k and "segment" in strategies:
        out["segment_ndcg@10"] = strategies["segment"].get("ndcg@10")
        out["most_popular_ndcg@10"] = strategies.get("most_popular", {}).get("ndcg@10")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="+")
    p.add_argument("--sample", type=int, default=5000)
    p.add_argument("--k", type=int, default=None, help="refit K-means at this K")
    p.add_argument("--category-part", type=int, default=-2)
    p.add_argument("--category-words", type=int, default=0, help="0: no purity")
    args = p.parse_args()
    for path in args.artifacts:
        print(json.dumps(measure(path, args)), flush=True)


if __name__ == "__main__":
    main()
