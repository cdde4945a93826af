"""recommend/metrics.py: leave-one-out metrics from recommendation rows, the baselines and the
adjusted Rand index, on hand-computed cases."""
import math

import pyarrow as pa
import pytest

from raypipe.recommend.metrics import cooccurrence, metrics_from_recs, most_popular


def test_metrics_from_rows_hand_computed():
    recs = pa.table({"user_id": ["u1", "u1", "u2", "u2", "u1"], "rank": [1, 2, 1, 2, 1],
                     "item_id": ["a", "t1", "b", "c", "t1"],
                     "strategy": ["vector", "vector", "vector", "vector", "segment"]})
    targets = pa.table({"user_id": ["u1", "u2", "u3", "u4"],
                        "target_item": ["t1", "t2", "t3", None]})
    m = metrics_from_recs(recs, targets, ks=(1, 2))
    assert m["vector"]["users"] == 3                      # u4 has no target
    assert m["vector"]["recall@1"] == 0 and m["vector"]["recall@2"] == pytest.approx(1 / 3)
    assert m["vector"]["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 3, abs=1e-6)
    assert m["segment"]["recall@1"] == pytest.approx(1 / 3)
    assert m["segment"]["ndcg@1"] == pytest.approx(1 / 3, abs=1e-6)


def test_most_popular_excludes_each_users_items():
    histories = [["a", "a", "b"], ["a", "c"], ["b"]]
    m = most_popular(histories, ["a", "b", None], [{"a"}, set(), set()], ks=(1,))
    # ranking a(3), b(2), c(1); user 1 has a excluded -> top1 b; user 2 top1 a
    assert m["users"] == 2 and m["recall@1"] == 0.0


def test_baselines_leave_out_purchases_only_when_asked():
    from raypipe.recommend.metrics import baselines
    # a is the most popular item; user 1 bought it, user 2 only viewed it.
    histories = [["a", "b"], ["a", "a"], ["a", "c"]]
    types = [["purchase", "view"], ["view", "view"], ["view", "view"]]
    targets = ["a", "a", None]
    kept = baselines(histories, types, targets, (1,), exclude_purchased=False)
    left_out = baselines(histories, types, targets, (1,), exclude_purchased=True)
    assert kept["most_popular"]["recall@1"] == 1.0
    assert left_out["most_popular"]["recall@1"] == 0.5      # user 1 no longer gets a


def test_adjusted_rand_index_matches_scikit_learn():
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    from raypipe.recommend.metrics import adjusted_rand_index
    rng = np.random.default_rng(0)
    a, b = rng.integers(4, size=500), rng.integers(5, size=500)
    assert adjusted_rand_index(a, b) == pytest.approx(adjusted_rand_score(a, b))
    assert adjusted_rand_index([0, 0, 1, 1], [5, 5, 2, 2]) == 1.0
    mixed = np.where(rng.random(500) < 0.8, a, b)
    assert adjusted_rand_index(a, mixed) == pytest.approx(adjusted_rand_score(a, mixed))


def test_cooccurrence_recommends_the_item_that_follows():
    histories = [["a", "b", "c"], ["a", "b", "d"], ["x", "a"]]
    # After "a", "b" followed twice: the third user's target "b" is ranked first.
    out = cooccurrence(histories, [None, None, "b"], [set(), set(), set()], ks=(1,))
    assert out == {"users": 1, "recall@1": 1.0, "ndcg@1": 1.0}
    out = cooccurrence(histories, [None, None, "b"], [set(), set(), {"b"}], ks=(1,))
    assert out["recall@1"] == 0.0
