"""User vectors + segments -> ranked items per strategy. Knows nothing about Ray or HTTP.

Strategies: `vector` (inner product of the user vector with item vectors, a faiss index),
`segment` (the user's segment's most popular items), `blend` (a weighted sum of both scores
over the union of their candidates). Items a user already purchased are left out by default.
The batch job and the serving layer share `Recommender`.
"""
from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pyarrow as pa

from raypipe.config import RecommendConfig, UserConfig
from raypipe.users import history_weights, pool

RECOMMENDATIONS = pa.schema([("user_id", pa.string()), ("rank", pa.int32()),
                             ("item_id", pa.string()), ("score", pa.float32()),
                             ("strategy", pa.string())])


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


def purchased_rows(item_index: list[np.ndarray], event_types: list[list[str]],
                   exclude_purchased: bool) -> list[set]:
    """Per user the catalogue rows to leave out of the recommendations."""
    if not exclude_purchased:
        return [set() for _ in item_index]
    return [set(np.asarray(rows)[np.asarray(t) == "purchase"].tolist())
            for rows, t in zip(item_index, event_types)]


def query_vectors(user_repr: str, vectors: np.ndarray, item_index: list[np.ndarray],
                  event_types: list[list[str]], user: UserConfig, cfg: RecommendConfig,
                  item_vectors: np.ndarray) -> np.ndarray:
    """What `vector` retrieval asks with: the user's own vector, except for `pooled` users,
    who query with their recent intent (item vectors pooled with `query_half_life`)."""
    if user_repr != "pooled":
        return vectors
    recent = dataclasses.replace(user, half_life=cfg.query_half_life)
    return pool(item_index, history_weights(event_types, recent), item_vectors)


class Recommender:
    """Ranks items for users given their vectors, segments and items to leave out."""

    def __init__(self, item_ids: list[str], item_vectors: np.ndarray,
                 seg_rankings: list[tuple], cfg: RecommendConfig):
        self.item_ids = np.asarray(item_ids, dtype=object)
        self.item_vectors = np.ascontiguousarray(item_vectors, np.float32)
        self.index = faiss.IndexFlatIP(self.item_vectors.shape[1])
        self.index.add(self.item_vectors)
        self.seg_rankings, self.cfg = seg_rankings, cfg
        self.seg_score = [dict(zip(r.tolist(), s.tolist())) for r, s in seg_rankings]

    def recommend(self, vectors: np.ndarray, segments: np.ndarray, exclude: list[set],
                  k: int | None = None, strategies: tuple | None = None
                  ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
        """-> {strategy: per user (item rows, scores)}, k (default cfg.k) best each, best
        first. Asked for fewer than cfg.k, the answer is the prefix of cfg.k's (blend's
        candidates depend on k), so the service always agrees with the batch job."""
        want, n_items = k or self.cfg.k, len(self.item_ids)
        k = max(want, self.cfg.k)
        depth = min(n_items, k + max((len(e) for e in exclude), default=0))
        scores, rows = self.index.search(np.ascontiguousarray(vectors, np.float32), depth)
        out = {s: [] for s in (strategies or self.cfg.strategies)}
        for u in range(len(vectors)):
            vec = self._drop(rows[u], scores[u], exclude[u], k)
            seg_rows, seg_scores = self.seg_rankings[segments[u]]
            seg = self._drop(seg_rows[: k + len(exclude[u])], seg_scores, exclude[u], k)
            if "vector" in out:
                out["vector"].append(vec)
            if "segment" in out:
                out["segment"].append(seg)
            if "blend" in out:
                out["blend"].append(self._blend(vectors[u], segments[u], vec[0], seg[0], k))
        return {s: [(r[:want], sc[:want]) for r, sc in per_user] for s, per_user in out.items()}

    @staticmethod
    def _drop(rows: np.ndarray, scores: np.ndarray, exclude: set, k: int):
        keep = np.array([r >= 0 and r not in exclude for r in rows.tolist()], bool)
        return rows[keep][:k], scores[: len(rows)][keep][:k]

    def _blend(self, vector, segment, vec_rows, seg_rows, k):
        cand = np.unique(np.concatenate([vec_rows, seg_rows]))
        w = self.cfg.blend_weight
        seg_score = self.seg_score[segment]
        score = w * (self.item_vectors[cand] @ vector) + \
            (1 - w) * np.array([seg_score.get(r, 0.0) for r in cand.tolist()], np.float32)
        order = np.lexsort((cand, -score))[:k]
        return cand[order], score[order].astype(np.float32)

    def to_table(self, user_ids: list[str], ranked: dict) -> pa.Table:
        """Recommender output -> rows (user_id, rank, item_id, score, strategy)."""
        cols = {name: [] for name in RECOMMENDATIONS.names}
        for strategy, per_user in ranked.items():
            for user, (rows, scores) in zip(user_ids, per_user):
                n = len(rows)
                cols["user_id"] += [user] * n
                cols["rank"] += range(1, n + 1)
                cols["item_id"] += self.item_ids[rows].tolist()
                cols["score"] += scores.tolist()
                cols["strategy"] += [strategy] * n
        return pa.table(cols, schema=RECOMMENDATIONS)
