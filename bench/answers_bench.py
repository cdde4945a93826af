"""Known users' GET answers: read from the batch's table (serve/answers.py) against computed
per request, same process, one thread, no HTTP.

    .venv/bin/python bench/answers_bench.py --artifacts OUT [--users 200]

Loads `ProfileService(OUT)` twice (answers held, and `answers_max_rows=0`), asks both for
the same users, every strategy, k = 3, 10 and `recommend.k`, and prints one JSON line: ms
per request each way and their ratio, each way's load time (after one warm-up load), and
how many answers differ
in anything but float rounding of scores and weights (0 expected).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/bench/", 1)[0])


def _same(a: dict, b: dict) -> bool:
    def plain(r):
        return [{**i, "score": None, "because_weights": None} for i in r["items"]]

    def floats(r):
        return [[i["score"], *i.get("because_weights", [])] for i in r["items"]]

    return plain(a) == plain(b) and {**a, "items": 0} == {**b, "items": 0} and all(
        np.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(floats(a), floats(b)))


def main() -> None:
    from serve.service import ProfileService
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifacts", required=True)
    p.add_argument("--users", type=int, default=200)
    a = p.parse_args()
    ProfileService(a.artifacts)                 # imports and the file cache warmed
    start = time.perf_counter()
    computed = ProfileService(a.artifacts, answers_max_rows=0)
    load_computed = time.perf_counter() - start
    start = time.perf_counter()
    held = ProfileService(a.artifacts)
    load_held = time.perf_counter() - start
    if held.answers is None:
        raise SystemExit(f"{a.artifacts}: its recommendations table is over the default "
                         "answers_max_rows, or missing")
    rng = np.random.default_rng(0)
    users = held.user_index[rng.choice(len(held.user_index), min(a.users, len(held.user_index)),
                                       replace=False)]
    asks = [(u, k, s) for u in users for s in held.cfg.recommend.strategies
            for k in (3, 10, held.cfg.recommend.k)]
    seconds, answers = {}, {}
    for name, service in (("held", held), ("computed", computed)):
        start = time.perf_counter()
        answers[name] = [service.recommend(u, k, s) for u, k, s in asks]
        seconds[name] = time.perf_counter() - start
    differ = sum(not _same(x, y) for x, y in zip(answers["held"], answers["computed"]))
    print(json.dumps({
        "bench": "answers", "artifacts": a.artifacts, "requests": len(asks),
        "held_ms": round(1e3 * seconds["held"] / len(asks), 3),
        "computed_ms": round(1e3 * seconds["computed"] / len(asks), 3),
        "ratio_held_to_computed": round(seconds["held"] / seconds["computed"], 3),
        "load_s_held": round(load_held, 2), "load_s_computed": round(load_computed, 2),
        "answers_differing": differ}))


if __name__ == "__main__":
    main()
