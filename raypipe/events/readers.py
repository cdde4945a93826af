"""Reading (task side): one planned fragment -> raw events or raw items, one row per record.

Knows nothing about Ray; `jobs/ingest.py` runs it in Ray Data tasks. Nothing here raises on a
bad record: events/formats.py parses text records, events/values.py converts columns, and a
record that fails either keeps a `_read_error` and its raw `_record` for the quarantine. A
file that cannot be decoded at all becomes one `unreadable_file` row, a Parquet row group
that cannot be read one `unreadable_row_group` row per record its footer counts.
"""
from __future__ import annotations

import csv
import html
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.events import formats, values
from raypipe.events.sources import RAW_EVENTS, RAW_ITEMS, Fragment, table_format
from raypipe.run import paths as rio
from raypipe.schema import FILE, MAX_VALUE_CHARS, READ_ERROR, RECORD, ROW

# Event columns checked for length; the catalogue's text may be longer.
ID_COLUMNS = ("user_id", "item_id", "timestamp", "event_type")


def _read_bytes(uri: str, limit: int = -1) -> tuple[bytes, str | None]:
    """A file's bytes, decompressed by its suffix, and the error that cut them short."""
    fs, path = rio.resolve(uri)
    try:
        stream = fs.open_input_stream(path, compression="detect")
    except Exception as e:          # noqa: BLE001
        return b"", f"{type(e).__name__}: {e}"
    with stream:
        if limit >= 0:
            try:
                return stream.read(limit), None
            except Exception as e:  # noqa: BLE001
                return b"", f"{type(e).__name__}: {e}"
        return formats.read_all(stream)


def read_table(f: Fragment, head: bool = False) -> pa.Table:
    """One fragment of a table file -> its columns as read, plus _read_error and _record."""
    if f.fmt in ("parquet", "retail-items") and f.uri.endswith(".parquet"):
        return _read_parquet(f, head)
    data, error = _read_bytes(f.uri, 1 << 16 if head else -1)
    if head:                        # whole lines of the first 64 KiB: the header at least
        data, error = data[: data.rfind(b"\n") + 1] or data, None
    fmt = table_format(f.uri) if f.fmt == "retail-items" else f.fmt
    t = formats.parse_csv(data) if fmt == "csv" else formats.parse_jsonl(data)
    return formats.with_file_error(t, error)


def _read_parquet(f: Fragment, head: bool) -> pa.Table:
    fs, path = rio.resolve(f.uri)
    try:
        pf = pq.ParquetFile(fs.open_input_file(path))
        if head:
            return pf.schema_arrow.empty_table()
        t = pf.read_row_group(f.row_group) if f.row_group >= 0 else pf.read()
    except Exception as e:          # noqa: BLE001 - a corrupt file or row group
        if head:
            return pa.table({})
        n = f.rows if f.rows >= 0 else 1
        why = "unreadable_row_group" if f.rows >= 0 else "unreadable_file"
        return formats.table([], [[]] * n, [why] * n, [f"{type(e).__name__}: {e}"] * n)
    return formats.read_cleanly(t)


def _provenance(n: int, f: Fragment) -> dict:
    return {FILE: pa.array([f.uri], pa.string()).take(np.zeros(n, np.int64)),
            ROW: pa.array(np.arange(f.row_offset + 1, f.row_offset + n + 1, dtype=np.int64))}


def _converted(t: pa.Table, mapping: dict, columns: dict) -> tuple[dict, pa.Array]:
    """The canonical `columns` ({name: string | float64}) from the file's mapped columns, and
    the reader's reason per row: its own, else the first value that would not convert
    (invalid_utf8, value_too_long, non_numeric_<column>)."""
    n = t.num_rows
    cols, checks = {}, []
    for name, type_ in columns.items():
        source = mapping.get(name, name)
        if source not in t.column_names:
            cols[name] = pa.nulls(n, type_)
            continue
        if type_ == pa.string():
            cols[name], bad = values.strings(t[source])
            checks.append(("invalid_utf8", bad))
            if name in ID_COLUMNS:
                checks.append(("value_too_long", values.too_long(cols[name], MAX_VALUE_CHARS)))
        else:
            cols[name], bad = values.numbers(t[source])
            checks.append((f"non_numeric_{name}", bad))
    reason = t[READ_ERROR].combine_chunks() if READ_ERROR in t.column_names \
        else pa.nulls(n, pa.string())
    for why, bad in checks:
        if bad.any():
            reason = pc.if_else(pc.and_(pc.is_null(reason), pa.array(bad)), why, reason)
    return cols, reason


