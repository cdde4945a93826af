"""Two runs' artifacts -> are they the same? Profiles, segments, items, segment rankings and
recommendations (ids and ranks identical, scores within a tolerance), metrics, the blend fit
and the encoder's per-epoch training history. Prints one JSON line; exits 1 on a difference.

    python bench/compare_runs.py OLD_ARTIFACTS NEW_ARTIFACTS [--atol 1e-5]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import pyarrow.parquet as pq
from raypipe.run.versions import current_run

TABLES = {  # table -> (sort keys, float columns compared within atol)
    "profiles": (["user_id"], ["distance", "confidence", "interest_weights"]),
    "segments": (["segment"], ["moved", "changed_share"]),
    "items": (["item_id"], []),
    "segment_items": (["segment", "rank"], ["score"]),
    "recommendations": (["strategy", "user_id", "rank"], ["score"]),
    "item_followers": (["item_id", "follower_id"], []),
}


def _diff(p, q) -> float:
    """Largest absolute difference of two floats or float lists (None/NaN equal to each
    other; different lengths are infinitely apart)."""
    p, q = (np.asarray(np.nan if v is None else v, np.float64).ravel() for v in (p, q))
    if len(p) != len(q):
        return float("inf")
    both_nan = np.isnan(p) & np.isnan(q)
    d = np.where(both_nan, 0.0, np.abs(p - q))
    return float(np.where(np.isnan(d), np.inf, d).max(initial=0.0))


def compare_table(a_dir: str, b_dir: str, name: str, atol: float) -> dict:
    path_a, path_b = (os.path.join(current_run(d), f"{name}.parquet") for d in (a_dir, b_dir))
    if not (os.path.exists(path_a) and os.path.exists(path_b)):
        return {"present": [os.path.exists(path_a), os.path.exists(path_b)]}
    keys, floats = TABLES[name]
    a = pq.read_table(path_a).to_pandas().sort_values(keys).reset_index(drop=True)
    b = pq.read_table(path_b).to_pandas().sort_values(keys).reset_index(drop=True)
    out = {"rows": [len(a), len(b)], "equal": True}
    if len(a) != len(b) or sorted(a.columns) != sorted(b.columns):
        return {**out, "equal": False, "columns": [sorted(a.columns), sorted(b.columns)]}
    for col in a.columns:
        if col in floats:
            diff = max((_diff(p, q) for p, q in zip(a[col], b[col])), default=0.0)
            out[f"max_abs_diff_{col}"] = diff
            out["equal"] &= diff <= atol
        else:
            same = bool((a[col].astype(str) == b[col].astype(str)).all())
            if not same:
                out[f"differs_{col}"] = int((a[col].astype(str) != b[col].astype(str)).sum())
            out["equal"] &= same
    return out


def manifest_part(d: str) -> dict:
    with open(os.path.join(current_run(d), "manifest.json")) as f:
        m = json.load(f)
    blend = {k: v for k, v in (m.get("blend") or {}).items() if k != "grid"}
    enc = m.get("encoder") or {}
    return {"metrics": m.get("metrics"), "kmeans": m.get("kmeans"), "blend": blend,
            "history": [[h["epoch"], h["train_loss"], h["valid_ndcg@10"]]
                        for h in enc.get("history", [])]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--atol", type=float, default=1e-5)
    args = p.parse_args()
    tables = {t: compare_table(args.old, args.new, t, args.atol) for t in TABLES}
    a, b = manifest_part(args.old), manifest_part(args.new)
    same = {k: a[k] == b[k] for k in a}
    ok = all(t.get("equal", True) for t in tables.values()) and all(same.values())
    print(json.dumps({"equal": ok, "tables": tables, "manifest_equal": same,
                      **({} if same["history"] else {"history": [a["history"], b["history"]]}),
                      **({} if same["metrics"] else {"metrics": [a["metrics"], b["metrics"]]})}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
