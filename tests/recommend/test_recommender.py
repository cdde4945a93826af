"""recommend/ (recommender.py, ranking.py, index.py, inputs.py): strategies, exclusions, the
batched recommender against a per-user definition, the IVF index, group caps and `multi`."""
import numpy as np
import pyarrow as pa

from raypipe.config import RecommendConfig
from raypipe.recommend.cooccur import Followers, follower_pairs
from raypipe.recommend.index import index_info
from raypipe.recommend.inputs import segment_rankings
from raypipe.recommend.recommender import Recommender

ITEMS = ["a", "b", "c", "d"]
VECTORS = np.eye(4, dtype=np.float32)
MASS = pa.table({"segment": pa.array([0, 0, 0], pa.int32()), "item_row": [3, 2, 0],
                 "weight": [4.0, 2.0, 1.0]})


def recommender(**kw):
    cfg = RecommendConfig(k=2, **{"strategies": ("vector", "segment", "blend"), **kw})
    return Recommender(ITEMS, VECTORS, segment_rankings(MASS, 1, depth=10), cfg)


def test_segment_rankings_best_first_scaled_to_one():
    rows, scores = segment_rankings(MASS, 1, depth=10)[0]
    assert rows.tolist() == [3, 2, 0] and scores.tolist() == [1.0, 0.5, 0.25]


def test_vector_and_segment_strategies_skip_excluded_items():
    user = np.array([[0.9, 0.5, 0.1, 0.0]], np.float32)
    out = recommender().recommend(user, np.array([0]), [{0}])
    assert out["vector"][0][0].tolist() == [1, 2]
    assert out["segment"][0][0].tolist() == [3, 2]


def test_blend_adds_the_weighted_segment_score():
    user = np.array([[0.0, 1.0, 0.0, 0.0]], np.float32)
    out = recommender(blend_segment=0.5).recommend(user, np.array([0]), [set()])
    rows, scores = out["blend"][0]
    # b: 1 + 0.5 * 0 = 1; d: 0 + 0.5 * 1 = 0.5; c: 0 + 0.5 * 0.5 = 0.25
    assert rows.tolist() == [1, 3] and scores.tolist() == [1.0, 0.5]
    plain = recommender(blend_segment=0.0).recommend(user, np.array([0]), [set()])
    assert plain["blend"][0][0].tolist() == plain["vector"][0][0].tolist()


def test_table_rows_are_ranked_per_user_and_strategy():
    rec = recommender(strategies=("vector",))
    out = rec.recommend(np.array([[0.1, 0, 1, 0]], np.float32), np.array([0]), [set()])
    table = rec.to_table(["u"], out).to_pylist()
    assert [(r["rank"], r["item_id"], r["strategy"]) for r in table] == [
        (1, "c", "vector"), (2, "a", "vector")]


def _co_reference(pairs, history, recent):
    """A user's co-occurrence scores as evaluate.cooccurrence counts them, scaled to 1."""
    score = {}
    for age, a in enumerate(history[::-1][:recent]):
        for (src, dst), c in pairs.items():
            if src == a:
                score[dst] = score.get(dst, 0.0) + c * 0.5 ** age
    top = max(score.values(), default=1.0)
    return {r: v / top for r, v in score.items()}


def _reference(rec, vectors, segments, exclude, k, pairs=None, history=None):
    """The per-user definition the vectorised Recommender must equal."""
    import faiss
    exact = faiss.IndexFlatIP(rec.item_vectors.shape[1])
    exact.add(rec.item_vectors)
    out = {"vector": [], "segment": [], "blend": []}
    a, b = rec.blend_weights
    for u, vector in enumerate(vectors):
        scores, rows = exact.search(vector[None], len(rec.item_vectors))
        vec = [(r, s) for r, s in zip(rows[0], scores[0]) if r not in exclude[u]][:k]
        seg_rows, seg_scores = rec.seg_rankings[segments[u]]
        seg = [(r, s) for r, s in zip(seg_rows, seg_scores) if r not in exclude[u]][:k]
        seg_score = dict(zip(seg_rows.tolist(), seg_scores.tolist()))
        co = _co_reference(pairs, history[u], rec.cfg.cooccurrence_recent) if pairs else {}
        co_list = [r for r in sorted(co, key=lambda r: (-co[r], r)) if r not in exclude[u]][:k]
        cand = sorted({r for r, _ in vec} | {r for r, _ in seg} | set(co_list))
        blend = sorted(((float(rec.item_vectors[r] @ vector + a * seg_score.get(r, 0)
                               + b * co.get(r, 0)), r) for r in cand),
                       key=lambda sr: (-sr[0], sr[1]))[:k]
        out["vector"].append([r for r, _ in vec])
        out["segment"].append([r for r, _ in seg])
        out["blend"].append([r for _, r in blend])
    return out