def _records(t: pa.Table, reason: pa.Array) -> pa.Array:
    """The raw record for each row the reader flagged: the text it kept, else the row's
    values as read, as JSON (bytes escaped)."""
    kept = t[RECORD].combine_chunks() if RECORD in t.column_names else pa.nulls(len(reason),
                                                                               pa.string())
    fill = pc.and_(pc.is_valid(reason), pc.is_null(kept)).to_numpy(zero_copy_only=False)
    if not fill.any():
        return kept
    data = t.drop_columns([c for c in (READ_ERROR, RECORD) if c in t.column_names])
    rows = data.take(pa.array(fill.nonzero()[0])).to_pylist()
    out = kept.to_pylist()
    for i, row in zip(fill.nonzero()[0], rows):
        out[i] = json.dumps(row, default=_escape, ensure_ascii=False, sort_keys=True)
    return pa.array(out, pa.string())


def _escape(v) -> str:
    return formats.escaped(v) if isinstance(v, (bytes, bytearray)) else str(v)


EVENT_FIELDS = {c: RAW_EVENTS.field(c).type
                for c in ("user_id", "item_id", "timestamp", "event_type", "price", "quantity")}


def _events_from_table(t: pa.Table, mapping: dict, f: Fragment, kind: str) -> pa.Table:
    n = t.num_rows
    cols, reason = _converted(t, mapping, EVENT_FIELDS)
    if kind == "online-retail":
        # The shop codes unknown customers as CustomerID 0.
        cols["user_id"] = pc.if_else(pc.equal(cols["user_id"], "0"), None, cols["user_id"])
        cols["event_type"] = pa.array(["purchase"] * n, pa.string())
    return pa.table({**cols, **_provenance(n, f), READ_ERROR: reason,
                     RECORD: _records(t, reason)}, schema=RAW_EVENTS)


def _sequence_events(users: list, items: list[list], f: Fragment, row_numbers: list) -> pa.Table:
    """Sequence files (one user per line) -> one event per item; timestamps are positions."""
    u, i, ts, rows = [], [], [], []
    for user, seq, row in zip(users, items, row_numbers):
        u += [user] * len(seq)
        i += seq
        ts += [str(p) for p in range(len(seq))]
        rows += [row] * len(seq)
    n = len(u)
    return pa.table({"user_id": pa.array(u, pa.string()), "item_id": pa.array(i, pa.string()),
                     "timestamp": pa.array(ts, pa.string()),
                     "event_type": pa.array(["purchase"] * n, pa.string()),
                     "price": pa.nulls(n, pa.float64()), "quantity": pa.nulls(n, pa.float64()),
                     FILE: pa.array([f.uri] * n, pa.string()), ROW: pa.array(rows, pa.int64()),
                     READ_ERROR: pa.nulls(n, pa.string()), RECORD: pa.nulls(n, pa.string())},
                    schema=RAW_EVENTS)


def _text_lines(f: Fragment) -> list[str]:
    """A public dataset's text file, as lines (split at line ends only; bytes that are not
    UTF-8 escaped)."""
    data, _ = _read_bytes(f.uri)
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    return [formats.escaped(line) for line in lines]


def read_events(f: Fragment, mapping: dict, kind: str) -> pa.Table:
    """One fragment -> raw events, one row per record read (nothing dropped here)."""
    if f.fmt == "p5-seq":
        lines = [(n, line.split()) for n, line in enumerate(_text_lines(f), 1) if line.strip()]
        return _sequence_events([p[0] for _, p in lines], [p[1:] for _, p in lines], f,
                                [n for n, _ in lines])
    if f.fmt == "recbole-inter":
        rows = list(csv.reader(_text_lines(f)[1:], delimiter="\t"))
        return _sequence_events([r[0] for r in rows], [r[1].split() + [r[2]] for r in rows], f,
                                list(range(1, len(rows) + 1)))
    return _events_from_table(read_table(f), mapping, f, kind)


