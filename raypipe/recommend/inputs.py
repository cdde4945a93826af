"""What the Recommender is given besides user vectors: segment rankings (from the segments'
item mass, or from `segment_items` in the service), the items each user has purchased, and
`multi`'s interest queries. Knows nothing about Ray or HTTP."""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.config import RecommendConfig, UserConfig
from raypipe.vectors.pooling import event_types_array, history_weights


def segment_rankings(mass: pa.Table, n_segments: int, depth: int) -> list[tuple]:
    """(segment, item_row, weight) -> per segment (item rows, scores in (0, 1]), best first."""
    seg = mass["segment"].to_numpy()
    rows, w = mass["item_row"].to_numpy(), mass["weight"].to_numpy()
    out = []
    for s in range(n_segments):
        sel = np.flatnonzero(seg == s)
        order = sel[np.lexsort((rows[sel], -w[sel]))][:depth]
        top = w[order].max() if len(order) else 1.0
        out.append((rows[order].astype(np.int64), (w[order] / top).astype(np.float32)))
    return out


def segment_items_table(rankings: list[tuple], item_ids) -> pa.Table:
    """Segment rankings -> rows (segment, rank, item_id, score): `segment_items.parquet`,
    which the service loads so that its `segment` strategy is the batch job's."""
    seg, rank, item, score = [], [], [], []
    for s, (rows, scores) in enumerate(rankings):
        seg += [s] * len(rows)
        rank += range(1, len(rows) + 1)
        item += [item_ids[r] for r in rows.tolist()]
        score += scores.tolist()
    return pa.table({"segment": pa.array(seg, pa.int32()), "rank": pa.array(rank, pa.int32()),
                     "item_id": pa.array(item, pa.string()),
                     "score": pa.array(score, pa.float32())})


def segment_rankings_from_table(table: pa.Table, n_segments: int, item_index) -> list[tuple]:
    """`segment_items` rows -> per segment (item rows, scores), best first.
    item_index: pandas.Index of the catalogue's item ids."""
    t = table.sort_by([("segment", "ascending"), ("rank", "ascending")])
    seg = t["segment"].to_numpy()
    rows = item_index.get_indexer(t["item_id"].to_numpy(zero_copy_only=False))
    scores = t["score"].to_numpy()
    return [(rows[seg == s].astype(np.int64), scores[seg == s].astype(np.float32))
            for s in range(n_segments)]


def purchased(histories: list, event_types, exclude_purchased: bool) -> list[set]:
    """Per user the items of `histories` (catalogue rows, or item ids) to leave out of the
    recommendations and of the metrics: the purchased ones, when `exclude_purchased`.
    event_types: a list<string> column or lists of strings, aligned with `histories`."""
    if not exclude_purchased or not len(histories):
        return [set() for _ in histories]
    lists = event_types_array(event_types)
    bought = (pc.equal(lists.flatten(), "purchase").fill_null(False)
              .to_numpy(zero_copy_only=False))
    items = np.concatenate([np.asarray(h) for h in histories if len(h)] or [np.zeros(0)])
    ends = np.cumsum([len(h) for h in histories])
    out = [set() for _ in histories]
    for u, item in zip(np.searchsorted(ends, np.flatnonzero(bought), side="right").tolist(),
                       items[bought].tolist()):
        out[u].add(item)
    return out


def interest_queries(item_index: list[np.ndarray], event_types, item_segment: np.ndarray,
                     item_vectors: np.ndarray, n_segments: int, top: int, user: UserConfig,
                     cfg: RecommendConfig) -> tuple[np.ndarray, np.ndarray]:
    """`multi`'s queries: per user its `top` interests (the segments of its history items,
    weighted by the long-term history weights, as in the profile) and for each the user's
    items of that interest pooled with the recent-intent weights.
    -> (queries (n, top, d), weights (n, top); 0 where a user has fewer interests)."""
    from raypipe.segments.profiles import interests
    n, d = len(item_index), item_vectors.shape[1]
    segs, ws = interests(item_index, history_weights(event_types, user), item_segment,
                         n_segments, top)
    recent = history_weights(event_types, dataclasses.replace(user, half_life=cfg.query_half_life))
    queries, weights = np.zeros((n, top, d), np.float32), np.zeros((n, top), np.float32)
    slot = np.full((n, n_segments), -1, np.int64)
    for u, (s, w) in enumerate(zip(segs, ws)):
        slot[u, s] = np.arange(len(s))
        weights[u, :len(w)] = w
    lengths = np.array([len(ix) for ix in item_index], np.int64)
    if lengths.sum() == 0:
        return queries, weights
    users = np.repeat(np.arange(n), lengths)
    rows = np.concatenate(item_index)
    where = slot[users, item_segment[rows]]
    keep = np.flatnonzero(where >= 0)
    key = users[keep] * top + where[keep]
    order = np.argsort(key, kind="stable")
    key, keep = key[order], keep[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    w = np.concatenate(recent)[keep].astype(np.float32)
    sums = np.add.reduceat(item_vectors[rows[keep]] * w[:, None], starts, axis=0)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    queries.reshape(n * top, d)[key[starts]] = sums / np.maximum(norms, 1e-12)
    return queries, weights


def evidence(rows: list[np.ndarray], event_types, model, segments: np.ndarray,
             segmentation, item_segment: np.ndarray, user: UserConfig, cfg: RecommendConfig,
             top_interests: int, space: np.ndarray, extra_text: np.ndarray | None = None,
             interests_made: tuple | None = None):
    """A batch's explain.Evidence: history rows (into `space`, the catalogue's item vectors
    plus any new items'), each event's weight in a pooled query (None for the encoder),
    its profile weight, the users' segments and the centroids, `multi`'s interests (where
    the caller made `interest_queries`, `interests_made`), and for encoder users with
    recommend.explain_occlusion, the occlusion differences (`extra_text`: the new items'
    text vectors)."""
    from raypipe.recommend.explain import Evidence
    from raypipe.segments.profiles import interests
    recent = history_weights(event_types,
                             dataclasses.replace(user, half_life=cfg.query_half_life))
    pooled = model.kind == "pooled"
    ev = Evidence(history=rows, query_weights=recent if pooled else None, recent_weights=recent,
                  taste_weights=history_weights(event_types, user), segments=segments,
                  centroids=segmentation.centroids if model.kind != "text" else None,
                  space=space, query_half_life=cfg.query_half_life,
                  taste_half_life=user.half_life if pooled else None,
                  segmentation=segmentation if pooled else None)
    if model.kind == "encoder" and cfg.explain_occlusion:
        ev.occlusion = model.occlusion(rows, event_types, cfg.explain_occlusion,
                                       extra_text=extra_text)
    if interests_made is not None:
        segs, _ = interests(rows, ev.taste_weights, item_segment, segmentation.n_segments,
                            top_interests)
        ev.interest_segments, ev.item_segment = segs, item_segment
        ev.interest_queries = interests_made[0]
    return ev
