"""Leave-one-out evaluation over the full catalogue (no sampled negatives).

Metrics are computed from the recommendation rows themselves, so anyone can recompute them
from `recommendations.parquet`. With one held-out item per user, Recall@K is the share of users
whose item is in their top K, and NDCG@K the mean of 1 / log2(rank + 1) over those users.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.recommend.inputs import purchased


def metrics_from_recs(recs: pa.Table, targets: pa.Table, ks=(10, 20)) -> dict:
    """recs: (user_id, rank, item_id, strategy); targets: (user_id, target_item), one row per
    evaluated user -> {strategy: {"recall@K": ..., "ndcg@K": ..., "users": n}}."""
    targets = targets.filter(pc.is_valid(targets["target_item"]))
    n_users = targets.num_rows
    hits = recs.select(["user_id", "rank", "item_id", "strategy"]).join(
        targets.select(["user_id", "target_item"]), "user_id", join_type="inner")
    hits = hits.filter(pc.equal(hits["item_id"], hits["target_item"]))
    out = {}
    for strategy in sorted(set(recs["strategy"].to_pylist())):
        ranks = hits.filter(pc.equal(hits["strategy"], strategy))["rank"].to_numpy()
        out[strategy] = _at_k(ranks, n_users, ks)
    return out


def hit_sums(ranks: np.ndarray, k: int) -> tuple[float, int]:
    """0-based ranks of each user's one target -> (sum of NDCG@k, hits in the top k): the
    one definition of NDCG that the metrics, blend's fit and the encoder's early stopping
    share."""
    ranks = np.asarray(ranks)
    top = ranks[ranks < k]
    return float((1.0 / np.log2(top + 2.0)).sum()), len(top)


def _at_k(ranks: np.ndarray, n_users: int, ks) -> dict:
    """1-based ranks of the found targets -> {users, recall@k, ndcg@k} over n_users."""
    res = {"users": n_users}
    for k in ks:
        ndcg, hits = hit_sums(np.asarray(ranks) - 1, k)
        res[f"recall@{k}"] = round(hits / max(n_users, 1), 6)
        res[f"ndcg@{k}"] = round(ndcg / max(n_users, 1), 6)
    return res


def protocol(exclude_purchased: bool) -> str:
    return ("leave-one-out: last item = test, second last = validation; full ranking over "
            "all items; purchased history items excluded" if exclude_purchased else
            "leave-one-out; full ranking over all items; history not excluded")


def baselines(histories: list[list[str]], event_types: list[list[str]], targets: list,
              ks, exclude_purchased: bool) -> dict:
    """The users' histories and held-out targets -> {most_popular, cooccurrence} metrics,
    each user's purchased items left out when the recommendations leave them out."""
    exclude = purchased(histories, event_types, exclude_purchased)
    return {"most_popular": most_popular(histories, targets, exclude, ks),
            "cooccurrence": cooccurrence(histories, targets, exclude, ks)}


def most_popular(histories: list[list[str]], targets: list, exclude: list[set],
                 ks=(10, 20)) -> dict:
    """Baseline: globally most frequent history items, minus each user's excluded items."""
    values, counts = np.unique(np.concatenate([np.asarray(h, object) for h in histories]
                                              or [np.zeros(0, object)]).astype(str),
                               return_counts=True)
    ranked = values[np.lexsort((values, -counts))].tolist()
    depth = max(ks)
    ranks = []
    for target, excl in zip(targets, exclude):
        if target is None:
            continue
        top = [i for i in ranked[: depth + len(excl)] if i not in excl][:depth]
        if target in top:
            ranks.append(top.index(target) + 1)
    n = sum(t is not None for t in targets)
    return _at_k(np.array(ranks, np.int64), n, ks)


def cooccurrence(histories: list[list[str]], targets: list, exclude: list[set], ks=(10, 20),
                 window: int = 3, recent: int = 3) -> dict:
    """Baseline: item-to-item co-occurrence, counted by recommend/cooccur.py over these
    histories (b follows a within `window` steps); a user's candidates are the followers of
    their `recent` latest items, weighted 1, 1/2, 1/4... from the latest, minus excluded
    items, ties broken by item id."""
    from raypipe.recommend.cooccur import Followers, follower_pairs
    ids, rows = np.unique(np.concatenate([np.asarray(h, object) for h in histories]
                                         or [np.zeros(0, object)]).astype(str),
                          return_inverse=True)
    seqs = np.split(rows.astype(np.int64), np.cumsum([len(h) for h in histories])[:-1])
    followers = Followers.from_pairs(follower_pairs(seqs, len(ids), window), len(ids),
                                     top=max(len(ids), 1))
    scores = followers.scores(seqs, recent, scaled=False)
    depth, ranks = max(ks), []
    for u, (target, excl) in enumerate(zip(targets, exclude)):
        if target is None:
            continue
        lo, hi = scores.indptr[u], scores.indptr[u + 1]
        cols, values = scores.indices[lo:hi], scores.data[lo:hi]
        ranked = cols[np.lexsort((cols, -values))]
        top = [ids[b] for b in ranked.tolist() if ids[b] not in excl][:depth]
        if target in top:
            ranks.append(top.index(target) + 1)
    n = sum(t is not None for t in targets)
    return _at_k(np.array(ranks, np.int64), n, ks)


def adjusted_rand_index(a, b) -> float:
    """Agreement of two labelings of the same items, 1.0 = identical up to renaming,
    about 0 for random labelings (Hubert & Arabie 1985)."""
    _, ai = np.unique(np.asarray(a), return_inverse=True)
    _, bi = np.unique(np.asarray(b), return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), np.int64)
    np.add.at(table, (ai, bi), 1)
    pairs = lambda x: (x * (x - 1) // 2).sum()  # noqa: E731
    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / max(pairs(np.array([len(ai)])), 1)
    top = (rows + cols) / 2
    return 1.0 if top == expected else float((index - expected) / (top - expected))
