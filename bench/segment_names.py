"""Do a run's segment names match their representative items? For each segment: its name
(the first 3 distinctive terms, c-TF-IDF over the items its users hold, as the pipeline
names it) and its top items chosen two ways, by raw popularity in the segment (the old
rule) and by lift among its 50 most popular items (segments/profiles.representative_items,
the current rule). Agreement:
the share of a segment's top items whose text holds at least one of its name's terms,
averaged over segments weighted by size.

    python bench/segment_names.py ARTIFACTS [ARTIFACTS ...] [--top 10]

Reads profiles, sequences and items of each run (no Ray); one JSON line per run.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from raypipe.config import UserConfig
from raypipe.run.artifacts import Folder
from raypipe.run.versions import current_run
from raypipe.segments.profiles import distinctive_terms, representative_items, tokenize
from raypipe.vectors.pooling import history_weights


def segment_mass(art: Folder) -> tuple[dict, list[str], np.ndarray]:
    """-> (segment -> {item row: event weight}, item texts, segment sizes)."""
    items = art.read("items", ["item_id", "text"])
    row = pd.Index(items["item_id"].to_numpy(zero_copy_only=False))
    prof = art.read("profiles", ["user_id", "segment"]).to_pandas()
    seqs = art.read("sequences", ["user_id", "item_ids", "event_types"])
    seg_of = pd.Series(prof.segment.to_numpy(), index=prof.user_id)
    segment = seg_of.reindex(seqs["user_id"].to_numpy(zero_copy_only=False)).to_numpy()
    weights = history_weights(seqs["event_types"], UserConfig())
    mass: dict[int, dict[int, float]] = {int(s): {} for s in np.unique(prof.segment)}
    for s, ids, w in zip(segment, seqs["item_ids"].to_pylist(), weights):
        if not np.isfinite(s):
            continue
        bucket = mass[int(s)]
        for r, x in zip(row.get_indexer(ids), w):
            if r >= 0:
                bucket[r] = bucket.get(r, 0.0) + float(x)
    sizes = prof.segment.value_counts().sort_index()
    return mass, items["text"].to_pylist(), sizes.to_numpy()


def agreement(mass: dict, texts: list[str], sizes: np.ndarray, top: int) -> dict:
    names = distinctive_terms(mass, texts, 3)
    out = {}
    for how in ("popular", "lift"):
        chosen = representative_items(mass, top, how)
        per = [np.mean([bool(set(names[s]) & set(tokenize(texts[r] or ""))) for r in rows])
               if rows else 0.0 for s, rows in sorted(chosen.items())]
        out[how] = {"weighted": round(float(np.average(per, weights=sizes)), 4),
                    "per_segment": [round(float(p), 3) for p in per]}
    out["names"] = [" / ".join(names[s]) for s in sorted(names)]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifacts", nargs="+")
    p.add_argument("--top", type=int, default=10)
    args = p.parse_args()
    for artifacts in args.artifacts:
        mass, texts, sizes = segment_mass(Folder(current_run(artifacts)))
        print(json.dumps({"bench": "segment-names", "artifacts": artifacts, "top": args.top,
                          "segments": len(sizes), **agreement(mass, texts, sizes, args.top)}))


if __name__ == "__main__":
    main()