def test_batch_recommender_equals_the_per_user_definition():
    rng = np.random.default_rng(3)
    n_items, d, n_users = 300, 16, 60
    items = rng.standard_normal((n_items, d)).astype(np.float32)
    users = rng.standard_normal((n_users, d)).astype(np.float32)
    mass = pa.table({"segment": pa.array(rng.integers(0, 4, 900), pa.int32()),
                     "item_row": rng.integers(0, n_items, 900),
                     "weight": rng.random(900)})
    rankings = segment_rankings(mass.group_by(["segment", "item_row"]).aggregate(
        [("weight", "sum")]).rename_columns(["segment", "item_row", "weight"]), 4, depth=50)
    # Co-occurrence from training histories over a few items, so that followers overlap.
    train = [rng.integers(0, 40, rng.integers(2, 9)) for _ in range(200)]
    pairs = follower_pairs(train, n_items, window=3)
    followers = Followers.from_pairs(pairs, n_items, top=1000)
    counts = {(s, d): c for s, d, c in zip(*(pairs[c].to_pylist() for c in
                                              ("src", "dst", "count")))}
    history = [rng.integers(0, 40, rng.integers(0, 6)) for _ in range(n_users)]
    rec = Recommender([f"i{i}" for i in range(n_items)], items, rankings,
                      RecommendConfig(k=10, strategies=("vector", "segment", "blend")),
                      followers=followers, blend_weights=(0.3, 2.0))
    segments = rng.integers(0, 4, n_users)
    exclude = [set(rng.integers(0, n_items, rng.integers(0, 6)).tolist()) |
               set(rankings[segments[u]][0][:2].tolist()) for u in range(n_users)]
    got = rec.recommend(users, segments, exclude, history=history)
    want = _reference(rec, users, segments, exclude, 10, counts, history)
    for strategy in ("vector", "segment", "blend"):
        assert [got[strategy][u][0].tolist() for u in range(n_users)] == want[strategy], strategy
    assert sum(got["blend"][u][0].tolist() != got["vector"][u][0].tolist()
               for u in range(n_users)) > n_users // 2          # the weights matter
    short = rec.recommend(users, segments, exclude, k=3, history=history)
    assert all(short["blend"][u][0].tolist() == want["blend"][u][:3] for u in range(n_users))


def test_history_weights_and_purchases_from_arrow_or_lists():
    from raypipe.config import UserConfig
    from raypipe.recommend.inputs import purchased
    from raypipe.vectors.pooling import history_weights
    cfg = UserConfig()
    types = [["view", "purchase", "cart"], [], ["click", "odd"], ["purchase"]]
    column = pa.chunked_array([pa.array(types[:1] + types[:3], pa.list_(pa.string()))
                               .slice(1), pa.array(types[3:], pa.list_(pa.string()))])
    for given in (types, column):
        w = history_weights(given, cfg)
        for got, t in zip(w, types):
            age = np.arange(len(t) - 1, -1, -1)
            want = [cfg.event_weights.get(e, 1.0) * 0.5 ** (a / cfg.half_life)
                    for e, a in zip(t, age)]
            assert np.allclose(got, want, rtol=0, atol=1e-15)
    rows = [np.array([5, 6, 7]), np.array([], np.int64), np.array([1, 2]), np.array([9])]
    assert purchased(rows, column, True) == [{6}, set(), set(), {9}]
    assert purchased(rows, types, False) == [set()] * 4


