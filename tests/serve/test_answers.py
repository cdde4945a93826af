"""serve/answers.py: known users' answers read from the batch's table are the rows the
service computes (every strategy, several k), and the table's arrays on a hand-made case."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from raypipe.recommend.attribution import REASONS
from serve.answers import Answers
from serve.service import ProfileService


def test_answers_are_the_tables_rows_in_rank_order_per_user_and_strategy():
    table = pa.table({
        "user_id": ["b", "a", "a", "b", "a", "c"],
        "strategy": ["vector", "vector", "vector", "blend", "blend", "vector"],
        "rank": pa.array([1, 2, 1, 1, 1, 1], pa.int32()),
        "item_id": ["i2", "i0", "i1", "i1", "i2", "i0"],
        "score": pa.array([0.5, 0.7, 0.9, 0.4, 0.3, 0.1], pa.float32()),
        "reason": ["recent_item", "segment", "recent_item", "bought_together",
                   "recent_item", "segment"],
        "because": [["i0"], [], ["i2", "i0"], ["i0", "i1", "i2"], ["i1"], []],
        "because_weights": pa.array([[0.5], [], [0.25, 0.125], [3.0, 2.0, 1.0], [1.0], []],
                                    pa.list_(pa.float32()))})
    users, items = pd.Index(["a", "b", "z"]), pd.Index(["i0", "i1", "i2"])
    answers = Answers(table, users, items, ("vector", "blend"))        # "c": not a user
    ranked, explained = answers.get(0, "vector", 10)
    np.testing.assert_array_equal(ranked["vector"].rows, [[1, 0]])     # rank 1 first
    np.testing.assert_array_equal(ranked["vector"].scores, np.float32([[0.9, 0.7]]))
    exp = explained["vector"]
    assert [REASONS[r] for r in exp.reason[0]] == ["recent_item", "segment"]
    np.testing.assert_array_equal(exp.because[0], [[2, 0, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(exp.weights[0], np.float32([[0.25, 0.125, 0], [0, 0, 0]]))
    ranked, explained = answers.get(1, "blend", 1)
    np.testing.assert_array_equal(explained["blend"].because, [[[0, 1, 2]]])
    assert answers.get(0, "vector", 1)[0]["vector"].rows.shape == (1, 1)
    assert answers.get(2, "vector", 5) is None                # no rows for this user


@pytest.mark.slow
@pytest.mark.parametrize("user_repr", ["encoder", "pooled"])
def test_stored_answers_equal_the_computed_ones(pipeline_runs, user_repr):
    out, manifest, _ = pipeline_runs(user_repr)
    stored, computed = ProfileService(out), ProfileService(out, answers_max_rows=0)
    assert stored.answers is not None and computed.answers is None
    rows = manifest["tables"]["recommendations"]
    assert ProfileService(out, answers_max_rows=rows - 1).answers is None
    top = stored.cfg.recommend.k
    users = pd.read_parquet(f"{out}/current/profiles.parquet").user_id.sample(
        25, random_state=1).tolist()
    for user in users:
        for strategy in stored.cfg.recommend.strategies:
            for k in (1, 7, top, top + 1):     # above recommend.k: computed by both
                a, b = stored.recommend(user, k, strategy), computed.recommend(user, k, strategy)
                assert {**a, "items": None} == {**b, "items": None}
                assert len(a["items"]) == len(b["items"]) <= k
                for x, y in zip(a["items"], b["items"]):
                    assert x["score"] == pytest.approx(y["score"], rel=1e-5, abs=1e-6)
                    assert x.get("because_weights") == pytest.approx(
                        y.get("because_weights"), rel=1e-5, abs=1e-6)
                    same = ("score", "because_weights")
                    assert {f: v for f, v in x.items() if f not in same} == \
                        {f: v for f, v in y.items() if f not in same}
