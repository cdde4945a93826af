"""`raypipe segments export`: the users of one segment, for a campaign. Knows nothing about
Ray."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raypipe.run.artifacts import MANIFEST, Folder
from raypipe.run.versions import current_run

COLUMNS = ["user_id", "segment", "confidence", "distance", "history_length", "n_events"]


def segment_users(artifacts: str, segment: int, min_confidence: float = 0.0) -> pa.Table:
    """Profiles of the users in `segment` (confidence >= min_confidence), most confident
    first."""
    art = Folder(current_run(artifacts))
    manifest = json.loads(art.read_bytes(MANIFEST))
    n = manifest["kmeans"]["n_clusters"]
    if not 0 <= segment < n:
        raise ValueError(f"segment {segment} is not one of this run's 0..{n - 1}")
    users = art.read("profiles", COLUMNS)
    users = users.filter(pc.and_(pc.equal(users["segment"], segment),
                                 pc.greater_equal(users["confidence"], min_confidence)))
    return users.sort_by([("confidence", "descending"), ("user_id", "ascending")])


def write(table: pa.Table, out: str) -> None:
    """CSV for a .csv name, else Parquet; a local path or a pyarrow.fs URI."""
    fs, path = pafs.FileSystem.from_uri(out) if "://" in out else (pafs.LocalFileSystem(), out)
    with fs.open_output_stream(path) as f:
        if out.endswith(".csv"):
            pacsv.write_csv(table, f)
        else:
            pq.write_table(table, f)