def test_ivf_index_is_deterministic_and_recall_is_measured():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32)).astype(np.float32)
    items = centres[rng.integers(0, 50, 5000)] + 0.3 * rng.standard_normal((5000, 32))
    items = (items / np.linalg.norm(items, axis=1, keepdims=True)).astype(np.float32)
    rankings = [(np.array([0, 1]), np.array([1.0, 0.5], np.float32))]
    ids = [f"i{i}" for i in range(5000)]
    cfg = RecommendConfig(k=10, index="ivf", ivf_probe=8)
    a, b = Recommender(ids, items, rankings, cfg), Recommender(ids, items, rankings, cfg)
    flat = Recommender(ids, items, rankings, RecommendConfig(k=10))
    queries = items[:200] + 0.1 * rng.standard_normal((200, 32)).astype(np.float32)
    ra = a.recommend(queries, np.zeros(200, int), [set()] * 200, strategies=("vector",))["vector"]
    rb = b.recommend(queries, np.zeros(200, int), [set()] * 200, strategies=("vector",))["vector"]
    assert np.array_equal(ra.rows, rb.rows)
    assert flat.index_recall(queries) == 1.0
    recall = a.index_recall(queries)
    assert recall >= 0.8
    assert index_info(flat.index) == {"kind": "flat"}
    auto = Recommender(ids, items, rankings, RecommendConfig(ivf_min_items=5000, ivf_probe=8))
    assert index_info(auto.index) == {"kind": "ivf", "lists": 128, "probe": 8}
    fewer = Recommender(ids, items, rankings, RecommendConfig(k=10, index="ivf", ivf_probe=1))
    assert fewer.index_recall(queries) < recall


def test_group_cap_keeps_at_most_n_per_group_in_rank_order():
    from raypipe.recommend.ranking import over_cap
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 4, 50)
    rows = np.stack([rng.permutation(50)[:20] for _ in range(30)])
    rows[:, 5] = -1
    valid = rows >= 0
    got = over_cap(rows, groups, 2, valid)
    for r, g in zip(rows, got):
        seen = {}
        for row, over in zip(r.tolist(), g.tolist()):
            if row < 0:
                assert not over
                continue
            seen[groups[row]] = seen.get(groups[row], 0) + 1
            assert over == (seen[groups[row]] > 2)


def test_multi_merges_interest_lists_by_weight():
    from raypipe.recommend.inputs import interest_queries
    from raypipe.config import UserConfig
    rng = np.random.default_rng(5)
    n_items, d = 400, 12
    items = rng.standard_normal((n_items, d)).astype(np.float32)
    item_segment = rng.integers(0, 5, n_items)
    rankings = [(np.array([0]), np.array([1.0], np.float32))] * 5
    cfg = RecommendConfig(k=10)
    rec = Recommender([f"i{i}" for i in range(n_items)], items, rankings, cfg)
    history = [rng.integers(0, n_items, rng.integers(1, 12)) for _ in range(40)] + \
        [np.array([], np.int64)]
    types = [list(rng.choice(["view", "click", "purchase"], len(h))) for h in history]
    queries, weights = interest_queries(history, types, item_segment, items, 5, 3,
                                        UserConfig(), cfg)
    exclude = [set(h[np.array(t) == "purchase"].tolist()) for h, t in zip(history, types)]
    got = rec.recommend(np.zeros((len(history), d), np.float32), np.zeros(len(history), int),
                        exclude, strategies=("multi",), interests=(queries, weights))["multi"]
    recent_cfg = UserConfig(half_life=cfg.query_half_life)
    from raypipe.vectors.pooling import history_weights
    from raypipe.segments.profiles import interests
    segs, ws = interests(history, history_weights(types, UserConfig()), item_segment, 5, 3)
    recent = history_weights(types, recent_cfg)
    for u, (h, s_list, w_list) in enumerate(zip(history, segs, ws)):
        keyed = []
        for slot, (s, w) in enumerate(zip(s_list, w_list)):
            sel = item_segment[h] == s
            q = (items[h[sel]] * recent[u][sel][:, None]).sum(0)
            q = q / np.linalg.norm(q)
            assert np.allclose(queries[u, slot], q, atol=1e-5)
            assert abs(weights[u, slot] - w) < 1e-6
            ranked = [r for r in np.argsort(-(items @ q), kind="stable").tolist()
                      if r not in exclude[u]]
            keyed += [((j + 0.5) / w, slot, j, r) for j, r in enumerate(ranked[:40])]
        merged, seen = [], set()
        for _, _, _, r in sorted(keyed):
            if r not in seen:
                seen.add(r)
                merged.append(r)
        assert got[u][0].tolist() == merged[:10], u
    assert len(got[len(history) - 1][0]) == 0          # no history, no interests, no items
