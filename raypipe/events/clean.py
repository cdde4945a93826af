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

from raypipe.schema import (DEFAULT_EVENT_TYPE, EVENT_TYPES, FILE,
                            QUARANTINE, READ_ERROR, REASON, RECORD, ROW)

# Reason -> the column it is about, for --strict messages ("*": the whole record). The
# readers' reasons (events/formats.py, events/readers.py) come first.
REASON_COLUMN = {
    "unreadable_file": "*", "unreadable_row_group": "*", "malformed_csv_row": "*",
    "invalid_utf8": "*", "invalid_json": "*", "not_an_object": "*", "invalid_unicode": "*",
    "value_too_long": "*", "non_numeric_price": "price", "non_numeric_quantity": "quantity",
    "missing_user_id": "user_id", "missing_item_id": "item_id",
    "missing_timestamp": "timestamp", "unparsable_timestamp": "timestamp",
    "timestamp_out_of_range": "timestamp",
    "unknown_event_type": "event_type", "non_positive_price": "price",
    "non_positive_quantity": "quantity", "item_without_text": "item_id",
    "duplicate_event": "*", "missing_text": "text", "duplicate_item_id": "item_id",
}
# Epoch seconds beyond this lose precision as float64 (and are beyond any real log).
MAX_SECONDS = 2.0 ** 53


RAW_TIMESTAMP = "_timestamp_raw"


class BadRowError(ValueError):
    """Raised in strict mode at the first bad row."""


def _blank(arr: pa.Array) -> pa.Array:
    return pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), ""), True)


def parse_timestamps(raw: pa.Array) -> pa.Array:
    """Strings -> int64 epoch seconds: numbers are seconds, else ISO 8601; null if
    unparsable or out of range (see timestamp_out_of_range)."""
    values = _seconds(raw)
    bad = ~np.isfinite(values) | (np.abs(np.nan_to_num(values)) > MAX_SECONDS)
    return pa.array(np.floor(np.where(bad, 0.0, values)).astype("int64"), mask=bad)


def _seconds(raw: pa.Array) -> np.ndarray:
    s = pd.Series(raw.to_pandas(), dtype=object)
    numeric = pd.to_numeric(s, errors="coerce")
    seconds = numeric.fillna(_iso_seconds(s.where(numeric.isna())))
    return seconds.to_numpy(dtype="float64")


def timestamp_out_of_range(raw: pa.Array) -> pa.Array:
    """True where a timestamp parses but lies beyond MAX_SECONDS from 1970 (or is infinite)."""
    values = _seconds(raw)
    return pa.array(np.isinf(values) | (np.abs(np.nan_to_num(values, posinf=0, neginf=0))
                                        > MAX_SECONDS))


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
    raw_ts = raw["timestamp"].combine_chunks() if isinstance(
        raw["timestamp"], pa.ChunkedArray) else raw["timestamp"]
    ts = parse_timestamps(raw_ts)
    etype = pc.fill_null(pc.utf8_lower(pc.utf8_trim_whitespace(raw["event_type"])),
                         DEFAULT_EVENT_TYPE)
    etype = pc.if_else(pc.equal(etype, ""), DEFAULT_EVENT_TYPE, etype)
    checks = [
        ("missing_user_id", _blank(raw["user_id"])),
        ("missing_item_id", _blank(raw["item_id"])),
        ("missing_timestamp", _blank(raw["timestamp"])),
        ("timestamp_out_of_range", timestamp_out_of_range(raw_ts)),
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
    return out.append_column(REASON, _with_read_errors(raw, _first_reason(checks, n)))


def _with_read_errors(raw: pa.Table, reason: pa.Array) -> pa.Array:
    """The reader's reason, where it gave one, comes before every check of the values."""
    if READ_ERROR not in raw.column_names:
        return reason
    read = raw[READ_ERROR].combine_chunks()
    return pc.if_else(pc.is_valid(read), read, reason)


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
    value = row.get(RECORD) if col == "*" and row.get(RECORD) else row.get(col)
    raise BadRowError(f"bad {table} row: file {row[FILE]}, row {row[ROW]}, column {col!r}: "
                      f"{reason} (value {value!r})")


def quarantine_rows(tagged: pa.Table, table: str) -> pa.Table:
    """Rows with a reason -> the quarantine schema, each row kept whole as read: the raw
    record where the reader kept one, else the row's fields as JSON."""
    bad = tagged.filter(pc.is_valid(tagged[REASON]))
    payload = bad.drop_columns([c for c in (FILE, ROW, REASON, READ_ERROR, RECORD)
                                if c in bad.column_names])
    if RAW_TIMESTAMP in payload.column_names:
        payload = payload.drop_columns(["timestamp"])
        payload = payload.rename_columns(
            ["timestamp" if c == RAW_TIMESTAMP else c for c in payload.column_names])
    raw = bad[RECORD].to_pylist() if RECORD in bad.column_names else [None] * bad.num_rows
    records = [r if r is not None else json.dumps(p, default=str)
               for r, p in zip(raw, payload.to_pylist())]
    users = bad["user_id"] if "user_id" in bad.column_names else pa.nulls(bad.num_rows,
                                                                          pa.string())
    return pa.table({"table": pa.array([table] * bad.num_rows, pa.string()),
                     "reason": bad[REASON], FILE: bad[FILE], ROW: bad[ROW],
                     "user_id": users, "record": pa.array(records, pa.string())},
                    schema=QUARANTINE)


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
    return out.append_column(REASON, _with_read_errors(raw, _first_reason(checks, raw.num_rows)))


def count_reasons(reasons: pa.Array) -> dict:
    """Quarantine reasons -> {reason: count}, sorted by reason."""
    counts = pc.value_counts(pc.drop_null(reasons)).to_pylist()
    return {c["values"]: c["counts"] for c in sorted(counts, key=lambda c: c["values"])}


def tally(tagged: pa.Table) -> pa.Table:
    """Tagged rows -> (file, reason, n) counts; sums of tallies tally the union."""
    t = tagged.select([FILE, REASON]).group_by([FILE, REASON], use_threads=False) \
        .aggregate([([], "count_all")])
    return t.rename_columns(["file", "reason", "n"])


def row_counts(tallies: pa.Table, planned: list[str], not_read: list) -> dict:
    """Tallies of every tagged row -> the manifest's accounting: read, kept, quarantined,
    reasons, and per file the records read (every planned file, 0 for an empty one) and
    quarantined; `not_read`: the input folder's files that were not read, with why."""
    t = tallies.group_by(["file", "reason"], use_threads=False).aggregate([("n", "sum")])
    files = {f: {"file": f, "records": 0, "quarantined": 0} for f in sorted(set(planned))}
    reasons: dict = {}
    for row in t.to_pylist():
        entry = files.setdefault(row["file"], {"file": row["file"], "records": 0,
                                               "quarantined": 0})
        entry["records"] += row["n_sum"]
        if row["reason"] is not None:
            entry["quarantined"] += row["n_sum"]
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + row["n_sum"]
    read = sum(f["records"] for f in files.values())
    quarantined = sum(reasons.values())
    return {"read": read, "kept": read - quarantined, "quarantined": quarantined,
            "reasons": dict(sorted(reasons.items())), "files": list(files.values()),
            "not_read": list(not_read)}
