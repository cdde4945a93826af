"""Readers: files of each input format -> raw event and item tables with provenance.

Knows nothing about Ray: `plan_*` lists the fragments (a file, or one Parquet row group) and
`read_fragment` turns one fragment into an Arrow table in the raw schema below, keeping every
row as read so cleaning can account for it. `jobs/ingest.py` runs fragments as Ray Data tasks.

Raw events: user_id, item_id, timestamp, event_type (strings, nullable), price, quantity
(float64, nullable), _file, _row (1-based record number in its file).
Raw items: item_id, text, _file, _row.
"""
from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from raypipe.run import paths as rio
from raypipe.config import SourceConfig
from raypipe.schema import FILE, REQUIRED_EVENT_COLUMNS, ROW

RAW_EVENTS = pa.schema([
    ("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.string()),
    ("event_type", pa.string()), ("price", pa.float64()), ("quantity", pa.float64()),
    (FILE, pa.string()), (ROW, pa.int64()),
])
RAW_ITEMS = pa.schema([("item_id", pa.string()), ("text", pa.string()),
                       (FILE, pa.string()), (ROW, pa.int64())])
TABLE_EXTENSIONS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl",
                    ".ndjson": "jsonl"}
ONLINE_RETAIL_COLUMNS = {"user_id": "CustomerID", "item_id": "StockCode",
                         "timestamp": "InvoiceDate", "price": "UnitPrice",
                         "quantity": "Quantity", "text": "Description"}


@dataclass(frozen=True)
class Fragment:
    """One unit of reading work: a whole file, or one row group of a Parquet file."""
    uri: str
    fmt: str                  # parquet | csv | jsonl | p5-seq | p5-items | recbole-inter | ...
    row_group: int = -1
    row_offset: int = 0       # records before this fragment in its file
    rows: int = -1            # records in it, where the format says (Parquet), else -1
    size: int = -1            # bytes of the file, where the planner asked


# ---------------------------------------------------------------- planning (driver side)

def _uri(fs_uri: str, path: str) -> str:
    return fs_uri.split("://")[0] + "://" + path if "://" in fs_uri else path


def plan_tables(uri: str) -> list[Fragment]:
    """Fragments for a file or folder of Parquet / CSV / JSON Lines files."""
    fs, paths = rio.list_files(uri, tuple(TABLE_EXTENSIONS))
    out = []
    for path in paths:
        fmt = TABLE_EXTENSIONS["." + path.rsplit(".", 1)[-1]]
        if fmt != "parquet":
            out.append(Fragment(_uri(uri, path), fmt, size=fs.get_file_info(path).size))
            continue
        meta = pq.ParquetFile(fs.open_input_file(path)).metadata
        offset = 0
        for g in range(meta.num_row_groups):
            n = meta.row_group(g).num_rows
            out.append(Fragment(_uri(uri, path), fmt, g, offset, rows=n))
            offset += n
    return out


def estimated_rows(fragments: list[Fragment], bytes_per_row: int = 80) -> int:
    """Records in the fragments: Parquet's own counts, else file bytes / bytes_per_row (a
    CSV or JSON Lines behaviour event is 50-120 bytes). 0 when nothing says."""
    total = 0
    for f in fragments:
        total += f.rows if f.rows >= 0 else max(f.size, 0) // bytes_per_row
    return total


def plan_events(cfg: SourceConfig) -> list[Fragment]:
    if cfg.kind == "amazon-p5":
        return [Fragment(rio.find_one(cfg.input, "test.txt"), "p5-seq")]
    if cfg.kind == "recbole":
        return [Fragment(rio.find_one(cfg.input, ".test.inter"), "recbole-inter")]
    return plan_tables(cfg.input)


def plan_items(cfg: SourceConfig) -> list[Fragment]:
    if cfg.kind == "amazon-p5":
        return [Fragment(rio.find_one(cfg.input, "item_list.txt"), "p5-items")]
    if cfg.kind == "recbole":
        return [Fragment(rio.find_one(cfg.input, ".text"), "recbole-items")]
    if cfg.kind == "online-retail":
        return [Fragment(f.uri, "retail-items", f.row_group, f.row_offset)
                for f in plan_tables(cfg.input)]
    return plan_tables(cfg.items)


def column_mapping(cfg: SourceConfig) -> dict:
    """Canonical name -> name in the files."""
    base = ONLINE_RETAIL_COLUMNS if cfg.kind == "online-retail" else {}
    return {**base, **cfg.columns}


def check_columns(fragment: Fragment, mapping: dict, required=REQUIRED_EVENT_COLUMNS):
    """Fail before any heavy work when a table file lacks a required column."""
    if fragment.fmt not in ("parquet", "csv", "jsonl"):
        return
    names = set(_read_table(fragment, head=True).column_names)
    missing = [c for c in required if mapping.get(c, c) not in names]
    if missing:
        shown = [f"{c} (as {mapping[c]!r})" if c in mapping else c for c in missing]
        raise ValueError(f"{fragment.uri}: missing required columns {shown}; "
                         f"found {sorted(names)}. Map names with source.columns.<name>=...")


# ---------------------------------------------------------------- reading (task side)

def _open(uri: str):
    fs, path = rio.resolve(uri)
    return fs.open_input_stream(path)


