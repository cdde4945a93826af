"""recommend/explain.py on tiny hand-made cases: every strategy's reason and evidence (the
cited items are in the history; pooled weights are the exact score drop without them;
co-occurrence evidence is the counted pairs; segment evidence is the user's segment and its
own items; blend takes its largest component's), and the table's columns."""
import numpy as np
import pyarrow as pa
import pytest

from raypipe.config import RecommendConfig
from raypipe.recommend import explain
from raypipe.recommend.cooccur import Followers
from raypipe.recommend.recommender import Recommender

# Five items on the unit circle's axes in 3-d: 0 and 1 close to x, 2 close to y, 3 and 4 z.
V = np.array([[1, 0.1, 0], [0.9, 0.3, 0], [0, 1, 0.1], [0, 0.1, 1], [0.1, 0, 1]], np.float32)
V /= np.linalg.norm(V, axis=1, keepdims=True)
IDS = [f"i{j}" for j in range(5)]
TEXTS = ["red shoe | shoes", "blue shoe | shoes", "green hat", "wool scarf", "silk scarf"]


def _rec(strategies=("vector", "segment", "blend"), followers=None, weights=(0.0, 0.0)):
    seg = [(np.array([3, 4]), np.array([1.0, 0.5], np.float32)),
           (np.array([0, 1]), np.array([1.0, 0.8], np.float32))]
    cfg = RecommendConfig(k=2, strategies=strategies, exclude_purchased=True)
    return Recommender(IDS, V, seg, cfg, followers=followers, blend_weights=weights)


def _evidence(history, query_weights, segments=(0,), **kw):
    return explain.Evidence(history=[np.array(h) for h in history],
                            query_weights=[np.array(w, np.float64) for w in query_weights],
                            taste_weights=[np.ones(len(h)) for h in history],
                            segments=np.array(segments), **kw)


def _query(history, weights):
    q = (V[history] * np.array(weights)[:, None]).sum(0)
    return (q / np.linalg.norm(q))[None].astype(np.float32)


def test_pooled_vector_weights_are_the_exact_score_drop_without_each_item():
    history, w = [0, 3, 0], [0.2, 1.0, 0.4]        # the scarf is the heavy one; 0 twice
    ranked, why = _rec(("vector",)).recommend(_query(history, w), np.array([0]),
                                              [{0, 3}], evidence=_evidence([history], [w]))
    rows, scores = ranked["vector"][0]
    assert list(rows) == [4, 1]                      # silk scarf, then blue shoe
    exp = why["vector"]
    assert exp.reason[0, 0] == explain.REASONS.index("recent_item")
    assert exp.because[0, 0, 0] == 3                 # the scarf explains the scarf
    assert exp.because[0, 1, 0] == 0                 # the shoe explains the shoe
    for c, item in enumerate(rows):
        for cited, weight in zip(exp.because[0, c], exp.weights[0, c]):
            if cited < 0:
                continue
            assert cited in history
            keep = [j for j, h in enumerate(history) if h != cited]    # all its events
            after = _query([history[j] for j in keep], [w[j] for j in keep])[0] @ V[item]
            assert weight == pytest.approx(scores[c] - after, abs=1e-5)


def test_cooccurrence_evidence_is_the_counted_pairs_with_the_recency_decay():
    # 2 -> 4 counted 4 times, 0 -> 4 once; the user's latest item is 0, then 2 before it
    followers = Followers(np.array([2, 0, 0]), np.array([4, 4, 1]), np.array([4, 1, 3]), 5, 10)
    ev = _evidence([[2, 0]], [[0.5, 1.0]])
    exp = explain.cooccurrence(np.array([[4, 1]]), ev, followers, recent=3)
    assert exp.reason[0, 0] == explain.REASONS.index("bought_together")
    # terms: item 0 (latest, 1.0 x 1) and item 2 (0.5 x 4 = 2): 2 first, shares 2/3, 1/3
    assert list(exp.because[0, 0, :2]) == [2, 0]
    np.testing.assert_allclose(exp.weights[0, 0, :2], [2 / 3, 1 / 3], rtol=1e-6)
    assert list(exp.because[0, 1]) == [0, -1, -1]    # only 0 -> 1 was counted


def test_segment_evidence_names_the_users_segment_and_its_own_items():
    centroids = np.array([[0, 0, 1], [1, 0, 0]], np.float32)
    ev = _evidence([[0, 3, 2]], [[1, 1, 1]], segments=(0,), centroids=centroids)
    ranked, why = _rec(("segment",)).recommend(_query([0, 3, 2], [1, 1, 1]), np.array([0]),
                                               [set()], evidence=ev)
    exp = why["segment"]
    assert list(ranked["segment"][0][0]) == [3, 4]   # segment 0's ranking
    assert (exp.reason[0] == explain.REASONS.index("segment")).all()
    assert exp.because[0, 0, 0] == 3                 # the user's item nearest segment 0
    table = _rec(("segment",)).to_table(["u"], ranked, why, TEXTS, segments=[0])
    assert table["explanation"][0].as_py().startswith("Popular with shoppers like you "
                                                      "(segment 0)")


