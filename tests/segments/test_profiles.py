"""segments/profiles.py: nearest segment and confidence, interests, the segments' item
mass, distinctive terms, segment summaries and what explains a profile, on hand-made
cases."""
import numpy as np
import pytest

from raypipe.segments.segmentation import Segmentation
from raypipe.segments.profiles import (COUNTS, distinctive_terms, interests,
                                      nearest_segments, segment_item_mass, summarize_segments)

CENTROIDS = np.array([[0, 0], [4, 0]], np.float32)


def test_nearest_segment_distance_and_confidence():
    seg, dist, conf = nearest_segments(np.array([[1, 0], [2, 0]], np.float32),
                                       Segmentation.flat(CENTROIDS))
    assert seg.tolist() == [0, 0]
    assert dist.tolist() == pytest.approx([1.0, 2.0])
    assert conf.tolist() == pytest.approx([1 - 1 / 3, 0.0])   # halfway: no confidence


def test_interests_are_weighted_shares_of_history_segments():
    item_segment = np.array([0, 1, 1, 2])
    segs, weights = interests([np.array([0, 1, 2]), np.array([3])],
                              [np.array([1.0, 1.0, 2.0]), np.array([5.0])], item_segment, 3, 2)
    assert segs == [[1, 0], [2]]
    assert weights[0] == pytest.approx([0.75, 0.25]) and weights[1] == [1.0]


def test_segment_item_mass_sums_weights_per_segment_and_item():
    mass = segment_item_mass(np.array([0, 0, 1]), [np.array([2, 3]), np.array([2]),
                                                    np.array([2])],
                             [np.array([1.0, 2.0]), np.array([0.5]), np.array([4.0])])
    got = sorted(zip(*(mass[c].to_pylist() for c in ("segment", "item_row", "weight"))))
    assert got == [(0, 2, 1.5), (0, 3, 2.0), (1, 2, 4.0)]


def test_distinctive_terms_prefer_words_unique_to_a_segment():
    texts = ["trail tent camping", "camping stove", "chef knife kitchen", "kitchen pan"]
    terms = distinctive_terms({0: {0: 1.0, 1: 1.0}, 1: {2: 1.0, 3: 1.0}}, texts, top=1)
    assert terms == {0: ["camping"], 1: ["kitchen"]}


def test_summary_has_a_row_per_segment_even_when_empty():
    mass = segment_item_mass(np.array([0]), [np.array([0, 1])], [np.array([1.0, 3.0])])
    table = summarize_segments(np.array([1, 0]), mass, ["a", "b"], ["red tent", "blue tent"],
                               top_items=5, top_terms=3)
    rows = table.to_pylist()
    assert [r["segment"] for r in rows] == [0, 1]
    assert rows[0]["top_items"] == ["b", "a"] and rows[1]["top_items"] == []
    assert rows[0]["size"] == 1 and "tent" in rows[0]["top_terms"]


def test_representative_items_by_lift_not_by_global_popularity(monkeypatch):
    from raypipe.segments import profiles
    # Item 0 is everyone's favourite; 1 belongs to segment 0, 2 and 3 to segment 1; item 4 is
    # segment 1's alone but too rare to be among its popular ones (pool of 3 here).
    monkeypatch.setattr(profiles, "POPULAR_POOL", 3)
    mass = {0: {0: 50.0, 1: 20.0, 2: 1.0}, 1: {0: 60.0, 2: 15.0, 3: 5.0, 4: 0.5}}
    assert profiles.representative_items(mass, top=2) == {0: [1, 0], 1: [3, 2]}
    assert profiles.representative_items(mass, top=2, how="popular") == {0: [0, 1], 1: [0, 2]}
    # One segment: every lift is 1, the most popular first.
    assert profiles.representative_items({0: {4: 1.0, 5: 2.0}}, top=3) == {0: [5, 4]}


def test_profiles_cite_each_interests_items_and_the_users_items_nearest_its_segment():
    import pyarrow as pa
    from raypipe.segments.profiles import profile_table
    item_segment = np.array([0, 0, 1, 1, 0])
    # user 0: items 0 (twice), 1, 2; user 1: item 3 only
    rows = [np.array([0, 1, 0, 2]), np.array([3])]
    weights = [np.array([0.1, 0.2, 0.3, 1.0]), np.array([1.0])]
    item_vectors = np.array([[1, 0], [0.5, 0.5], [0, 1], [0.1, 1], [1, 0.1]], np.float32)
    counts = {c: pa.array([0, 0], pa.int64()) for c in COUNTS}
    got = profile_table(pa.array(["a", "b"]), np.array([[0.1, 0], [4, 0]], np.float32),
                        rows, weights, counts, Segmentation.flat(CENTROIDS), item_segment, 2,
                        pa.array([f"i{j}" for j in range(5)]), item_vectors).to_pylist()
    a, b = got
    # user a: interest 1 (item 2, weight 1.0), interest 0 (items 0: 0.4, 1: 0.2)
    assert a["interests"] == [1, 0]
    assert a["interest_items"] == [["i2"], ["i0", "i1"]]
    assert a["interest_item_weights"][1] == pytest.approx([0.4 / 0.6, 0.2 / 0.6], abs=1e-5)
    # segment 0's centre is (0, 0): nothing pulls towards it; b's (4, 0): item 3 does
    assert a["segment"] == 0 and a["segment_items"] == []
    assert b["segment"] == 1 and b["segment_items"] == ["i3"]
