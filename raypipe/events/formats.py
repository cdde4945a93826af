"""Record formats: the bytes of one file -> a table with one row per record, never an exception.

Every record read becomes exactly one row. A record that cannot be parsed is still a row: its
fields are null, `_read_error` names why (`malformed_csv_row`, `invalid_utf8`,
`invalid_json`, `not_an_object`, `invalid_unicode`, `unreadable_file`) and `_record` keeps
the raw record, escaped (`\\xff` for a byte that is not UTF-8), so cleaning can quarantine it
as read. Clean files take pyarrow's fast CSV parser; a file it refuses is parsed again record
by record, so one bad line costs that file some speed, never the run.

A record is: for CSV, a row after the header (blank lines are not records); for JSON Lines, a
line that is not blank, lines split at `\\n` only (a U+2028 inside a value is not a break).
"""
from __future__ import annotations

import csv
import io
import json
import re

import pyarrow as pa
import pyarrow.csv as pacsv

from raypipe.schema import READ_ERROR, RECORD

READ_CHUNK = 1 << 16
NULL_VALUES = frozenset(pacsv.ConvertOptions().null_values)   # as pyarrow's CSV reader
_ESCAPED = re.compile("[\udc80-\udcff]")                     # undecodable bytes, escaped


def read_all(stream) -> tuple[bytes, str | None]:
    """A (possibly decompressing) stream -> (the bytes it gave, the error that cut it short,
    e.g. a truncated .gz), so what was readable is still read."""
    parts = []
    try:
        while chunk := stream.read(READ_CHUNK):
            parts.append(chunk)
    except Exception as e:              # noqa: BLE001 - any decoder error ends the file
        return b"".join(parts), f"{type(e).__name__}: {e}"
    return b"".join(parts), None


def escaped(raw: bytes | str) -> str:
    """Raw record -> printable text: bytes that are not UTF-8 as \\xNN."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace").rstrip("\r\n")


def table(names: list[str], rows: list, errors: list, records: list) -> pa.Table:
    """Rows (lists of strings or None, aligned with `names`) -> the reader's table."""
    cols = {n: pa.array([r[i] for r in rows], pa.string()) for i, n in enumerate(names)}
    cols[READ_ERROR] = pa.array(errors, pa.string())
    cols[RECORD] = pa.array(records, pa.string())
    return pa.table(cols)


def read_cleanly(t: pa.Table) -> pa.Table:
    """A table the reader took whole: no record has a read error."""
    n = t.num_rows
    return t.append_column(READ_ERROR, pa.nulls(n, pa.string())) \
            .append_column(RECORD, pa.nulls(n, pa.string()))


def with_file_error(t: pa.Table, error: str | None) -> pa.Table:
    """Append one `unreadable_file` row saying why a file ended early (a corrupt stream)."""
    if error is None:
        return t
    extra = {n: pa.nulls(1, t.schema.field(n).type) for n in t.column_names}
    extra[READ_ERROR] = pa.array(["unreadable_file"])
    extra[RECORD] = pa.array([error])
    return pa.concat_tables([t, pa.table(extra, schema=t.schema)])


# ---------------------------------------------------------------- CSV

def _names(header: list[str]) -> list[str]:
    """Header fields -> usable, distinct column names."""
    out = []
    for h in header:
        name = escaped(h).strip() or f"column{len(out) + 1}"
        while name in out or name in (READ_ERROR, RECORD):
            name += "_"
        out.append(name)
    return out


def parse_csv(data: bytes) -> pa.Table:
    try:
        return _fast_csv(data)
    except (pa.ArrowInvalid, UnicodeDecodeError, csv.Error, ValueError):
        return _slow_csv(data)


def _fast_csv(data: bytes) -> pa.Table:
    first = data.lstrip(b"\r\n").split(b"\n", 1)[0].decode("utf-8-sig")
    header = next(csv.reader([first]), [])
    if not header or _names(header) != header:
        raise ValueError("header needs renaming")
    opts = pacsv.ConvertOptions(strings_can_be_null=True,
                                column_types={h: pa.string() for h in header})
    return read_cleanly(pacsv.read_csv(io.BytesIO(data), convert_options=opts,
                                       read_options=pacsv.ReadOptions(use_threads=False)))


def _slow_csv(data: bytes) -> pa.Table:
    """Record by record with the csv module; lines are kept so a bad record's raw text is
    known exactly, even one spanning lines inside quotes."""
    text = data.decode("utf-8", "surrogateescape")
    text = text[1:] if text.startswith("\ufeff") else text
    lines: list[str] = []

    def feed():
        for line in io.StringIO(text, newline=""):
            lines.append(line)
            yield line
    reader = csv.reader(feed())
    header = None
    rows, errors, records = [], [], []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error:
            fields = None
        raw = "".join(lines)
        lines.clear()
        if fields == [] or (fields is not None and header is None and not "".join(fields).strip()):
            continue                                           # blank line
        if header is None and fields is not None:
            header = _names(fields)
            continue
        width = len(header or ())
        reason = _csv_problem(fields, raw, width)
        if reason and raw.rstrip("\r\n").count("\n"):
            # A bad record over several lines is most often a stray quote that swallowed the
            # lines after it: each line is then a record of its own, the good ones kept.
            for line in io.StringIO(raw, newline=""):
                _add(rows, errors, records, _one_line(line, width), line, width)
        else:
            _add(rows, errors, records, fields, raw, width, reason)
    return table(header or [], rows, errors, records)


def _one_line(line: str, width: int) -> list[str] | None:
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        return None


def _add(rows, errors, records, fields, raw: str, width: int, reason: str | None = "") -> None:
    if fields == []:
        return                                              # a blank line is no record
    if reason == "":
        reason = _csv_problem(fields, raw, width)
    if reason:
        rows.append([None] * width)
        errors.append(reason)
        records.append(escaped(raw))
    else:
        rows.append([None if v in NULL_VALUES else v for v in fields])
        errors.append(None)
        records.append(None)


def _csv_problem(fields: list[str] | None, raw: str, width: int) -> str | None:
    if _ESCAPED.search(raw):
        return "invalid_utf8"
    if fields is None or len(fields) != width:
        return "malformed_csv_row"
    return None


# ---------------------------------------------------------------- JSON Lines

def parse_jsonl(data: bytes) -> pa.Table:
    rows, errors, records = [], [], []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        obj, reason = _json_record(line)
        rows.append(obj or {})
        errors.append(reason)
        records.append(escaped(line) if reason else None)
    names = sorted({k for r in rows for k in r})
    return table(names, [[r.get(n) for n in names] for r in rows], errors, records)


def _json_record(line: bytes) -> tuple[dict | None, str | None]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None, "invalid_json"
    if not isinstance(obj, dict):
        return None, "not_an_object"
    out = {}
    for k, v in obj.items():
        if v is not None and not isinstance(v, str):
            v = json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else str(v)
        if not _encodable(k) or (v is not None and not _encodable(v)):
            return None, "invalid_unicode"                    # a lone surrogate escape
        out[k] = v
    return out, None


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
