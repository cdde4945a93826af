"""recommend/blend.py and recommend/cooccur.py: follower pairs and counts, the validation
users' hash, the weights' fit and the validation segment rankings."""
import numpy as np
import pyarrow as pa
import pytest

from raypipe.recommend import blend
from raypipe.config import PipelineConfig, RecommendConfig, apply_overrides
from raypipe.recommend.cooccur import Followers, follower_pairs, held_out, held_rank
from raypipe.recommend.recommender import Recommender


def test_follower_pairs_count_within_the_window_and_mark_held_last_items():
    histories = [np.array([0, 1, 2, 1]), np.array([1, 2]), np.array([3])]
    pairs = follower_pairs(histories, 4, window=2, held=np.array([False, True, False]))
    got = {(s, d): (c, h) for s, d, c, h in zip(*(pairs[c].to_pylist() for c in
                                                  ("src", "dst", "count", "held")))}
    # user 0: 0->1, 1->2, 2->1 (gap 1); 0->2, 1->1 (gap 2); user 1 (held): 1->2, its last
    assert got == {(0, 1): (1, 0), (1, 2): (2, 1), (2, 1): (1, 0), (0, 2): (1, 0),
                   (1, 1): (1, 0)}
    valid = Followers.from_pairs(pairs, 4, top=10, validation=True)
    assert valid.matrix[1, 2] == 1 and Followers.from_pairs(pairs, 4, top=10).matrix[1, 2] == 2


def test_followers_keep_the_most_frequent_and_score_like_the_baseline():
    rng = np.random.default_rng(0)
    n = 30
    histories = [rng.integers(0, n, rng.integers(2, 10)) for _ in range(300)]
    pairs = follower_pairs(histories, n, window=3)
    top2 = Followers.from_pairs(pairs, n, top=2)
    assert np.diff(top2.matrix.indptr).max() == 2
    full = Followers.from_pairs(pairs, n, top=n)
    # A user's scores: counts from the 3 latest items, halved per step back, best = 1.
    users = [rng.integers(0, n, rng.integers(1, 6)) for _ in range(50)]
    scores = full.scores(users, recent=3).toarray()
    dense = np.zeros((n, n))
    for h in histories:
        for g in range(1, 4):
            np.add.at(dense, (h[:-g], h[g:]), 1)
    for u, h in enumerate(users):
        want = sum(dense[a] * 0.5 ** age for age, a in enumerate(h[::-1][:3]))
        np.testing.assert_allclose(scores[u], want / want.max(), rtol=1e-6)
    ids = [str(i) for i in range(n)]
    rebuilt = Followers(full.src, full.dst, full.count, n, top=n)
    assert (rebuilt.matrix != full.matrix).nnz == 0
    table = full.to_table(ids)
    again = Followers.from_table(table, __import__("pandas").Index(ids), top=n)
    assert (again.matrix != full.matrix).nnz == 0


def test_items_new_to_the_service_have_no_followers():
    pairs = follower_pairs([np.array([0, 1])], 3, window=1)
    scores = Followers.from_pairs(pairs, 3, top=5).scores([np.array([0, 7]), np.array([5])], 3)
    assert scores.toarray().tolist() == [[0, 0.5 / 0.5, 0], [0, 0, 0]]


def test_scores_read_at_some_items_equal_the_full_rows_both_ways(monkeypatch):
    """scores_at (numpy sums for few entries, one sparse product for many) against the
    sparse rows `scores` builds: the same numbers, and the two ways agree to the bit."""
    from raypipe.recommend import cooccur
    rng = np.random.default_rng(3)
    n_items = 40
    src, dst = rng.integers(0, n_items, 600), rng.integers(0, n_items, 600)
    followers = Followers(src, dst, rng.integers(1, 9, 600), n_items, top=6)
    history = [rng.integers(0, n_items + 3, int(rng.integers(0, 6))) for _ in range(30)]
    targets = rng.integers(-1, n_items + 2, (30, 7))
    full = followers.scores(history, 3).toarray()
    want = np.where((targets >= 0) & (targets < n_items),
                    full[np.arange(30)[:, None], np.clip(targets, 0, n_items - 1)], 0)
    entries = cooccur.latest(history, 3)
    small = followers.scores_at(*entries, targets)
    np.testing.assert_allclose(small, want, rtol=1e-6)
    monkeypatch.setattr(cooccur, "SMALL_PRODUCT", -1)          # the sparse product's way
    assert np.array_equal(followers.scores_at(*entries, targets), small)


