"""Recompute leave-one-out metrics from an artifact folder's Parquet files alone (pandas, no
raypipe code), and compare them with the metrics the run printed and wrote.

    python bench/recompute_metrics.py ARTIFACTS

Prints one JSON line: per strategy Recall@K and NDCG@K, and `equal_to_manifest`. A run with
cold items (eval.cold_share; items.parquet's `cold` column) also gets the same over the users
whose held-out item is cold, and over the others.
"""
import json
import math
import os
import sys

import pandas as pd
from raypipe.run.versions import current_run


def recompute(folder: str, ks=(10, 20), targets: str = "all") -> dict:
    """targets: all, cold or warm (the users whose held-out item is, or is not, cold)."""
    folder = current_run(folder)
    seqs = pd.read_parquet(os.path.join(folder, "sequences.parquet"),
                           columns=["user_id", "target_item", "too_short"])
    users = seqs[~seqs.too_short & seqs.target_item.notna()]
    if targets != "all":
        items = pd.read_parquet(os.path.join(folder, "items.parquet"), columns=["item_id", "cold"])
        cold = users.target_item.isin(items.item_id[items.cold])
        users = users[cold if targets == "cold" else ~cold]
    recs = pd.read_parquet(os.path.join(folder, "recommendations.parquet"))
    hits = recs.merge(users, on="user_id")
    hits = hits[hits.item_id == hits.target_item]
    out = {}
    for strategy in sorted(recs.strategy.unique()):     # a strategy with no hit gets zeros
        group = hits[hits.strategy == strategy]
        out[strategy] = {"users": len(users)}
        for k in ks:
            top = group[group["rank"] <= k]["rank"]
            out[strategy][f"recall@{k}"] = round(len(top) / len(users), 6)
            out[strategy][f"ndcg@{k}"] = round(sum(1 / math.log2(r + 1) for r in top)
                                               / len(users), 6)
    return out


def main(folder: str) -> None:
    with open(os.path.join(current_run(folder), "metrics.json")) as f:
        written = json.load(f)
    out = {"artifacts": folder, "recomputed": recompute(folder)}
    equal = all(written["strategies"][s] == m for s, m in out["recomputed"].items())
    for subset in ("cold", "warm"):
        if f"{subset}_targets" in written:
            got = out[f"recomputed_{subset}_targets"] = recompute(folder, targets=subset)
            equal &= all(written[f"{subset}_targets"]["strategies"][s] == m
                         for s, m in got.items())
    print(json.dumps({**out, "equal_to_manifest": equal}))


if __name__ == "__main__":
    main(sys.argv[1])
