"""Faithfulness of recommendation explanations (issue 23) on a finished run.

    .venv/bin/python bench/explain_bench.py ARTIFACTS [--users 300] [--seed 0]
        [--occlusion 5]

For a seeded sample of users with at least 3 distinct history items, each of their `vector`
and `blend` recommendations is explained by each attribution method below, which cites one
history item. The cited item is then removed from the history (every event of it) and the
recommendation's score recomputed from the shortened history, the same way the service
scores it (query, segment, co-occurrence); likewise for one history item drawn at random
among the others. A method is faithful on a recommendation when removing its item lowers
the score more than removing the random one; by rank likewise (the item's place among all
items falls further), with the share of ties (both removals leave its rank as it was, or
move it equally) printed beside.

Methods: `raypipe` (recommend/explain.py: exact occlusion for pooled users, the score
drops of the shortened histories, and for `blend` the blended score's drop among the items
that support its largest component; occlusion of the last `--occlusion` events for encoder
users), `nearest` (the
history item whose vector is closest to the recommended item's, a common proxy), `latest`
(the most recent history item). Prints one JSON line per method and strategy with the share
of recommendations where it beat the random removal, by score and by rank, and the cost of
explaining (seconds per 1,000 users, raypipe's way, against recommending alone).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

from raypipe.recommend.attribution import REASONS


def score_items(service, rows: np.ndarray, types: list, items: np.ndarray, strategy: str):
    """The scores `strategy` gives catalogue rows `items` for a history (rows, types), and
    their ranks among all catalogue items (0 = best)."""
    from raypipe.segments.profiles import nearest_segments
    rec = service.recommender
    user = service.users.encode([rows], [types])
    query, taste = user.query, user.taste
    vector = (rec.item_vectors @ query[0]).astype(np.float64)
    total = vector
    if strategy == "blend":
        a, b = rec.blend_weights
        seg = nearest_segments(taste, service.segmentation)[0][0]
        seg_score = np.zeros(len(vector))
        r, s = rec.seg_rows[seg], rec.seg_scores[seg]
        seg_score[r[r >= 0]] = s[r >= 0]
        co = np.zeros(len(vector))
        if rec.followers is not None:
            co = rec.followers.scores([rows], rec.cfg.cooccurrence_recent).toarray()[0]
        total = vector + a * seg_score + b * co
    ranks = np.argsort(np.argsort(-total, kind="stable"), kind="stable")
    return total[items], ranks[items]


def methods(service, rows, types, ranked_rows, explained, strategy) -> dict:
    """-> {method: (k,) cited catalogue row per recommendation, -1 where none}."""
    first = explained.because[0, :, 0]
    space = service.recommender.item_vectors
    hist = np.unique(rows)
    sims = space[ranked_rows] @ space[hist].T                         # (k, m)
    nearest = hist[np.argmax(sims, axis=1)]
    latest = np.full(len(ranked_rows), rows[-1])
    return {"raypipe": first, "nearest": nearest, "latest": latest}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("artifacts")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--occlusion", type=int, default=5)
    args = p.parse_args(argv)
    from raypipe.recommend.inputs import evidence, purchased
    from raypipe.run.artifacts import Folder
    from raypipe.run.versions import current_run
    from serve.service import ProfileService
    service = ProfileService(args.artifacts)
    r = dataclasses.replace(service.cfg.recommend, explain_occlusion=args.occlusion)
    seqs = Folder(current_run(args.artifacts)).read("sequences",
                                                    ["user_id", "item_ids", "event_types"])
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(seqs.num_rows)
    rec, results, cost = service.recommender, {}, {"explain": 0.0, "plain": 0.0}
    done = 0
    for i in order:
        if done >= args.users:
            break
        ids, types = seqs["item_ids"][int(i)].as_py(), seqs["event_types"][int(i)].as_py()
        if seqs["user_id"][int(i)].as_py() not in service.user_index:
            continue
        rows = np.array([service.item_index.get_loc(x) for x in ids], np.int64)
        if len(np.unique(rows)) < 3:
            continue
        done += 1
        user = service.users.encode([rows], [types])
        seg = service.segmentation.nearest(user.taste)[0]
        exclude = purchased([rows], [types], r.exclude_purchased)
        t = time.perf_counter()
        rec.recommend(user.query, seg, exclude, strategies=("vector", "blend"),
                      history=[rows])
        cost["plain"] += time.perf_counter() - t
        t = time.perf_counter()
        ev = evidence([rows], [types], service.users, seg, service.segmentation,
                      service.item_segment, service.cfg.user, r,
                      service.cfg.profiles.top_interests, service.space)
        ranked, explained = rec.recommend(user.query, seg, exclude,
                                          strategies=("vector", "blend"), history=[rows],
                                          evidence=ev)
        cost["explain"] += time.perf_counter() - t
        for strategy in ("vector", "blend"):
            got = ranked[strategy].rows[0]
            got = got[got >= 0]
            base, base_rank = score_items(service, rows, types, got, strategy)
            cited = methods(service, rows, types, got, explained[strategy], strategy)
            for c, item in enumerate(got):
                others = [h for h in np.unique(rows)]
                for name, pick in cited.items():
                    if pick[c] < 0:
                        continue
                    random_item = rng.choice([h for h in others if h != pick[c]])
                    drops = []
                    for removed in (pick[c], random_item):
                        keep = rows != removed
                        s, rk = score_items(service, rows[keep],
                                            [x for x, k in zip(types, keep) if k],
                                            np.array([item]), strategy)
                        drops.append((base[c] - s[0], rk[0] - base_rank[c]))
                    keys = [(name, strategy)]
                    if name == "raypipe":
                        why = REASONS[int(explained[strategy].reason[0, c])]
                        keys.append((name, f"{strategy}:{why}"))
                    for key in keys:
                        count(results, key, drops)
    report(results, done, args, service, cost)
    return 0


def count(results: dict, key, drops) -> None:
    tally = results.setdefault(key, {"n": 0, "score": 0, "rank": 0, "rank_tied": 0})
    tally["n"] += 1
    tally["score"] += drops[0][0] > drops[1][0]
    tally["rank"] += drops[0][1] > drops[1][1]
    tally["rank_tied"] += drops[0][1] == drops[1][1]


def report(results: dict, done: int, args, service, cost: dict) -> None:
    for (name, strategy), t in sorted(results.items()):
        print(json.dumps({"bench": "explain_faithfulness", "artifacts": args.artifacts,
                          "user_repr": service.cfg.user_repr, "method": name,
                          "strategy": strategy, "recommendations": t["n"], "users": done,
                          "beats_random_by_score": round(t["score"] / max(t["n"], 1), 4),
                          "beats_random_by_rank": round(t["rank"] / max(t["n"], 1), 4),
                          "rank_tied": round(t["rank_tied"] / max(t["n"], 1), 4)}))
    print(json.dumps({"bench": "explain_cost", "artifacts": args.artifacts, "users": done,
                      "occlusion": args.occlusion if service.cfg.user_repr == "encoder" else 0,
                      "seconds_per_1000_users_plain": round(1000 * cost["plain"] / done, 3),
                      "seconds_per_1000_users_explained": round(1000 * cost["explain"] / done,
                                                                3),
                      "ratio": round(cost["explain"] / max(cost["plain"], 1e-9), 3)}))


if __name__ == "__main__":
    raise SystemExit(main())
