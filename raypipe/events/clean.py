"""Cleaning: raw rows -> kept rows and quarantined rows with a reason. Nothing is dropped.

Knows nothing about Ray. `tag_events` checks each row on its own; `mark_duplicates` needs all
rows of a user together (the Ray stage hash-partitions by user first); `clean_items` works on
the whole catalogue. Every row comes out with `_reason` null (kept) or the first failed check.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.schema import DEFAULT_EVENT_TYPE, EVENT_TYPES, FILE, QUARANTINE, REASON, ROW

# Reason -> the column it is about, for --strict messages.
REASON_COLUMN = {
    "missing_user_id": "user_id", "missing_item_id": "item_id",
    "missing_timestamp": "timestamp", "unparsable_timestamp": "timestamp",
    "unknown_event_type": "event_type", "non_positive_price": "price",
    "non_positive_quantity": "quantity", "item_without_text": "item_id",
    "duplicate_event": "*", "missing_text": "text", "duplicate_item_id": "item_id",
}


RAW_TIMESTAMP = "_timestamp_raw"


class BadRowError(ValueError):
    """Raised in strict mode at the first bad row."""


def _blank(arr: pa.Array) -> pa.Array:
    return pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), ""), True)


def parse_timestamps(raw: pa.Array) -> pa.Array:
    """Strings -> int64 epoch seconds: numbers are seconds, else ISO 8601; null if unparsable."""
    s = pd.Series(raw.to_pandas(), dtype=object)
    numeric = pd.to_numeric(s, errors="coerce")
    seconds = numeric.fillna(_iso_seconds(s.where(numeric.isna())))
    values = seconds.to_numpy(dtype="float64")
    bad = ~np.isfinite(values)
    return pa.array(np.floor(np.where(bad, 0.0, values)).astype("int64"), mask=bad)


def _iso_seconds(s: pd.Series) -> pd.Series:
    """ISO 8601 strings -> float epoch seconds (NaN if unparsable). pandas' nanosecond
    timestamps end in 2262; later dates (a typo, a sentinel) are parsed one by one."""
    try:
        iso = pd.to_datetime(s, format="ISO8601", utc=True, errors="coerce")
        return (iso - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    except (pd.errors.OutOfBoundsDatetime, OverflowError):
        return s.map(_one_iso_seconds).astype("float64")


def _one_iso_seconds(value) -> float:
    from datetime import datetime, timezone
    try:
        t = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    except ValueError:
        return float("nan")
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def _first_reason(checks: list[tuple[str, pa.Array]], n: int) -> pa.Array:
    reason = pa.nulls(n, pa.string())
    for name, bad in reversed(checks):   # earlier checks win
        reason = pc.if_else(pc.fill_null(bad, False), name, reason)
    return reason


def tag_events(raw: pa.Table, known_items: pa.Array | set | None = None) -> pa.Table:
    """Raw events -> the same rows with parsed `timestamp` (int64), normalised `event_type`
    and `_reason` (null = kept). `known_items`: item ids with text; None skips that check."""
    n = raw.num_rows
    ts = parse_timestamps(raw["timestamp"].combine_chunks() if isinstance(
        raw["timestamp"], pa.ChunkedArray) else raw["timestamp"])
    etype = pc.fill_null(pc.utf8_lower(pc.utf8_trim_whitespace(raw["event_type"])),
                         DEFAULT_EVENT_TYPE)
    etype = pc.if_else(pc.equal(etype, ""), DEFAULT_EVENT_TYPE, etype)
    checks = [
        ("missing_user_id", _blank(raw["user_id"])),
        ("missing_item_id", _blank(raw["item_id"])),
        ("missing_timestamp", _blank(raw["timestamp"])),
        ("unparsable_timestamp", pc.is_null(ts)),
        ("unknown_event_type", pc.invert(pc.is_in(etype, pa.array(EVENT_TYPES)))),
        ("non_positive_price", pc.less_equal(raw["price"], 0.0)),
        ("non_positive_quantity", pc.less_equal(raw["quantity"], 0.0)),
    ]
    if known_items is not None:
        if not isinstance(known_items, pa.Array):
            known_items = pa.array(list(known_items), pa.string())
        item_ok = pc.is_in(raw["item_id"], value_set=known_items)
        checks.append(("item_without_text", pc.invert(item_ok)))
    # The raw timestamp stays beside the parsed one, so quarantined rows keep what was read.
    out = raw.rename_columns({"timestamp": RAW_TIMESTAMP}).append_column("timestamp", ts)
    out = out.set_column(out.schema.get_field_index("event_type"), "event_type", etype)
    return out.append_column(REASON, _first_reason(checks, n))


def mark_duplicates(tagged: pa.Table) -> pa.Table:
    """Mark exact repeats of a kept event (same user, item, time, type, price, quantity)."""
    df = tagged.select(["user_id", "item_id", "timestamp", "event_type", "price", "quantity",
                        REASON]).to_pandas()
    kept = df[REASON].isna()
    dup = kept & df[kept].duplicated(keep="first").reindex(df.index, fill_value=False)
    reason = pc.if_else(pa.array(dup.to_numpy()), "duplicate_event", tagged[REASON])
    return tagged.set_column(tagged.schema.get_field_index(REASON), REASON, reason)


def raise_first_bad(tagged: pa.Table, table: str = "events") -> None:
    """Strict mode: raise naming file, row and column of the first bad row, if any."""
    bad = pc.is_valid(tagged[REASON])
    if not pc.any(bad).as_py():
        return
    i = pc.index(bad, True).as_py()
    row = tagged.slice(i, 1).to_pylist()[0]
    reason = row[REASON]
    col = REASON_COLUMN.get(reason, "?")
    value = row.get(col) if col in row else None
    raise BadRowError(f"bad {table} row: file {row[FILE]}, row {row[ROW]}, column {col!r}: "
                      f"{reason} (value {value!r})")


def quarantine_rows(tagged: pa.Table, table: str) -> pa.Table:
    """Rows with a reason -> the quarantine schema, each row kept whole as JSON, as read."""
    bad = tagged.filter(pc.is_valid(tagged[REASON]))
    payload = bad.drop_columns([FILE, ROW, REASON])
    if RAW_TIMESTAMP in payload.column_names:
        payload = payload.drop_columns(["timestamp"])
        payload = payload.rename_columns(
            ["timestamp" if c == RAW_TIMESTAMP else c for c in payload.column_names])
    records = [json.dumps(r, default=str) for r in payload.to_pylist()]
    return pa.table({"table": pa.array([table] * bad.num_rows, pa.string()),
                     "reason": bad[REASON], FILE: bad[FILE], ROW: bad[ROW],
                     "record": pa.array(records, pa.string())}, schema=QUARANTINE)


def kept_rows(tagged: pa.Table, columns: list[str]) -> pa.Table:
    return tagged.filter(pc.is_null(tagged[REASON])).select(columns)


def clean_items(raw: pa.Table) -> pa.Table:
    """Raw catalogue -> rows tagged with `_reason`: missing id or text, or a repeated id
    (the first row of each id wins; sources put the most frequent text first)."""
    ids, texts = raw["item_id"], pc.utf8_trim_whitespace(raw["text"])
    df = pd.DataFrame({"id": ids.to_pandas()})
    ok_so_far = ~(_blank(ids).to_numpy(zero_copy_only=False) |
                  _blank(texts).to_numpy(zero_copy_only=False))
    dup = np.zeros(len(df), bool)
    dup[ok_so_far] = df[ok_so_far].duplicated(keep="first").to_numpy()
    checks = [("missing_item_id", _blank(ids)), ("missing_text", _blank(texts)),
              ("duplicate_item_id", pa.array(dup))]
    out = raw.set_column(raw.schema.get_field_index("text"), "text", texts)
    return out.append_column(REASON, _first_reason(checks, raw.num_rows))


def count_reasons(reasons: pa.Array) -> dict:
    """Quarantine reasons -> {reason: count}, sorted by reason."""
    counts = pc.value_counts(pc.drop_null(reasons)).to_pylist()
    return {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])}
