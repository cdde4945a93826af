"""events/sequences.py: time-ordered sequences, truncation, deduplication, the held-out last
item and sequence texts."""
import numpy as np
import pyarrow as pa

from raypipe.config import SequenceConfig
from raypipe.events.sequences import (build_sequences, cold_mask, drop_items, holdout_last,
                                      sequence_text)


def events(rows):
    """rows: (user, item, timestamp, event_type)."""
    u, i, t, e = zip(*rows)
    return pa.table({"user_id": list(u), "item_id": list(i), "timestamp": list(t),
                     "event_type": list(e), "_file": ["f"] * len(rows),
                     "_row": list(range(1, len(rows) + 1))})


LOG = events([("a", "x", 30, "view"), ("b", "y", 5, "purchase"), ("a", "y", 10, "click"),
              ("a", "z", 30, "cart"), ("a", "x", 40, "purchase")])


def test_time_ordered_with_log_order_breaking_ties_and_counts():
    seqs = build_sequences(LOG, SequenceConfig()).to_pylist()
    a = next(s for s in seqs if s["user_id"] == "a")
    assert a["item_ids"] == ["y", "x", "z", "x"]
    assert a["event_types"] == ["click", "view", "cart", "purchase"]
    assert a["timestamps"] == [10, 30, 30, 40]
    assert (a["n_events"], a["n_view"], a["n_click"], a["n_cart"], a["n_purchase"]) == \
        (4, 1, 1, 1, 1)


def test_last_n_kept_and_counts_cover_all_events():
    a = build_sequences(LOG, SequenceConfig(max_length=2)).to_pylist()[0]
    assert a["item_ids"] == ["z", "x"] and a["n_events"] == 4


def test_dedup_items_keeps_first_and_min_length_flags_short_users():
    seqs = build_sequences(LOG, SequenceConfig(dedup_items=True, min_length=2)).to_pylist()
    by_user = {s["user_id"]: s for s in seqs}
    assert by_user["a"]["item_ids"] == ["y", "x", "z"]
    assert not by_user["a"]["too_short"] and by_user["b"]["too_short"]


def test_holdout_last_splits_target_and_validation():
    seqs = holdout_last(build_sequences(LOG, SequenceConfig()))
    by_user = {s["user_id"]: s for s in seqs.to_pylist()}
    assert by_user["a"]["item_ids"] == ["y", "x", "z"]
    assert by_user["a"]["event_types"] == ["click", "view", "cart"]
    assert (by_user["a"]["target_item"], by_user["a"]["valid_item"]) == ("x", "z")
    assert by_user["b"]["target_item"] is None and by_user["b"]["item_ids"] == ["y"]


def test_cold_items_leave_the_histories_and_stay_as_targets():
    log = events([("a", "y", 10, "click"), ("a", "x", 30, "view"), ("a", "z", 35, "cart"),
                  ("a", "x", 40, "purchase"), ("c", "x", 1, "view"), ("c", "y", 2, "view"),
                  ("c", "w", 3, "view"), ("d", "x", 1, "view"), ("d", "z", 2, "view")])
    seqs = drop_items(holdout_last(build_sequences(log, SequenceConfig(min_length=2))),
                      frozenset({"x"}), min_length=2)
    by_user = {s["user_id"]: s for s in seqs.to_pylist()}
    a, c, d = by_user["a"], by_user["c"], by_user["d"]
    # a's cold target stays; its earlier event on the same item goes, with its type and time
    assert (a["item_ids"], a["event_types"], a["timestamps"]) == \
        (["y", "z"], ["click", "cart"], [10, 35])
    assert (a["target_item"], a["valid_item"], a["too_short"]) == ("x", "z", False)
    assert (c["item_ids"], c["target_item"], c["valid_item"]) == (["y"], "w", None)
    # d keeps only its target: too short to profile
    assert d["item_ids"] == [] and d["target_item"] == "z" and d["too_short"]
    assert drop_items(seqs, frozenset(), 2).equals(seqs)


def test_cold_items_are_a_seeded_share_whatever_their_order():
    ids = [f"i{n}" for n in range(5000)]
    mask = cold_mask(ids, 0.1, seed=3)
    assert 0.08 < mask.mean() < 0.12
    shuffled = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(cold_mask([ids[i] for i in shuffled], 0.1, 3), mask[shuffled])
    assert (cold_mask(ids, 0.1, 4) != mask).any()
    assert not cold_mask(ids, 0.0, 3).any()


def test_sequence_text_most_recent_first_and_capped():
    text = sequence_text(["tent", "stove", "lamp"], ["view", "cart", "purchase"], max_items=2)
    assert text == "purchase: lamp; cart: stove"