def test_blend_takes_the_reason_of_its_largest_component():
    followers = Followers(np.array([0]), np.array([2]), np.array([5]), 5, 10)
    history, w = [3, 0], [1.0, 0.5]
    rec = _rec(("blend",), followers=followers, weights=(0.0, 1.0))
    ranked, why = rec.recommend(_query(history, w), np.array([0]), [{3, 0}],
                                history=[np.array(history)],
                                evidence=_evidence([history], [w], centroids=V[[3, 0]]))
    rows = list(ranked["blend"][0][0])
    exp = why["blend"]
    at = rows.index(2)              # the hat: no vector closeness, 0 -> 2 counted 5 times
    assert exp.reason[0, at] == explain.REASONS.index("bought_together")
    assert exp.because[0, at, 0] == 0
    other = 1 - at                  # the other item comes from the vector score
    assert exp.reason[0, other] == explain.REASONS.index("recent_item")
    # the weight is the blended score's exact drop without the cited item: vector part
    # plus the co-occurrence weight times the co-occurrence part (0 -> 2 is gone)
    full = _query(history, w)[0] @ V[2] + followers.scores([np.array(history)], 3)[0, 2]
    short = _query([3], [1.0])[0] @ V[2] + followers.scores([np.array([3])], 3)[0, 2]
    assert exp.weights[0, at, 0] == pytest.approx(full - short, abs=1e-6)


def test_sentences_without_any_citation():
    exp = explain.Explained.empty(2, 3, "recent_item")
    got = explain.columns(exp, np.array([0, 1]), np.array([0, 2]), pa.array(IDS), TEXTS, None)
    assert got["explanation"].to_pylist() == ["Close to your recent activity"] * 2
    assert got["because"].to_pylist() == [[], []]


def test_interest_evidence_is_the_interests_own_items():
    item_segment = np.array([0, 0, 1, 2, 2])
    history, w = [0, 3, 1], [0.2, 0.3, 1.0]
    queries = np.stack([_query([0, 1], [0.2, 1.0])[0], _query([3], [0.3])[0]])[None]
    ev = _evidence([history], [w], interest_segments=[[0, 2]], interest_queries=queries,
                   recent_weights=[np.array(w)],
                   item_segment=item_segment)
    exp = explain.interest(np.array([[4, 2]]), ev, V)
    assert exp.reason[0, 0] == explain.REASONS.index("interest")
    assert list(exp.because[0, 0, :1]) == [3]        # the scarf interest explains the scarf
    assert set(exp.because[0, 1][exp.because[0, 1] >= 0]) <= {0, 1}


def test_the_table_carries_reasons_cited_ids_weights_and_a_sentence():
    history, w = [0, 3], [0.2, 1.0]
    rec = _rec(("vector",))
    ranked, why = rec.recommend(_query(history, w), np.array([0]), [{0, 3}],
                                evidence=_evidence([history], [w]))
    table = rec.to_table(pa.array(["u1"]), ranked, why, TEXTS)
    assert table.column_names[-4:] == ["reason", "because", "because_weights", "explanation"]
    first = table.to_pylist()[0]
    assert first["item_id"] == "i4" and first["reason"] == "recent_item"
    assert first["because"][0] == "i3" and len(first["because"]) == len(
        first["because_weights"]) <= explain.TOP
    assert first["explanation"].startswith("Because of 'wool scarf'")
    # without explanations the table keeps its five columns
    assert rec.to_table(["u1"], ranked).num_columns == 5


def test_cooccurrence_drops_are_the_shortened_historys_scores():
    """occlusion.cooccurrence_drops against scoring each shortened history from scratch,
    with items repeated across the window (those read the whole history)."""
    from types import SimpleNamespace
    from raypipe.recommend.occlusion import cooccurrence_drops
    rng = np.random.default_rng(5)
    n_items, recent = 12, 3
    followers = Followers(rng.integers(0, n_items, 300), rng.integers(0, n_items, 300),
                          rng.integers(1, 6, 300), n_items, 5)
    history = [rng.integers(0, 3 if u % 2 else n_items, int(rng.integers(1, 14)))
               for u in range(40)]
    rows = rng.integers(-1, n_items, (40, 4))
    rec = SimpleNamespace(followers=followers, cfg=SimpleNamespace(cooccurrence_recent=recent))
    users, removed, drops = cooccurrence_drops(rec, _evidence(history, [np.ones(len(h))
                                                                        for h in history]), rows)
    assert len(users) > 40
    for u, item, drop in zip(users, removed, drops):
        h = history[u]
        want = np.maximum(rows[u], 0)
        full = followers.scores([h], recent).toarray()[0, want]
        rest = h[h != item]
        short = followers.scores([rest], recent).toarray()[0, want] if len(rest) else 0
        np.testing.assert_allclose(drop, (full - short) * (rows[u] >= 0), atol=1e-6)