def read_items(f: Fragment, mapping: dict, text_columns: tuple) -> pa.Table:
    """One fragment -> raw items (item_id, text); text joined from several columns if needed."""
    if f.fmt == "p5-items":
        rows = list(csv.reader(_text_lines(f)[1:], delimiter=" ", quotechar='"'))
        ids = [r[1] if len(r) > 1 else None for r in rows]
        texts = [html.unescape(r[2]) if len(r) > 2 else None for r in rows]
    elif f.fmt == "recbole-items":
        index_uri = f.uri[: -len(".text")] + ".item2index"
        index = dict(line.split("\t") for line in _text_lines(
            Fragment(index_uri, "text")) if "\t" in line)
        rows = list(csv.reader(_text_lines(f)[1:], delimiter="\t", quoting=csv.QUOTE_NONE))
        rows = [r for r in rows if r]
        ids = [index.get(r[0]) for r in rows]
        texts = [r[1].strip() if len(r) > 1 else None for r in rows]
    elif f.fmt == "retail-items":
        return _retail_items(read_table(f), mapping, f)
    else:
        return _items_from_table(read_table(f), mapping, text_columns, f)
    n = len(ids)
    return pa.table({"item_id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.string()),
                     **_provenance(n, f), READ_ERROR: pa.nulls(n, pa.string()),
                     RECORD: pa.nulls(n, pa.string())}, schema=RAW_ITEMS)


def _items_from_table(t: pa.Table, mapping: dict, text_columns: tuple, f: Fragment):
    names = [c for c in t.column_names if c not in (READ_ERROR, RECORD)]
    text = mapping.get("text", "text")
    present = [text] if text in names else \
        [mapping.get(c, c) for c in text_columns if mapping.get(c, c) in names]
    if names and not present:
        raise ValueError(f"item catalogue {f.uri} has no 'text' column and none of "
                         f"{list(text_columns)}; found {names}")
    parts = {f"_text{i}": c for i, c in enumerate(present)}
    cols, reason = _converted(t, {"item_id": mapping.get("item_id", "item_id"), **parts},
                              {"item_id": pa.string(), **{p: pa.string() for p in parts}})
    texts = [cols[p].to_pylist() for p in parts]
    texts = [". ".join(p for p in row if p and p.strip()) or None for row in zip(*texts)] \
        if len(texts) > 1 else (texts[0] if texts else [None] * t.num_rows)
    n = t.num_rows
    return pa.table({"item_id": cols["item_id"], "text": pa.array(texts, pa.string()),
                     **_provenance(n, f), READ_ERROR: reason, RECORD: _records(t, reason)},
                    schema=RAW_ITEMS)


def _retail_items(t: pa.Table, mapping: dict, f: Fragment) -> pa.Table:
    """Catalogue derived from a purchase log: distinct (item, text) pairs, most frequent first."""
    t = t.filter(pc.is_null(t[READ_ERROR]))             # bad records: the events' quarantine
    cols, _ = _converted(t, mapping, {"item_id": pa.string(), "text": pa.string()})
    ids, texts = cols["item_id"], cols["text"]
    pairs = pa.table({"item_id": ids, "text": pc.utf8_trim_whitespace(texts)})
    counts = pairs.group_by(["item_id", "text"], use_threads=False).aggregate([([], "count_all")])
    counts = counts.sort_by([("item_id", "ascending"), ("count_all", "descending")])
    n = counts.num_rows
    return pa.table({"item_id": counts["item_id"], "text": counts["text"],
                     FILE: pa.array([f.uri] * n, pa.string()), ROW: pa.nulls(n, pa.int64()),
                     READ_ERROR: pa.nulls(n, pa.string()), RECORD: pa.nulls(n, pa.string())},
                    schema=RAW_ITEMS)
