import numpy as np
import pyarrow as pa

from raypipe.config import RecommendConfig
from raypipe.recommend import Recommender, segment_rankings

ITEMS = ["a", "b", "c", "d"]
VECTORS = np.eye(4, dtype=np.float32)
MASS = pa.table({"segment": pa.array([0, 0, 0], pa.int32()), "item_row": [3, 2, 0],
                 "weight": [4.0, 2.0, 1.0]})


def recommender(**kw):
    cfg = RecommendConfig(k=2, **kw)
    return Recommender(ITEMS, VECTORS, segment_rankings(MASS, 1, depth=10), cfg)


def test_segment_rankings_best_first_scaled_to_one():
    rows, scores = segment_rankings(MASS, 1, depth=10)[0]
    assert rows.tolist() == [3, 2, 0] and scores.tolist() == [1.0, 0.5, 0.25]


def test_vector_and_segment_strategies_skip_excluded_items():
    user = np.array([[0.9, 0.5, 0.1, 0.0]], np.float32)
    out = recommender().recommend(user, np.array([0]), [{0}])
    assert out["vector"][0][0].tolist() == [1, 2]
    assert out["segment"][0][0].tolist() == [3, 2]


def test_blend_mixes_both_scores():
    user = np.array([[0.0, 1.0, 0.0, 0.0]], np.float32)
    out = recommender(blend_weight=0.5).recommend(user, np.array([0]), [set()])
    rows, scores = out["blend"][0]
    # b: 0.5*1 + 0.5*0 = 0.5; d: 0.5*0 + 0.5*1 = 0.5; c: 0.25; tie broken by item row
    assert rows.tolist() == [1, 3] and scores.tolist() == [0.5, 0.5]


def test_table_rows_are_ranked_per_user_and_strategy():
    rec = recommender(strategies=("vector",))
    out = rec.recommend(np.array([[0.1, 0, 1, 0]], np.float32), np.array([0]), [set()])
    table = rec.to_table(["u"], out).to_pylist()
    assert [(r["rank"], r["item_id"], r["strategy"]) for r in table] == [
        (1, "c", "vector"), (2, "a", "vector")]
