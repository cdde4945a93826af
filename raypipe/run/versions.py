"""Versioned runs: each run (or `forget`) writes an immutable version, then moves a pointer.

    <output>/runs/<id>/   one complete run: its tables, manifest.json, encoder.pt, ...
    <output>/LATEST       {"run": <id>, ...}: the version readers use
    <output>/current      (local disks) a symbolic link to runs/<id>, for people and pandas

A version is written in place under `runs/<id>/` and is invisible until `LATEST` names it.
Moving the pointer is one small write: a rename on a local disk, one PUT on an object store,
both all-or-nothing, so a reader always finds a complete run and a crash at any point of a
commit leaves the previous version in place. Before the pointer moves, and whenever a
version is loaded, each table's rows are counted from its Parquet footers against the
manifest (`verify`), so a half-copied run is never used. The newest KEEP_VERSIONS versions
are kept (a service still answering from the one before can finish its swap); older ones and
what crashed runs left are deleted.

An output written before versions (manifest.json at the top) is read as it is; the first
versioned commit moves readers to `LATEST` and deletes the old run's files.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid

import pyarrow.fs as pafs

from raypipe.run.artifacts import MANIFEST, Folder

log = logging.getLogger("raypipe")
LATEST, RUNS, CURRENT = "LATEST", "runs", "current"
KEEP_VERSIONS = 3
LEGACY_FILES = ("encoder.pt", "metrics.json", "report.html")


class IncompleteRun(ValueError):
    """A version whose tables do not hold what its manifest says (a half-copied run)."""


def pointer(output: str) -> dict | None:
    """The output's LATEST record; None when it has none (not yet run, or written before
    versions)."""
    out = Folder(output)
    if not out.exists(LATEST):
        return None
    return json.loads(out.read_bytes(LATEST))


def current_run(output: str) -> str:
    """The folder (or URI) of the run readers should use: the version LATEST names, else
    the output itself (a run written before versions)."""
    p = pointer(output)
    return Folder(output).child(f"{RUNS}/{p['run']}") if p else output.rstrip("/")


def verify(run: str, manifest: dict | None = None) -> dict:
    """Raise IncompleteRun unless every table of the run's manifest is there with the rows
    the manifest counts (from the Parquet footers; no data is read). -> the manifest."""
    folder = Folder(run)
    if manifest is None:
        if not folder.exists(MANIFEST):
            raise IncompleteRun(f"{run}: no {MANIFEST}: not a finished run")
        manifest = folder.read_json(MANIFEST)
    for name, rows in (manifest.get("tables") or {}).items():
        if not folder.exists(f"{name}.parquet"):
            raise IncompleteRun(f"{run}: table {name} is missing")
        found = folder.rows(name)
        if found != rows:
            raise IncompleteRun(f"{run}: table {name} has {found} rows, its manifest {rows}")
    return manifest


def new_run_id() -> str:
    """A version id that sorts by creation time: UTC to the microsecond, then a random tag."""
    ns = time.time_ns()
    return (time.strftime("%Y%m%dT%H%M%S", time.gmtime(ns // 10**9))
            + f".{ns // 1000 % 10**6:06d}Z-{uuid.uuid4().hex[:6]}")


class ArtifactWriter(Folder):
    """A new version of the output: written under `<output>/runs/<id>/`, made the one
    readers see by `commit`."""

    def __init__(self, output: str):
        self.output = Folder(output)
        self.run_id = new_run_id()
        super().__init__(self.output.child(f"{RUNS}/{self.run_id}"))
        self.create()

    def commit(self, keep: int = KEEP_VERSIONS) -> None:
        """Check the version against its manifest, move LATEST to it, then delete what is
        older than the newest `keep` versions (`forget` keeps only the new one)."""
        manifest = verify(self.uri)
        legacy = pointer(self.output.uri) is None and self.output.exists(MANIFEST)
        self.output.json(LATEST, {"run": self.run_id, "path": f"{RUNS}/{self.run_id}",
                                  "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime()),
                                  "tables": manifest.get("tables", {})})
        if isinstance(self.fs, pafs.LocalFileSystem):
            _link(os.path.join(self.output.path, CURRENT), os.path.join(RUNS, self.run_id))
        if legacy:
            _delete_legacy(self.output)
        prune(self.output.uri, keep)

    def abort(self) -> None:
        """Delete this version; and the output's folders, if nothing else is in them (a
        first run that failed leaves nothing)."""
        self.delete()
        for folder in (Folder(self.output.child(RUNS)), self.output):
            if folder.exists() and not folder.fs.get_file_info(pafs.FileSelector(folder.path)):
                folder.delete()


def _link(path: str, target: str) -> None:
    """Point the symbolic link `path` at `target`, atomically (a new link renamed over)."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _delete_legacy(out: Folder) -> None:
    """The files of a run written before versions, now that LATEST points past them."""
    manifest = out.read_json(MANIFEST)
    for name in manifest.get("tables", {}):
        if out.exists(f"{name}.parquet"):
            out.fs.delete_dir(f"{out.path}/{name}.parquet")
    for name in (MANIFEST,) + LEGACY_FILES:
        if out.exists(name):
            out.fs.delete_file(f"{out.path}/{name}")


def versions(output: str) -> list[str]:
    """Ids of the output's version folders, oldest first."""
    out = Folder(output)
    if not out.exists(RUNS):
        return []
    return sorted(os.path.basename(i.path) for i in out.fs.get_file_info(
        pafs.FileSelector(f"{out.path}/{RUNS}")) if i.type == pafs.FileType.Directory)


def relink(output: str) -> None:
    """Point `current` at the version LATEST names (after a crash between the two)."""
    p, out = pointer(output), Folder(output)
    if p and isinstance(out.fs, pafs.LocalFileSystem):
        link = os.path.join(out.path, CURRENT)
        if not os.path.islink(link) or os.readlink(link) != os.path.join(RUNS, p["run"]):
            _link(link, os.path.join(RUNS, p["run"]))


def prune(output: str, keep: int = KEEP_VERSIONS) -> list[str]:
    """Delete versions older than the newest `keep` finished ones, and unfinished ones (a
    crashed run's) other than the current: -> the ids deleted. Only the lock's holder
    calls this, so no unfinished version belongs to a live writer."""
    out = Folder(output)
    p = pointer(output)
    current = p["run"] if p else None
    finished = [v for v in versions(output) if out.exists(f"{RUNS}/{v}/{MANIFEST}")]
    kept = set(finished[-keep:]) | ({current} if current else set())
    gone = [v for v in versions(output) if v not in kept]
    for v in gone:
        out.fs.delete_dir(f"{out.path}/{RUNS}/{v}")
    return gone