def test_held_out_users_are_a_seeded_hash_of_the_id():
    ids = [f"user-{i}" for i in range(4000)]
    held = held_out(ids, 0.2, seed=0)
    assert 0.17 < held.mean() < 0.23
    assert held_out(ids[::-1], 0.2, 0)[::-1].tolist() == held.tolist()
    assert held_out(ids, 0.2, seed=1).tolist() != held.tolist()
    assert (held_rank(ids, 0) < 0.1).sum() < held.sum()     # a smaller share is a subset


def _validation(n_users, n_items, rng, vectors):
    histories = [rng.integers(0, n_items, rng.integers(2, 6)) for _ in range(n_users)]
    return blend.Validation(vectors, np.zeros(n_users, np.int64), histories,
                            [set() for _ in range(n_users)], None,
                            np.zeros(n_users, np.int64), np.ones(n_users))


def _recommender(items, followers=None, **kw):
    rankings = [(np.arange(len(items))[::-1].copy(),
                 np.linspace(1, 0.01, len(items)).astype(np.float32))]
    cfg = RecommendConfig(k=10, strategies=("vector", "blend"), **kw)
    return Recommender([str(i) for i in range(len(items))], items, rankings, cfg,
                       followers=followers)


def test_fit_mixes_in_co_occurrence_where_it_predicts_the_next_item():
    rng = np.random.default_rng(1)
    n_items, d, n = 200, 16, 300
    items = rng.standard_normal((n_items, d)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    # The next item is always (3 * last + 1) % n_items; the vectors know nothing of it.
    rule = lambda r: (3 * r + 1) % n_items      # noqa: E731
    train = [np.array([r, rule(r)]) for r in range(n_items)]
    followers = Followers.from_pairs(follower_pairs(train, n_items, 1), n_items, top=10)
    queries = rng.standard_normal((n, d)).astype(np.float32)
    val = _validation(n, n_items, rng, queries / np.linalg.norm(queries, axis=1, keepdims=True))
    val.targets = np.array([rule(h[-1]) for h in val.history])
    got = blend.fit_weights(_recommender(items, followers), val, RecommendConfig())
    assert got["cooccurrence"] > 0 and got["valid_ndcg@10"] > 0.8
    assert got["vector_valid_ndcg@10"] < 0.2


def test_fit_keeps_vector_alone_where_nothing_helps():
    rng = np.random.default_rng(2)
    n_items, n = 200, 300
    items = np.eye(n_items, dtype=np.float32)
    targets = rng.integers(0, n_items, n)
    train = [rng.integers(0, n_items, 5) for _ in range(400)]       # noise
    followers = Followers.from_pairs(follower_pairs(train, n_items, 3), n_items, top=50)
    val = _validation(n, n_items, rng, items[targets])       # the query is the target
    val.targets = targets
    got = blend.fit_weights(_recommender(items, followers), val, RecommendConfig())
    assert (got["segment"], got["cooccurrence"]) == (0.0, 0.0)
    assert got["valid_ndcg@10"] == got["vector_valid_ndcg@10"] == pytest.approx(1.0)
    fixed = apply_overrides(PipelineConfig(), ["recommend.blend_segment=0.2"])
    got = blend.fit_weights(_recommender(items, followers, blend_segment=0.2), val, fixed.recommend)
    assert got["segment"] == 0.2 and {g["segment"] for g in got["grid"]} == {0.2}


def test_validation_rankings_leave_out_the_users_last_items():
    mass = pa.table({"segment": pa.array([0, 0, 1], pa.int32()),
                     "item_row": pa.array([5, 6, 5], pa.int64()),
                     "weight": pa.array([3.0, 2.0, 1.0])})
    val = blend.Validation(None, None, None, None, np.array([5, 5]), np.array([0, 1]),
                           np.array([2.0, 1.0]))
    rankings = blend.validation_rankings(mass, val, 2, depth=10)
    assert rankings[0][0].tolist() == [6, 5] and rankings[1][0].tolist() == []
