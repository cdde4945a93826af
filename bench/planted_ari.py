"""Adjusted Rand index between the segments a run found and the planted ones.

    raypipe generate --users 20000 --segments 8 --out data/planted
    raypipe run --input data/planted/events.parquet --items data/planted/items.parquet \
        --output artifacts-planted
    python bench/planted_ari.py data/planted artifacts-planted

Prints one JSON line with the ARI (goal >= 0.8) and the users compared.
"""
import json
import os
import sys

import pandas as pd
from sklearn.metrics import adjusted_rand_score
from raypipe.run.versions import current_run


def main(data: str, artifacts: str) -> None:
    truth = pd.read_parquet(os.path.join(data, "users.parquet"))
    found = pd.read_parquet(os.path.join(current_run(artifacts), "profiles.parquet"),
                            columns=["user_id", "segment"])
    merged = found.merge(truth, on="user_id")
    ari = adjusted_rand_score(merged.true_segment, merged.segment)
    print(json.dumps({"ari": round(float(ari), 4), "users": len(merged),
                      "goal": 0.8, "ratio_to_goal": round(float(ari) / 0.8, 3)}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
