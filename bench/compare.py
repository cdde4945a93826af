"""One comparison table per dataset: baselines, pooled and text vectors, segments, an id-only
SASRec-style model trained by the same loop, and the sequence encoder.

    .venv/bin/python bench/compare.py amazon-scientific            # all variants
    .venv/bin/python bench/compare.py amazon-beauty --skip text    # leave a variant out

Each variant is one `raypipe run` with `--holdout last` (leave-one-out, full ranking); the
figures are recomputed from its `recommendations.parquet` (bench/recompute_metrics.py does
the same alone). Prints a markdown table and one JSON line with every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import pyarrow.compute as pc

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "..", "shared", "data")
DATASETS = {
    "amazon-beauty": ["--source", "amazon-p5", "--input", f"{DATA}/amazon-beauty"],
    "amazon-scientific": ["--source", "recbole", "--input", f"{DATA}/amazon-scientific"],
    "online-retail": ["--source", "online-retail", "--input",
                      f"{DATA}/online-retail/online_retail.parquet",
                      "--set", "sequences.dedup_items=true", "--set", "sequences.min_length=5"],
}
# variant -> (extra arguments, {row name: strategy in that run})
VARIANTS = {
    "encoder": ([], {"encoder (vector)": "vector",
                     "encoder + segment + co-occurrence (blend, fitted)": "blend",
                     "segment (encoder vectors)": "segment",
                     "most popular": "most_popular", "item-to-item co-occurrence": "cooccurrence"}),
    "pooled": (["--set", "user_repr=pooled"], {
        "pooled BERT vectors": "vector",
        "pooled + segment + co-occurrence (blend, fitted)": "blend",
        "segment (pooled vectors)": "segment"}),
    # Id-only models start from random vectors and sit on a plateau for the first epochs:
    # with the default patience of 3 they stop there (amazon-scientific: 5 epochs, Recall@10
    # 0.026); with 10 they train on (75 epochs, 0.117).
    "sasrec": (["--set", "encoder.text=false", "--set", "encoder.patience=10"],
               {"SASRec, id only (same loop, patience 10)": "vector"}),
    "text": (["--set", "user_repr=text"], {"sequence as text": "vector"}),
}


def run_variant(dataset: str, variant: str, root: str) -> dict:
    from raypipe.run.artifacts import read_manifest, read_table
    from raypipe.recommend.metrics import metrics_from_recs
    out = os.path.join(root, f"{dataset}-{variant}")
    cmd = [os.path.join(os.path.dirname(sys.executable), "raypipe"), "run",
           *DATASETS[dataset], *VARIANTS[variant][0], "--holdout", "last", "--output", out]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = round(time.perf_counter() - start, 1)
    manifest = read_manifest(out)
    seqs = read_table(out, "sequences").select(["user_id", "target_item", "too_short"])
    seqs = seqs.filter(pc.invert(seqs["too_short"])).select(["user_id", "target_item"])
    recomputed = metrics_from_recs(read_table(out, "recommendations"), seqs, (10, 20))
    printed = manifest["metrics"]["strategies"]
    for name, m in recomputed.items():
        if m != printed[name]:
            raise AssertionError(f"{variant}/{name}: recomputed {m} != printed {printed[name]}")
    return {"seconds": seconds, "strategies": printed, "encoder": manifest.get("encoder"),
            "stage_seconds": manifest["seconds"]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--skip", nargs="*", default=[], choices=sorted(VARIANTS))
    p.add_argument("--root", default="/tmp/raypipe-compare")
    a = p.parse_args()
    runs = {v: run_variant(a.dataset, v, a.root) for v in VARIANTS if v not in a.skip}
    rows = [(label, runs[v]["strategies"][s]) for v in runs for label, s in VARIANTS[v][1].items()]
    print(f"\n| {a.dataset} | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 |\n|---|---|---|---|---|")
    for label, m in rows:
        print(f"| {label} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {m['recall@20']:.4f} "
              f"| {m['ndcg@20']:.4f} |")
    print(json.dumps({"bench": "compare", "dataset": a.dataset, "runs": runs}))


if __name__ == "__main__":
    main()
