"""`raypipe forget`: one user out of everything raypipe keeps under an output.

`forget(artifacts, user)` (a raw id; its pseudonym in a pseudonymised run) writes a new
version of the run (run/versions.py) without the user and moves LATEST to it, holding the
output's lock, then deletes what else held the user's rows:
- every table: rows whose `user_id` is the user's; quarantined records whose user could not
  be read are dropped when their raw text holds the id (a non-pseudonymised run's raw lines);
- `segments.size` is recounted; the report, when the run has one, is rebuilt from the new
  tables; the manifest records the removal (time, rows per table; never the id) and lists
  under `stale` what still counts the user until the next run: segment centroids, top items
  and terms, `item_followers` counts, metrics, `rows` read counts;
- every older version (they hold the user), the stage store `<output>.stages` and the
  encoder's Ray Train checkpoints (`<output>.train` or `encoder.storage`).

The encoder's weights (`encoder.pt`) were fitted with the user's history among everyone's;
they hold no id and stay, so the service keeps answering. Deleting the stages and the
checkpoints forces the next run to retrain from the logs, without the user once the operator
has purged the raw logs (raypipe never writes to the input). A running service drops the
user on its next poll of LATEST (serve/app.py, `poll_s`) or reconfigure.
"""
from __future__ import annotations

import json
import os
import re
import time

import pyarrow as pa
import pyarrow.compute as pc

from raypipe.run.lock import OutputLock
from raypipe.run.privacy import stored_id

STALE = ["centroids", "segments.top_items", "segments.top_terms", "item_followers",
         "metrics", "rows"]


def forget(artifacts: str, user_id: str) -> dict:
    """Remove `user_id` from the run at `artifacts` and from the stores beside it.
    -> {table: rows removed}. Raises ValueError when the run does not know the user."""
    with OutputLock(artifacts, "forget"):
        return _forget(artifacts, user_id)


def without_user(table: pa.Table, user_id: str, raw_text: str | None = None) -> pa.Table:
    """Rows of `table` that are not the user's: by `user_id` column (null ones: by the id
    inside a JSON record, or by `raw_text` appearing as a token in the raw record)."""
    if "user_id" in table.column_names:
        keep = pc.fill_null(pc.not_equal(table["user_id"], user_id), True)
        if "record" in table.column_names:
            unknown = pc.is_null(table["user_id"]).to_numpy(zero_copy_only=False)
            records = table["record"].to_pylist()
            mine = [bool(u) and _mentions(r, user_id, raw_text) for u, r in
                    zip(unknown, records)]
            keep = pc.and_(keep, pc.invert(pa.array(mine, pa.bool_())))
        return table.filter(keep)
    if "record" in table.column_names:
        keep = [not _mentions(r, user_id, raw_text) for r in table["record"].to_pylist()]
        return table.filter(pa.array(keep, pa.bool_()))
    return table


def _mentions(record: str | None, user_id: str, raw_text: str | None) -> bool:
    if not record:
        return False
    try:
        value = json.loads(record)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict) and "user_id" in value:
        return str(value["user_id"]) == user_id
    return raw_text is not None and re.search(
        rf"(?<![\w-]){re.escape(raw_text)}(?![\w-])", record) is not None


def _recount_sizes(segments: pa.Table, profiles: pa.Table) -> pa.Table:
    counts = pc.value_counts(profiles["segment"]).to_pylist()
    size = {c["values"]: c["counts"] for c in counts}
    new = pa.array([size.get(s, 0) for s in segments["segment"].to_pylist()], pa.int64())
    i = segments.schema.get_field_index("size")
    return segments.set_column(i, segments.schema.field(i).name,
                               new.cast(segments.schema.field(i).type))


def _forget(artifacts: str, user_id: str) -> dict:
    from raypipe.run.artifacts import MANIFEST, Folder, read_manifest
    from raypipe.run.versions import ArtifactWriter, current_run
    manifest = read_manifest(artifacts)
    stored = stored_id(manifest, user_id)
    raw = None if (manifest.get("privacy") or {}).get("pseudonymized") else user_id
    source = Folder(current_run(artifacts))
    out = ArtifactWriter(artifacts)
    try:
        removed = _tables(source, out, manifest["tables"], stored, raw)
        if not removed:
            raise ValueError(f"that user is in no table of {artifacts}")
        for path in source.files():
            rel = os.path.relpath(path, source.path)
            if "/" not in rel and rel not in (MANIFEST, "report.html"):  # encoder.pt, ...
                out.bytes(rel, source.read_bytes(rel))
        manifest["tables"] = out.tables
        manifest.setdefault("forgotten", []).append(
            {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": removed,
             "stale": STALE})
        manifest["users"]["profiled"] -= removed.get("profiles", 0)
        manifest["users"]["with_events"] -= removed.get("sequences", 0)
        out.json(MANIFEST, manifest)
        if source.exists("report.html"):
            from raypipe.readouts.report import build
            out.bytes("report.html", build(out.uri).encode())
        out.commit(keep=1)              # the older versions hold the user too
    except BaseException:
        out.abort()
        raise
    for beside in (f"{artifacts.rstrip('/')}.stages",
                   (manifest["config"].get("encoder") or {}).get("storage")
                   or f"{artifacts.rstrip('/')}.train"):
        Folder(beside).delete()         # they hold the user's rows or their training
    return removed


def _tables(source, out, tables: dict, stored: str, raw: str | None) -> dict:
    """Copy each table without the user into `out`; -> {table: rows removed}."""
    removed, profiles = {}, None
    for name in sorted(tables, key=lambda n: n == "segments"):    # profiles first
        table = source.read(name)
        kept = without_user(table, stored, raw)
        if name == "profiles":
            profiles = kept
        if name == "segments" and profiles is not None and "size" in kept.column_names:
            kept = _recount_sizes(kept, profiles)
        if kept.num_rows != table.num_rows:
            removed[name] = table.num_rows - kept.num_rows
        out.table(name, kept.replace_schema_metadata(table.schema.metadata))
    return removed
