"""events/clean.py: timestamps, each bad row's reason, event types, duplicates, strict mode,
the quarantine and item cleaning."""
import pyarrow as pa
import pytest

from raypipe.events import clean
from raypipe.events.sources import RAW_EVENTS, RAW_ITEMS


def raw_events(rows):
    """rows: dicts with any of the raw columns; the rest null; provenance filled in."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in RAW_EVENTS}
    cols["_file"] = ["f.csv"] * len(rows)
    cols["_row"] = list(range(1, len(rows) + 1))
    return pa.table(cols, schema=RAW_EVENTS)


GOOD = {"user_id": "u1", "item_id": "i1", "timestamp": "1700000000", "event_type": "view"}


def test_parse_timestamps_epoch_and_iso():
    got = clean.parse_timestamps(pa.array(["1700000000", "2010-12-01 08:26:00",
                                           "2024-01-01T00:00:00Z", "1.5e9", "soon", None]))
    assert got.to_pylist() == [1700000000, 1291191960, 1704067200, 1500000000, None, None]


def test_dates_past_2262_parse_and_garbage_beside_them_stays_unparsable():
    # pandas' nanosecond clock ends in 2262; a log with a far-future typo must not crash.
    got = clean.parse_timestamps(pa.array(["3321-10-21T05:32:33Z", "2024-01-01", "nope"]))
    assert got.to_pylist() == [42658810353, 1704067200, None]


@pytest.mark.parametrize("change, reason", [
    ({"user_id": None}, "missing_user_id"),
    ({"user_id": "  "}, "missing_user_id"),
    ({"item_id": None}, "missing_item_id"),
    ({"timestamp": None}, "missing_timestamp"),
    ({"timestamp": "yesterday"}, "unparsable_timestamp"),
    ({"event_type": "wishlist"}, "unknown_event_type"),
    ({"price": 0.0}, "non_positive_price"),
    ({"quantity": -1.0}, "non_positive_quantity"),
    ({"item_id": "unknown"}, "item_without_text"),
])
def test_each_bad_row_gets_its_reason(change, reason):
    tagged = clean.tag_events(raw_events([GOOD, {**GOOD, **change}]), {"i1"})
    assert tagged["_reason"].to_pylist() == [None, reason]


def test_event_type_defaults_to_purchase_and_is_normalised():
    tagged = clean.tag_events(raw_events([{**GOOD, "event_type": None},
                                          {**GOOD, "event_type": " Cart "}]), {"i1"})
    assert tagged["event_type"].to_pylist() == ["purchase", "cart"]
    assert tagged["_reason"].null_count == 2


def test_exact_duplicates_after_the_first_are_marked():
    tagged = clean.tag_events(raw_events([GOOD, GOOD, {**GOOD, "event_type": "click"}, GOOD]),
                              {"i1"})
    marked = clean.mark_duplicates(tagged)
    assert marked["_reason"].to_pylist() == [None, "duplicate_event", None, "duplicate_event"]


def test_strict_names_file_row_and_column():
    tagged = clean.tag_events(raw_events([GOOD, {**GOOD, "timestamp": "later"}]), {"i1"})
    with pytest.raises(clean.BadRowError, match=r"file f.csv, row 2, column 'timestamp'"):
        clean.raise_first_bad(tagged)


def test_quarantine_keeps_the_record_and_counts_add_up():
    tagged = clean.tag_events(raw_events([GOOD, {**GOOD, "user_id": None}]), {"i1"})
    q = clean.quarantine_rows(tagged, "events")
    assert q.num_rows == 1 and q["reason"][0].as_py() == "missing_user_id"
    assert '"item_id": "i1"' in q["record"][0].as_py()
    assert clean.count_reasons(tagged["_reason"]) == {"missing_user_id": 1}


def test_clean_items_first_text_wins_and_blank_text_is_quarantined():
    raw = pa.table({"item_id": ["a", "a", "b", None], "text": ["A1", "A2", "  ", "x"],
                    "_file": ["c"] * 4, "_row": [1, 2, 3, 4], "_read_error": [None] * 4,
                    "_record": [None] * 4}, schema=RAW_ITEMS)
    tagged = clean.clean_items(raw)
    assert tagged["_reason"].to_pylist() == [None, "duplicate_item_id", "missing_text",
                                             "missing_item_id"]