def _read_table(f: Fragment, head: bool = False) -> pa.Table:
    if f.fmt == "parquet" or f.fmt == "retail-items":
        fs, path = rio.resolve(f.uri)
        pf = pq.ParquetFile(fs.open_input_file(path))
        if head:
            return pf.schema_arrow.empty_table()
        return pf.read_row_group(f.row_group) if f.row_group >= 0 else pf.read()
    with _open(f.uri) as stream:
        data = stream.read(1 << 16) if head else stream.read()
    if head:                                  # the first line: header or first record
        data = data.split(b"\n", 1)[0] + b"\n"
    if f.fmt == "csv":
        # Everything as text: type errors become quarantined rows, not failed reads.
        opts = pacsv.ConvertOptions(strings_can_be_null=True,
                                    column_types=_all_strings_csv(data))
        return pacsv.read_csv(io.BytesIO(data), convert_options=opts)
    return _read_jsonl(data)


def _all_strings_csv(data: bytes) -> dict:
    header = next(csv.reader(io.StringIO(data.split(b"\n", 1)[0].decode("utf-8-sig"))))
    return {name: pa.string() for name in header}


def _read_jsonl(data: bytes) -> pa.Table:
    """JSON Lines, keeping unparsable lines as rows with every field null."""
    rows = []
    for line in data.decode("utf-8").splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = {}
        rows.append({k: None if v is None else str(v) for k, v in obj.items()}
                    if isinstance(obj, dict) else {})
    names = sorted({k for r in rows for k in r})
    return pa.table({n: pa.array([r.get(n) for r in rows], pa.string()) for n in names})


def _provenance(n: int, f: Fragment) -> dict:
    return {FILE: pa.array([f.uri] * n, pa.string()),
            ROW: pa.array(range(f.row_offset + 1, f.row_offset + n + 1), pa.int64())}


def _col(table: pa.Table, name: str | None, type_: pa.DataType, n: int) -> pa.Array:
    if name is None or name not in table.column_names:
        return pa.nulls(n, type_)
    col = table.column(name)
    if pa.types.is_floating(col.type) and type_ == pa.string():
        # Float ids (pandas turns int ids with nulls into floats): 17850.0 -> "17850".
        as_int = pc.cast(col, pa.int64(), safe=False)
        exact = pc.equal(pc.cast(as_int, pa.float64()), col)
        return pc.if_else(exact, pc.cast(as_int, pa.string()), pc.cast(col, pa.string()))
    if pa.types.is_timestamp(col.type) and type_ == pa.string():
        return pc.cast(pc.cast(col, pa.timestamp("s", col.type.tz)), pa.int64()).cast(pa.string())
    return pc.cast(col, type_, safe=False)


def _events_from_table(t: pa.Table, mapping: dict, f: Fragment, kind: str) -> pa.Table:
    n = t.num_rows
    cols = {c: _col(t, mapping.get(c, c), RAW_EVENTS.field(c).type, n)
            for c in ("user_id", "item_id", "timestamp", "event_type", "price", "quantity")}
    if kind == "online-retail":
        # The shop codes unknown customers as CustomerID 0.
        cols["user_id"] = pc.if_else(pc.equal(cols["user_id"], "0"), None, cols["user_id"])
        cols["event_type"] = pa.array(["purchase"] * n, pa.string())
    return pa.table({**cols, **_provenance(n, f)}, schema=RAW_EVENTS)


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
                     FILE: pa.array([f.uri] * n, pa.string()), ROW: pa.array(rows, pa.int64())},
                    schema=RAW_EVENTS)


def _text_lines(f: Fragment) -> list[str]:
    with _open(f.uri) as stream:
        return stream.read().decode("utf-8").splitlines()


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
    return _events_from_table(_read_table(f), mapping, f, kind)


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
        ids = [index.get(r[0]) for r in rows]
        texts = [r[1].strip() if len(r) > 1 else None for r in rows]
    elif f.fmt == "retail-items":
        return _retail_items(_read_table(f), mapping, f)
    else:
        t = _read_table(f)
        ids = _col(t, mapping.get("item_id", "item_id"), pa.string(), t.num_rows).to_pylist()
        texts = _joined_text(t, mapping, text_columns)
    n = len(ids)
    return pa.table({"item_id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.string()),
                     **_provenance(n, f)}, schema=RAW_ITEMS)


def _joined_text(t: pa.Table, mapping: dict, text_columns: tuple) -> list:
    name = mapping.get("text", "text")
    if name in t.column_names:
        return pc.cast(t.column(name), pa.string()).to_pylist()
    present = [c for c in text_columns if mapping.get(c, c) in t.column_names]
    if not present:
        raise ValueError(f"item catalogue has no 'text' column and none of {list(text_columns)}; "
                         f"found {t.column_names}")
    parts = [pc.cast(t.column(mapping.get(c, c)), pa.string()).to_pylist() for c in present]
    return [". ".join(p for p in row if p and p.strip()) or None for row in zip(*parts)]


def _retail_items(t: pa.Table, mapping: dict, f: Fragment) -> pa.Table:
    """Catalogue derived from a purchase log: distinct (item, text) pairs, most frequent first."""
    ids = _col(t, mapping["item_id"], pa.string(), t.num_rows)
    texts = _col(t, mapping["text"], pa.string(), t.num_rows)
    pairs = pa.table({"item_id": ids, "text": pc.utf8_trim_whitespace(texts)})
    counts = pairs.group_by(["item_id", "text"], use_threads=False).aggregate([([], "count_all")])
    counts = counts.sort_by([("item_id", "ascending"), ("count_all", "descending")])
    n = counts.num_rows
    return pa.table({"item_id": counts["item_id"], "text": counts["text"],
                     FILE: pa.array([f.uri] * n, pa.string()),
                     ROW: pa.nulls(n, pa.int64())}, schema=RAW_ITEMS)
