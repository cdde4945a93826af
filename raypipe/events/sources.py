"""Readers: files of each input format -> raw event and item tables with provenance.

Knows nothing about Ray: `plan_*` lists the fragments (a file, or one Parquet row group) and
events/readers.py turns one fragment into an Arrow table in the raw schema below, keeping
every record as read so cleaning can account for it. `jobs/ingest.py` runs fragments as Ray
Data tasks.

Raw events: user_id, item_id, timestamp, event_type (strings, nullable), price, quantity
(float64, nullable), _file, _row (1-based record number in its file), _read_error and
_record (why the reader could not take the record, and the record as read; null when it
could). Raw items: item_id, text, _file, _row, _read_error, _record.

Compressed files (.gz, .bz2, .zst, .lz4) are read; files of an input folder that are not
read are listed with why.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.config import SourceConfig
from raypipe.run import paths as rio
from raypipe.schema import FILE, READ_ERROR, RECORD, REQUIRED_EVENT_COLUMNS, ROW

RAW_EVENTS = pa.schema([
    ("user_id", pa.string()), ("item_id", pa.string()), ("timestamp", pa.string()),
    ("event_type", pa.string()), ("price", pa.float64()), ("quantity", pa.float64()),
    (FILE, pa.string()), (ROW, pa.int64()), (READ_ERROR, pa.string()), (RECORD, pa.string()),
])
RAW_ITEMS = pa.schema([("item_id", pa.string()), ("text", pa.string()),
                       (FILE, pa.string()), (ROW, pa.int64()), (READ_ERROR, pa.string()),
                       (RECORD, pa.string())])
FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl",
           ".ndjson": "jsonl"}
COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")
TABLE_EXTENSIONS = tuple(e + c for e in FORMATS for c in ("",) + COMPRESSIONS
                         if not (e == ".parquet" and c))

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


def table_format(path: str) -> str:
    """File name -> its format (parquet | csv | jsonl), compression suffixes aside."""
    for c in COMPRESSIONS:
        if path.endswith(c):
            path = path[: -len(c)]
    return FORMATS["." + path.rsplit(".", 1)[-1]]


def plan_tables(uri: str, not_read: list | None = None) -> list[Fragment]:
    """Fragments for a file or folder of Parquet / CSV / JSON Lines files (compressed or
    not). Files of the folder that are not read go to `not_read` as {file, why}."""
    fs, paths = rio.list_files(uri, TABLE_EXTENSIONS, not_read)
    out = []
    for path in paths:
        fmt = table_format(path)
        size = fs.get_file_info(path).size
        if fmt != "parquet":
            out.append(Fragment(_uri(uri, path), fmt, size=size))
            continue
        try:
            meta = pq.ParquetFile(fs.open_input_file(path)).metadata
        except Exception:           # noqa: BLE001 - read (and quarantined) whole by a task
            out.append(Fragment(_uri(uri, path), fmt, size=size))
            continue
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


def plan_events(cfg: SourceConfig, not_read: list | None = None) -> list[Fragment]:
    if cfg.kind == "amazon-p5":
        return [Fragment(rio.find_one(cfg.input, "test.txt"), "p5-seq")]
    if cfg.kind == "recbole":
        return [Fragment(rio.find_one(cfg.input, ".test.inter"), "recbole-inter")]
    return plan_tables(cfg.input, not_read)


def plan_items(cfg: SourceConfig, not_read: list | None = None) -> list[Fragment]:
    if cfg.kind == "amazon-p5":
        return [Fragment(rio.find_one(cfg.input, "item_list.txt"), "p5-items")]
    if cfg.kind == "recbole":
        return [Fragment(rio.find_one(cfg.input, ".text"), "recbole-items")]
    if cfg.kind == "online-retail":
        return [Fragment(f.uri, "retail-items", f.row_group, f.row_offset, f.rows, f.size)
                for f in plan_tables(cfg.input, not_read)]
    return plan_tables(cfg.items, not_read)


def column_mapping(cfg: SourceConfig) -> dict:
    """Canonical name -> name in the files."""
    base = ONLINE_RETAIL_COLUMNS if cfg.kind == "online-retail" else {}
    return {**base, **cfg.columns}


def check_columns(fragments: list[Fragment], mapping: dict, required=REQUIRED_EVENT_COLUMNS):
    """Fail before any heavy work when the first table file with a header lacks a required
    column (a wrong `source.columns` mapping); files that cannot be read are left to the
    readers, which quarantine them."""
    for fragment in fragments:
        if fragment.fmt not in ("parquet", "csv", "jsonl"):
            return
        from raypipe.events.readers import read_table
        names = set(read_table(fragment, head=True).column_names) - {READ_ERROR, RECORD}
        if not names:
            continue
        missing = [c for c in required if mapping.get(c, c) not in names]
        if missing:
            shown = [f"{c} (as {mapping[c]!r})" if c in mapping else c for c in missing]
            raise ValueError(f"{fragment.uri}: missing required columns {shown}; "
                             f"found {sorted(names)}. Map names with source.columns.<name>=...")
        return
