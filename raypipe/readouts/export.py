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


def segment_users(artifacts: str, segment: int, min_confidence: float = 0.0,
                  level: int | None = None) -> pa.Table:
    """Profiles of the users in `segment` (confidence >= min_confidence), most confident
    first. `level`: a level of the run's hierarchy (segments at that level; default the
    main one, the `segment` column's); confidence is always the main level's."""
    art = Folder(current_run(artifacts))
    manifest = json.loads(art.read_bytes(MANIFEST))
    main = manifest["kmeans"]["n_clusters"]
    levels = (manifest.get("hierarchy") or {}).get("levels") or [main]
    level = main if level is None else level
    if level not in levels:
        raise ValueError(f"level {level} is not one of this run's levels {levels}")
    if not 0 <= segment < level:
        raise ValueError(f"segment {segment} is not one of this run's 0..{level - 1} at "
                         f"level {level}")
    users = art.read("profiles", COLUMNS + (["levels"] if level != main else []))
    if level != main:
        at = pc.list_element(users["levels"], levels.index(level))
        users = users.drop_columns(["levels", "segment"]).add_column(1, "segment", at)
    users = users.filter(pc.and_(pc.equal(users["segment"], segment),
                                 pc.greater_equal(users["confidence"], min_confidence)))
    users = users.append_column("level", pa.array([level] * users.num_rows, pa.int32()))
    return users.sort_by([("confidence", "descending"), ("user_id", "ascending")])


def write(table: pa.Table, out: str) -> None:
    """CSV for a .csv name, else Parquet; a local path or a pyarrow.fs URI."""
    fs, path = pafs.FileSystem.from_uri(out) if "://" in out else (pafs.LocalFileSystem(), out)
    with fs.open_output_stream(path) as f:
        if out.endswith(".csv"):
            pacsv.write_csv(table, f)
        else:
            pq.write_table(table, f)
