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

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.config import RecommendConfig, UserConfig
from raypipe.recommend.cooccur import Followers
from raypipe.vectors.pooling import event_types_array, history_weights

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


def purchased_rows(item_index: list[np.ndarray], event_types,
                   exclude_purchased: bool) -> list[set]:
    """Per user the catalogue rows to leave out of the recommendations.
    event_types: a list<string> column or lists of strings."""
    if not exclude_purchased or not item_index:
        return [set() for _ in item_index]
    lists = event_types_array(event_types)
    bought = (pc.equal(lists.flatten(), "purchase").fill_null(False)
              .to_numpy(zero_copy_only=False))
    rows = np.concatenate(item_index)
    ends = np.cumsum([len(ix) for ix in item_index])
    out = [set() for _ in item_index]
    for u, row in zip(np.searchsorted(ends, np.flatnonzero(bought), side="right").tolist(),
                      rows[bought].tolist()):
        out[u].add(row)
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


def over_cap(rows: np.ndarray, groups: np.ndarray, cap: int, valid: np.ndarray) -> np.ndarray:
    """(n, m) candidates best first -> True where a valid candidate would be its group's
    cap+1-th or later in its row."""
    n, m = rows.shape
    g = np.where(valid, groups[np.maximum(rows, 0)], -1)
    order = np.argsort(g, axis=1, kind="stable")       # group-major, rank order within
    sorted_g = np.take_along_axis(g, order, axis=1)
    idx = np.broadcast_to(np.arange(m), (n, m))
    start = np.ones((n, m), bool)
    start[:, 1:] = sorted_g[:, 1:] != sorted_g[:, :-1]
    first = np.maximum.accumulate(np.where(start, idx, 0), axis=1)
    occurrence = np.empty((n, m), np.int64)
    np.put_along_axis(occurrence, order, idx - first, axis=1)
    return valid & (occurrence >= cap)


class Ranked:
    """One strategy's answer for a batch of users: `rows` and `scores` (n_users, k), best
    first, padded with -1 rows where fewer than k items qualify. `ranked[u]` is user u's
    (rows, scores) without the padding."""

    def __init__(self, rows: np.ndarray, scores: np.ndarray):
        self.rows, self.scores = rows, scores

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        keep = self.rows[u] >= 0
        return self.rows[u][keep], self.scores[u][keep]

    def prefix(self, k: int) -> "Ranked":
        return Ranked(self.rows[:, :k], self.scores[:, :k])


def first_k(rows: np.ndarray, scores: np.ndarray, excluded: np.ndarray, k: int) -> Ranked:
    """(n, m) candidates best first -> the first k per row that are real (>= 0) and not
    excluded, packed to the left."""
    keep = (rows >= 0) & ~excluded
    pos = np.cumsum(keep, axis=1) - 1
    u, c = np.nonzero(keep & (pos < k))
    out_rows = np.full((len(rows), k), -1, np.int64)
    out_scores = np.zeros((len(rows), k), np.float32)
    out_rows[u, pos[u, c]] = rows[u, c]
    out_scores[u, pos[u, c]] = scores[u, c]
    return Ranked(out_rows, out_scores)


class ExcludedRows:
    """Per user a set of catalogue rows, as one sorted array of keys user * n_items + row, so
    that a whole (users, candidates) matrix is checked at once."""

    def __init__(self, exclude: list[set], n_items: int):
        lengths = np.array([len(e) for e in exclude], np.int64)
        users = np.repeat(np.arange(len(exclude), dtype=np.int64), lengths)
        rows = np.fromiter((r for e in exclude for r in e), np.int64, int(lengths.sum()))
        self.keys, self.n_items = np.sort(users * n_items + rows), n_items
        self.n_users = len(exclude)
        self.most = int(lengths.max(initial=0))

    def mask(self, rows: np.ndarray) -> np.ndarray:
        keys = np.arange(len(rows), dtype=np.int64)[:, None] * self.n_items + rows
        return np.isin(keys, self.keys) & (rows >= 0)


def lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Sorted int keys and their values -> the value of each wanted key, 0 where absent."""
    if not len(keys):
        return np.zeros(wanted.shape, np.float32)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, values[at], 0.0).astype(np.float32)


def build_index(vectors: np.ndarray, cfg: RecommendConfig) -> faiss.Index:
    """Inner-product index over the item vectors: exact (flat) for catalogues below
    `cfg.ivf_min_items`, an inverted-file index (IVF, `cfg.ivf_probe` of its lists searched)
    above, or as `cfg.index` says. IVF's clustering is seeded, so the batch job and the
    service build the same index from the same vectors."""
    n, d = vectors.shape
    kind = cfg.index if cfg.index != "auto" else \
        ("ivf" if n >= cfg.ivf_min_items else "flat")
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
        index.add(vectors)
        return index
    lists = cfg.ivf_lists or int(4 * np.sqrt(n))
    lists = max(1, min(lists, n // 39))     # faiss wants >= 39 training points per list
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 1234
    index.train(vectors)
    index.add(vectors)
    index.nprobe = min(cfg.ivf_probe, lists)
    return index


def index_info(index: faiss.Index) -> dict:
    if isinstance(index, faiss.IndexIVF):
        return {"kind": "ivf", "lists": int(index.nlist), "probe": int(index.nprobe)}
    return {"kind": "flat"}


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
                  history: list[np.ndarray] | None = None) -> dict[str, Ranked]:
        """-> {strategy: Ranked}, k (default cfg.k) best each, best first. Asked for fewer
        than cfg.k, the answer is the prefix of cfg.k's (blend's candidates depend on k), so
        the service always agrees with the batch job. `multi` needs `interests`, the
        (queries, weights) of `interest_queries`; `blend`'s co-occurrence needs `history`,
        each user's catalogue rows, oldest first."""
        want = k or self.cfg.k
        k = max(want, self.cfg.k)
        strategies = strategies or self.cfg.strategies
        lists = set(strategies) - {"blend"}
        if "blend" in strategies:           # blend's candidates include both lists
            lists |= {"vector", "segment"}
        excluded = ExcludedRows(exclude, len(self.item_ids))
        out = self._lists(vectors, segments, excluded, k, lists, interests)
        if "blend" in strategies:
            out["blend"] = self.blend(self._blend_parts(vectors, segments, excluded, k, history,
                                                        out), *self.blend_weights, k)
        return {s: out[s].prefix(want) for s in strategies}

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
        """Share of the exact top-k items (inner product over the whole catalogue) that the
        index finds: 1.0 for the flat index, measured for IVF."""
        if not isinstance(self.index, faiss.IndexIVF) or len(queries) == 0:
            return 1.0
        k = min(k or self.cfg.k, len(self.item_ids))
        queries = np.ascontiguousarray(queries, np.float32)
        exact = faiss.IndexFlatIP(self.item_vectors.shape[1])
        exact.add(self.item_vectors)
        _, truth = exact.search(queries, k)
        _, found = self.index.search(queries, k)
        hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found))
        return hits / truth.size

    def to_table(self, user_ids, ranked: dict[str, Ranked]) -> pa.Table:
        """Recommender output -> rows (user_id, rank, item_id, score, strategy)."""
        user_ids = pa.array(user_ids, pa.string()) if not isinstance(user_ids, pa.Array) \
            else user_ids
        parts = []
        for strategy, r in ranked.items():
            u, c = np.nonzero(r.rows >= 0)
            parts.append(pa.table({
                "user_id": user_ids.take(pa.array(u)),
                "rank": pa.array(c + 1, pa.int32()),
                "item_id": self.item_ids.take(pa.array(r.rows[u, c])),
                "score": pa.array(r.scores[u, c], pa.float32()),
                "strategy": pa.array([strategy] * len(u), pa.string())}, schema=RECOMMENDATIONS))
        return pa.concat_tables(parts) if parts else RECOMMENDATIONS.empty_table()
