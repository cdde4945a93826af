"""User vectors + segments -> ranked items per strategy. Knows nothing about Ray or HTTP.

Strategies: `vector` (inner product of the user vector with item vectors, a faiss index),
`segment` (the user's segment's most popular items), `blend` (the vector score plus weighted
segment and item-to-item co-occurrence scores, over the union of the three lists; the weights
are fitted on validation users, blend.py), `multi` (one query per interest of the user, their
lists merged in proportion to the interests' weights, as PinnerSage does). Items a user
already purchased are left out by default; `max_per_group` caps items per item group.
The batch job and the serving layer share `Recommender`.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from raypipe.config import RecommendConfig
from raypipe.recommend.cooccur import Followers
from raypipe.recommend.index import build_index, index_recall
from raypipe.recommend.ranking import ExcludedRows, Ranked, first_k, lookup, over_cap

RECOMMENDATIONS = pa.schema([("user_id", pa.string()), ("rank", pa.int32()),
                             ("item_id", pa.string()), ("score", pa.float32()),
                             ("strategy", pa.string())])


@dataclasses.dataclass
class BlendParts:
    """`blend`'s candidates for a batch of users, (n, m) each: the union of the vector,
    segment and co-occurrence lists, and each signal's score; ranked by `Recommender.blend`
    for any weights."""
    rows: np.ndarray
    invalid: np.ndarray     # padding and repeats
    vector: np.ndarray
    segment: np.ndarray
    cooccurrence: np.ndarray


class Recommender:
    """Ranks items for users given their vectors, segments and items to leave out, a batch of
    users at a time (numpy over the whole batch; no per-user Python). `blend` adds the
    segment and co-occurrence scores with `blend_weights` (segment, co-occurrence), those
    fitted on validation or set in the config."""

    def __init__(self, item_ids: list[str], item_vectors: np.ndarray,
                 seg_rankings: list[tuple], cfg: RecommendConfig,
                 item_group: np.ndarray | None = None, followers: Followers | None = None,
                 blend_weights: tuple[float, float] | None = None):
        self.item_ids = pa.array(item_ids, pa.string())
        self.item_group = None if item_group is None or not cfg.max_per_group else \
            np.asarray(item_group, np.int64)
        self.item_vectors = np.ascontiguousarray(item_vectors, np.float32)
        self.index = build_index(self.item_vectors, cfg)
        self.seg_rankings, self.cfg, self.followers = seg_rankings, cfg, followers
        self.blend_weights = tuple(blend_weights) if blend_weights is not None else \
            (cfg.blend_segment or 0.0, cfg.blend_cooccurrence or 0.0)
        n_items, depth = len(item_ids), max((len(r) for r, _ in seg_rankings), default=0)
        # Per segment its ranked rows and scores as a padded matrix, and every
        # (segment, row) -> score as sorted keys for blend's lookups.
        self.seg_rows = np.full((len(seg_rankings), depth), -1, np.int64)
        self.seg_scores = np.zeros((len(seg_rankings), depth), np.float32)
        keys, values = [], []
        for s, (r, sc) in enumerate(seg_rankings):
            self.seg_rows[s, :len(r)], self.seg_scores[s, :len(r)] = r, sc
            keys.append(s * n_items + np.asarray(r, np.int64))
            values.append(np.asarray(sc, np.float32))
        keys = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        order = np.argsort(keys, kind="stable")
        self.seg_keys = keys[order]
        self.seg_values = (np.concatenate(values) if values else np.zeros(0, np.float32))[order]

    def recommend(self, vectors: np.ndarray, segments: np.ndarray, exclude: list[set],
                  k: int | None = None, strategies: tuple | None = None,
                  interests: tuple | None = None,
                  history: list[np.ndarray] | None = None, evidence=None):
        """-> {strategy: Ranked}, k (default cfg.k) best each, best first. Asked for fewer
        than cfg.k, the answer is the prefix of cfg.k's (blend's candidates depend on k), so
        the service always agrees with the batch job. `multi` needs `interests`, the
        (queries, weights) of `interest_queries`; `blend`'s co-occurrence needs `history`,
        each user's catalogue rows, oldest first. With `evidence` (explain.Evidence), ->
        ({strategy: Ranked}, {strategy: explain.Explained})."""
        want = k or self.cfg.k
        k = max(want, self.cfg.k)
        strategies = strategies or self.cfg.strategies
        lists = set(strategies) - {"blend"}
        if "blend" in strategies:           # blend's candidates include both lists
            lists |= {"vector", "segment"}
        excluded = ExcludedRows(exclude, len(self.item_ids))
        out, parts = self._lists(vectors, segments, excluded, k, lists, interests), None
        if "blend" in strategies:
            parts = self._blend_parts(vectors, segments, excluded, k, history, out)
            out["blend"] = self.blend(parts, *self.blend_weights, k)
        ranked = {s: out[s].prefix(want) for s in strategies}
        if evidence is None:
            return ranked
        # explained at cfg.k, then cut: a shorter answer's reasons are exactly the prefix
        from raypipe.recommend.explain import explain_all
        why = explain_all(self, {s: out[s] for s in strategies}, evidence, parts)
        return ranked, {s: e.prefix(want) for s, e in why.items()}

    def _lists(self, vectors, segments, excluded: ExcludedRows, k, strategies,
               interests) -> dict[str, Ranked]:
        n_items = len(self.item_ids)
        segments = np.asarray(segments, np.int64)
        out = {}
        if "vector" in strategies:
            depth = min(n_items, self._depth(k) + excluded.most)
            scores, rows = self.index.search(np.ascontiguousarray(vectors, np.float32), depth)
            out["vector"] = first_k(rows, scores, self._drop(rows, excluded), k)
        if "segment" in strategies:
            depth = self._depth(k) + excluded.most
            rows = self.seg_rows[segments, :depth]
            out["segment"] = first_k(rows, self.seg_scores[segments, :depth],
                                     self._drop(rows, excluded), k)
        if "multi" in strategies:
            if interests is None:
                raise ValueError("the multi strategy needs the users' interest queries")
            out["multi"] = self._multi(*interests, excluded, k)
        return out

    def _depth(self, k: int) -> int:
        """Candidates to look at for k answers: more when a group cap may drop some."""
        return k * 4 if self.item_group is not None else k

    def _drop(self, rows: np.ndarray, excluded: ExcludedRows) -> np.ndarray:
        """Excluded candidates and, with a group cap, those over it."""
        drop = excluded.mask(rows)
        return drop | self._over_cap(rows, (rows >= 0) & ~drop)

    def _over_cap(self, rows: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Candidates past `max_per_group` of their item group (none without a cap)."""
        if self.item_group is None:
            return np.zeros(rows.shape, bool)
        return over_cap(rows, self.item_group, self.cfg.max_per_group, valid)

    def _multi(self, queries: np.ndarray, weights: np.ndarray, excluded: ExcludedRows,
               k: int) -> Ranked:
        """Per interest the best items for its query; merged so that interest i supplies
        items at a rate proportional to its weight (its j-th item comes at (j + 0.5) / w_i),
        each item once (at its earliest place)."""
        n, top, d = queries.shape
        depth = min(len(self.item_ids), self._depth(k) + excluded.most)
        scores, rows = self.index.search(np.ascontiguousarray(queries.reshape(n * top, d)),
                                         depth)
        rows, scores = rows.reshape(n, top * depth), scores.reshape(n, top * depth)
        live = np.repeat(weights > 0, depth, axis=1)
        rows = np.where(live, rows, -1)
        keep = (rows >= 0) & ~excluded.mask(rows)
        pos = np.cumsum(keep.reshape(n, top, depth), axis=2).reshape(n, top * depth) - 1
        rate = np.repeat(np.maximum(weights, 1e-12), depth, axis=1)
        key = np.where(keep, (pos + 0.5) / rate, np.inf)
        by_item = np.lexsort((key, np.where(keep, rows, -1)), axis=1)   # item, then key
        item_sorted = np.take_along_axis(np.where(keep, rows, -1), by_item, axis=1)
        dup = np.zeros_like(keep)
        dup_sorted = np.zeros((n, top * depth), bool)
        dup_sorted[:, 1:] = item_sorted[:, 1:] == item_sorted[:, :-1]
        np.put_along_axis(dup, by_item, dup_sorted, axis=1)
        key = np.where(dup, np.inf, key)
        order = np.argsort(key, axis=1, kind="stable")
        rows = np.take_along_axis(np.where(np.isinf(key), -1, rows), order, axis=1)
        scores = np.take_along_axis(scores, order, axis=1)
        return first_k(rows, scores, self._over_cap(rows, rows >= 0), k)

    def _co_scores(self, history):
        """Users' co-occurrence scores (sparse (n, n_items)), or None without followers."""
        if self.followers is None:
            return None
        if history is None:
            raise ValueError("co-occurrence scores need the users' histories")
        return self.followers.scores(history, self.cfg.cooccurrence_recent)

    def _cooccurrence(self, co, excluded: ExcludedRows, k: int) -> Ranked:
        """The users' best items by co-occurrence alone (fewer than k where few follow)."""
        n = excluded.n_users
        depth = self._depth(k) + excluded.most
        rows = np.full((n, depth), -1, np.int64)
        scores = np.zeros((n, depth), np.float32)
        if co is not None and co.nnz:
            coo = co.tocoo()
            order = np.lexsort((coo.col, -coo.data, coo.row))
            u, c, v = coo.row[order], coo.col[order], coo.data[order]
            pos = np.arange(len(u)) - np.searchsorted(u, u)
            keep = pos < depth
            rows[u[keep], pos[keep]], scores[u[keep], pos[keep]] = c[keep], v[keep]
        return first_k(rows, scores, self._drop(rows, excluded), k)

    def blend_parts(self, vectors, segments, exclude: list[set], k: int | None = None,
                    history: list[np.ndarray] | None = None) -> BlendParts:
        """The union of the users' vector, segment and co-occurrence lists (k each, excluded
        items left out) with every candidate's three scores, to rank for any weights."""
        k = k or self.cfg.k
        excluded = ExcludedRows(exclude, len(self.item_ids))
        lists = self._lists(vectors, segments, excluded, k, ("vector", "segment"), None)
        return self._blend_parts(vectors, segments, excluded, k, history, lists)

    def _blend_parts(self, vectors, segments, excluded: ExcludedRows, k: int, history,
                     lists: dict[str, Ranked]) -> BlendParts:
        segments = np.asarray(segments, np.int64)
        co = self._co_scores(history)
        parts = [lists["vector"].rows, lists["segment"].rows]
        if co is not None:
            parts.append(self._cooccurrence(co, excluded, k).rows)
        cand = np.sort(np.concatenate(parts, axis=1), axis=1)
        invalid = cand < 0
        invalid[:, 1:] |= cand[:, 1:] == cand[:, :-1]          # each item once
        safe = np.where(invalid, 0, cand)
        vectors, dot = np.asarray(vectors, np.float32), np.empty(cand.shape, np.float32)
        for i in range(0, len(cand), 1024):         # bounded: (1024, 3k, d) at a time
            dot[i:i + 1024] = np.matmul(self.item_vectors[safe[i:i + 1024]],
                                        vectors[i:i + 1024, :, None])[:, :, 0]
        seg_score = lookup(self.seg_keys, self.seg_values,
                           segments[:, None] * len(self.item_ids) + safe)
        co_score = np.zeros(cand.shape, np.float32)
        if co is not None and co.nnz:
            co = co.tocoo()
            keys = co.row.astype(np.int64) * len(self.item_ids) + co.col
            order = np.argsort(keys)
            co_score = lookup(keys[order], co.data[order].astype(np.float32),
                              np.arange(len(cand))[:, None] * len(self.item_ids) + safe)
        return BlendParts(cand, invalid, dot, seg_score, co_score)

    def segment_score(self, segments: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(m,) segments, (m, k) catalogue rows -> the segment scores `blend` gives them."""
        return lookup(self.seg_keys, self.seg_values,
                      np.asarray(segments, np.int64)[:, None] * len(self.item_ids)
                      + np.maximum(rows, 0))

    def blend(self, parts: BlendParts, segment_weight: float, cooccurrence_weight: float,
              k: int) -> Ranked:
        """Vector score + segment_weight * segment score + cooccurrence_weight *
        co-occurrence score, best first."""
        score = (parts.vector + np.float32(segment_weight) * parts.segment
                 + np.float32(cooccurrence_weight) * parts.cooccurrence).astype(np.float32)
        order = np.lexsort((parts.rows, -score, parts.invalid), axis=1)
        rows = np.take_along_axis(np.where(parts.invalid, -1, parts.rows), order, axis=1)
        score = np.take_along_axis(score, order, axis=1)
        return first_k(rows, score, self._over_cap(rows, rows >= 0), k)

    def index_recall(self, queries: np.ndarray, k: int | None = None) -> float:
        """Share of the exact top-k items that the index finds (index.index_recall)."""
        return index_recall(self.index, self.item_vectors, queries, k or self.cfg.k)

    def to_table(self, user_ids, ranked: dict[str, Ranked], explained: dict | None = None,
                 texts: list[str] | None = None, segments=None,
                 cited_ids: list[str] | None = None) -> pa.Table:
        """Recommender output -> rows (user_id, rank, item_id, score, strategy), plus the
        explanation columns (explain.EXPLANATIONS) with `explained` (sentences from the
        catalogue `texts`; `segments`: the users' segments; `cited_ids`, `texts`: the
        catalogue's plus those of items new to the service, which histories may cite)."""
        from raypipe.recommend.explain import EXPLANATIONS, columns
        user_ids = pa.array(user_ids, pa.string()) if not isinstance(user_ids, pa.Array) \
            else user_ids
        schema = RECOMMENDATIONS if explained is None else pa.schema(
            [*RECOMMENDATIONS, *EXPLANATIONS])
        parts = []
        for strategy, r in ranked.items():
            u, c = np.nonzero(r.rows >= 0)
            cols = {"user_id": user_ids.take(pa.array(u)),
                    "rank": pa.array(c + 1, pa.int32()),
                    "item_id": self.item_ids.take(pa.array(r.rows[u, c])),
                    "score": pa.array(r.scores[u, c], pa.float32()),
                    "strategy": pa.array([strategy] * len(u), pa.string())}
            if explained is not None:
                cols.update(columns(explained[strategy], u, c,
                                    self.item_ids if cited_ids is None else
                                    pa.array(cited_ids, pa.string()), texts,
                                    None if segments is None else np.asarray(segments)[u]))
            parts.append(pa.table(cols, schema=schema))
        return pa.concat_tables(parts) if parts else schema.empty_table()
