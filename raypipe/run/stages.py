"""Resumable stages: each stage's output is kept under `<output>.stages/<stage>-<key>/`, where
the key hashes what the stage is handed (its config sections, the keys of the stages it
reads and, for the first stages, each input file's size, time and content tag: ETag,
Parquet footer or a hash of its bytes) and the code version (a hash of the package's
sources). A stage is finished when its
`_stage.json` is there (written last, so this holds on object stores too); a folder without it
is what a killed run left, and is redone.

Re-running a command therefore redoes only the stages whose key changed or that never
finished; `force=True` (`raypipe run --force`) redoes them all. After a run commits, the
folders it did not use are deleted, so the store holds one run's stages.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from typing import Callable

import pyarrow.fs as pafs

from raypipe import __version__
from raypipe.run import paths as rio
from raypipe.run.artifacts import Folder

log = logging.getLogger("raypipe")
STAGE_FILE = "_stage.json"

# Settings that change how fast a stage runs, never what it writes.
RUNTIME_ONLY = {
    "SequenceConfig": {"num_partitions"},
    "EmbedConfig": {"batch_size", "cpus_per_actor", "max_actors", "device"},
    "EncoderConfig": {"num_workers", "use_gpu", "cpus_per_worker", "storage"},
}


@dataclasses.dataclass
class Runtime:
    """What a stage needs to run that never changes what it writes, and so stays out of its
    key: where the run goes, its timings, whether `--force` was given, its experiment
    tracker (run/tracking.py; None when off)."""
    output: str
    timings: dict
    force: bool = False
    tracker: object = None

    @contextmanager
    def timed(self, step: str):
        log.info("stage %s: started", step)
        start = time.perf_counter()
        yield
        self.timings[step] = round(time.perf_counter() - start, 2)
        log.info("stage %s: done in %.1f s", step, self.timings[step])


def key_part(value):
    """One input of a stage -> what its key holds of it: a stage's key, a config section
    without its runtime-only fields, nothing of the Runtime, plain values as they are."""
    if isinstance(value, Stage):
        return {"stage": value.name, "key": value.key}
    if isinstance(value, Runtime) or value is None:
        return None
    if hasattr(value, "stage_key"):         # input files, a pseudonymizer: their own summary
        return value.stage_key()
    if dataclasses.is_dataclass(value):
        skip = RUNTIME_ONLY.get(type(value).__name__, ())
        return {type(value).__name__: {k: v for k, v in dataclasses.asdict(value).items()
                                        if k not in skip}}
    return value


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """A hash of the package's sources: a changed stage's code changes every stage key, so
    no stage written by other code is reused."""
    return sources_hash(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sources_hash(root: str) -> str:
    """A hash of the version and every .py file (path and bytes) under `root`."""
    h = hashlib.sha256(__version__.encode())
    for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
        h.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def fingerprint(uris) -> list:
    """(uri, size, modification time, content tag) of each distinct input file: a changed
    input changes the key of every stage that reads it, even one rewritten in place with
    the same size and time (paths.content_tag: ETag, Parquet footer or a hash)."""
    out = []
    for uri in sorted(set(uris)):
        fs, path = rio.resolve(uri)
        info = fs.get_file_info(path)
        mtime = info.mtime.isoformat() if info.mtime else None
        out.append([uri, info.size, mtime, rio.content_tag(fs, path)])
    return out


class InputFiles(list):
    """Planned input files (events.sources.Fragment) and the files of the input folder that
    are not read ({file, why}): in a stage key, their fingerprint and the names not read."""

    def __init__(self, fragments=(), not_read=()):
        super().__init__(fragments)
        self.not_read = list(not_read)

    def stage_key(self) -> dict:
        return {"read": fingerprint(f.uri for f in self),
                "not_read": sorted(f["file"] for f in self.not_read)}

    @classmethod
    def plan(cls, planner, source) -> "InputFiles":
        """`planner(source, not_read)` (events.sources.plan_events / plan_items) -> files."""
        not_read: list = []
        return cls(planner(source, not_read), not_read)


@dataclasses.dataclass
class Stage:
    name: str
    key: str
    folder: Folder
    info: dict
    reused: bool
    seconds: dict


class StageStore:
    def __init__(self, output: str, timings: dict, force: bool = False):
        self.root = Folder(output.rstrip("/") + ".stages")
        self.timings = timings
        if force and self.root.exists():
            log.info("--force: deleting the finished stages in %s", self.root.uri)
            self.root.delete()
        self.done: dict[str, Stage] = {}

    @staticmethod
    def key(name: str, inputs: dict) -> str:
        """The stage's key: its name, the code version and every input it is handed."""
        parts = {k: key_part(v) for k, v in sorted(inputs.items())}
        blob = json.dumps([name, code_version(), parts], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run(self, name: str, build: Callable[..., dict | None], **inputs) -> Stage:
        """The stage's output, reused when finished before with the same key, else built by
        `build(folder, **inputs)`, which writes its tables into `folder` and returns what
        the manifest should say about them. The key is derived from exactly the `inputs`
        the stage is handed (key_part), so a stage cannot read what its key leaves out."""
        key = self.key(name, inputs)
        folder = Folder(self.root.child(f"{name}-{key}"))
        rec = self._finished(folder)
        if rec is not None:
            folder.tables = rec["tables"]
            self.timings.update(rec["seconds"])
            log.info("stage %s: reused (key %s, finished %s)", name, key, rec["finished_at"])
            stage = Stage(name, key, folder, rec["info"], True, rec["seconds"])
        else:
            stage = self._build(name, key, folder, build, inputs)
        self.done[name] = stage
        return stage

    @staticmethod
    def _finished(folder: Folder) -> dict | None:
        """The stage's record when it finished; None when it did not, or when its record
        cannot be read (a crash mid-write on a filesystem without atomic renames)."""
        if not folder.exists(STAGE_FILE):
            return None
        try:
            rec = folder.read_json(STAGE_FILE)
            if all(k in rec for k in ("tables", "seconds", "info", "finished_at")):
                return rec
        except (ValueError, UnicodeDecodeError):
            pass
        log.warning("stage %s: unreadable %s, redoing the stage", folder.uri, STAGE_FILE)
        return None

    def _build(self, name: str, key: str, folder: Folder, build, inputs: dict) -> Stage:
        folder.delete()                  # what a killed run left, if anything
        folder.create()
        before = dict(self.timings)
        try:
            info = build(folder, **inputs) or {}
        except BaseException:
            self._discard(folder)
            raise
        seconds = {k: v for k, v in self.timings.items() if before.get(k) != v}
        folder.json(STAGE_FILE, {
            "name": name, "key": key, "info": info, "tables": folder.tables,
            "seconds": seconds, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return Stage(name, key, folder, info, False, seconds)

    def _discard(self, folder: Folder) -> None:
        """A failed stage leaves nothing; nor does a store with no finished stage."""
        folder.delete()
        fs = self.root.fs
        if not fs.get_file_info(pafs.FileSelector(self.root.path)):
            self.root.delete()

    def summary(self) -> dict:
        """For the manifest: each stage's key, whether this run reused it, its seconds."""
        return {s.name: {"key": s.key, "reused": s.reused, "seconds": s.seconds}
                for s in self.done.values()}

    def prune(self) -> None:
        """Delete the stage folders this run did not use (older settings, killed runs)."""
        keep = {s.folder.path for s in self.done.values()}
        fs = self.root.fs
        for info in fs.get_file_info(pafs.FileSelector(self.root.path)):
            if info.path not in keep:
                if info.type == pafs.FileType.Directory:
                    fs.delete_dir(info.path)
                else:
                    fs.delete_file(info.path)
