"""segments/profiles.py: nearest segment and confidence, interests, the segments' item
mass, distinctive terms and segment summaries, on hand-made cases."""
import numpy as np
import pytest

from raypipe.segments.segmentation import Segmentation
from raypipe.segments.profiles import (distinctive_terms, interests, nearest_segments,
                              segment_item_mass, summarize_segments)

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
