"""Resumable stages: each stage's output is kept under `<output>.stages/<stage>-<key>/`, where
the key hashes the stage's settings, the keys of the stages it reads and, for the first
stages, the input files' sizes and modification times. A stage is finished when its
`_stage.json` is there (written last, so this holds on object stores too); a folder without it
is what a killed run left, and is redone.

Re-running a command therefore redoes only the stages whose key changed or that never
finished; `force=True` (`raypipe run --force`) redoes them all. After a run commits, the
folders it did not use are deleted, so the store holds one run's stages.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from typing import Callable

import pyarrow.fs as pafs

from raypipe import __version__
from raypipe.run import paths as rio
from raypipe.run.artifacts import Folder

log = logging.getLogger("raypipe")
STAGE_FILE = "_stage.json"

# Settings that change how fast a stage runs, never what it writes.
RUNTIME_ONLY = {
    "sequences": {"num_partitions"},
    "embed": {"batch_size", "cpus_per_actor", "max_actors", "device"},
    "encoder": {"num_workers", "use_gpu", "cpus_per_worker", "storage"},
}


def settings(cfg, *sections: str) -> dict:
    """The named config sections (dotted paths allowed), without runtime-only fields."""
    d, out = cfg.to_dict(), {}
    for name in sections:
        head, _, field = name.partition(".")
        value = d[head][field] if field else d[head]
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in RUNTIME_ONLY.get(name, ())}
        out[name] = value
    return out


def fingerprint(uris) -> list:
    """(uri, size, modification time) of each distinct input file: a changed input changes
    the key of every stage that reads it."""
    out = []
    for uri in sorted(set(uris)):
        fs, path = rio.resolve(uri)
        info = fs.get_file_info(path)
        mtime = info.mtime.isoformat() if info.mtime else None
        out.append([uri, info.size, mtime])
    return out


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
    def key(name: str, *parts) -> str:
        blob = json.dumps([name, __version__, parts], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def run(self, name: str, key: str, build: Callable[[Folder], dict | None]) -> Stage:
        """The stage's output, reused when finished before with the same key, else built by
        `build(folder)`, which writes its tables into `folder` and returns what the manifest
        should say about them."""
        folder = Folder(self.root.child(f"{name}-{key}"))
        if folder.exists(STAGE_FILE):
            rec = folder.read_json(STAGE_FILE)
            folder.tables = rec["tables"]
            self.timings.update(rec["seconds"])
            log.info("stage %s: reused (key %s, finished %s)", name, key, rec["finished_at"])
            stage = Stage(name, key, folder, rec["info"], True, rec["seconds"])
        else:
            folder.delete()                  # what a killed run left, if anything
            folder.create()
            before = dict(self.timings)
            try:
                info = build(folder) or {}
            except BaseException:
                self._discard(folder)
                raise
            seconds = {k: v for k, v in self.timings.items() if before.get(k) != v}
            folder.json(STAGE_FILE, {
                "name": name, "key": key, "info": info, "tables": folder.tables,
                "seconds": seconds,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            stage = Stage(name, key, folder, info, False, seconds)
        self.done[name] = stage
        return stage

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
