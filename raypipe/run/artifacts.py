"""Output folders on a local disk or an object store (`pyarrow.fs` URIs: s3://, gs://).

Tables are Parquet datasets named `<table>.parquet` (a folder of part files, as Spark and Ray
write them; `pandas.read_parquet` and `pyarrow.parquet.read_table` read them whole).

A run's output is versioned (run/versions.py): each run writes `<output>/runs/<id>/` and then
moves the `<output>/LATEST` pointer, so readers (`read_manifest`, `read_table`, the service)
always find a complete run.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raypipe.run import paths as rio

MANIFEST = "manifest.json"


class Folder:
    """Tables and files in one folder (local path or URI)."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self.fs, self.path = rio.resolve(self.uri)
        self.tables: dict[str, int] = {}

    def _uri(self, path: str) -> str:
        return self.uri.split("://")[0] + "://" + path if "://" in self.uri else path

    def child(self, name: str) -> str:
        """URI (or local path) of a file or table folder inside this folder."""
        return self._uri(f"{self.path}/{name}")

    def exists(self, name: str = "") -> bool:
        path = f"{self.path}/{name}" if name else self.path
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def create(self) -> "Folder":
        self.fs.create_dir(self.path, recursive=True)
        return self

    def delete(self) -> None:
        if self.exists():
            self.fs.delete_dir(self.path)

    def table(self, name: str, table: pa.Table) -> None:
        folder = f"{self.path}/{name}.parquet"
        self.fs.create_dir(folder, recursive=True)
        pq.write_table(table, f"{folder}/part-00000.parquet", filesystem=self.fs)
        self.tables[name] = table.num_rows

    def dataset(self, name: str, ds, schema: pa.Schema | None = None) -> None:
        """Write a Ray dataset, streaming (it is not held whole in the object store), and
        count its rows from the written files' footers. An empty one still leaves a
        readable table with `schema`."""
        ds.write_parquet(self.child(f"{name}.parquet"))
        if not (self.exists(f"{name}.parquet") and self.files(f"{name}.parquet")):
            self.table(name, (schema or ds.schema().base_schema).empty_table())
            return
        self.tables[name] = self.rows(name)

    def rows(self, name: str) -> int:
        """Rows of table `name`, from its part files' Parquet footers (no data is read)."""
        n = 0
        for path in self.files(f"{name}.parquet"):
            with self.fs.open_input_file(path) as f:
                n += pq.ParquetFile(f).metadata.num_rows
        return n

    def json(self, name: str, obj) -> None:
        self.bytes(name, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def bytes(self, name: str, data: bytes) -> None:
        """Write a small file whole or not at all: on a local disk to a temporary name, then
        renamed (a crash mid-write leaves the old file or none); an object store's PUT is
        already all-or-nothing."""
        path = f"{self.path}/{name}"
        local = isinstance(self.fs, pafs.LocalFileSystem)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}" if local else path
        with self.fs.open_output_stream(tmp) as f:
            f.write(data)
        if local:
            os.replace(tmp, path)

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(f"{self.path}/{name}.parquet", filesystem=self.fs, columns=columns)

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(f"{self.path}/{name}") as f:
            return f.read()

    def read_json(self, name: str):
        return json.loads(self.read_bytes(name))

    def files(self, name: str = "") -> list[str]:
        """Paths (inside the filesystem) of every file under `name`, sorted."""
        selector = pafs.FileSelector(f"{self.path}/{name}".rstrip("/"), recursive=True)
        return sorted(i.path for i in self.fs.get_file_info(selector)
                      if i.type == pafs.FileType.File)

    def link_table(self, source: "Folder", name: str, as_name: str | None = None,
                   prefix: str = "") -> None:
        """Put `source`'s table `name` here as `as_name`: hard links on a local disk (no
        copy, no extra space), server-side copies on an object store. `prefix` keeps file
        names apart when several sources make up one table."""
        src, dst = f"{source.path}/{name}.parquet", f"{self.path}/{as_name or name}.parquet"
        self.fs.create_dir(dst, recursive=True)
        for path in source.files(f"{name}.parquet"):
            copy_file(self.fs, path, f"{dst}/{prefix}{os.path.relpath(path, src)}")
        self.tables[as_name or name] = self.tables.get(as_name or name, 0) \
            + source.tables.get(name, 0)


def copy_file(fs: pafs.FileSystem, src: str, dst: str) -> None:
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        try:
            os.link(src, dst)
            return
        except OSError:          # another device, or a filesystem without hard links
            shutil.copyfile(src, dst)
            return
    fs.copy_file(src, dst)


def read_table(output: str, name: str) -> pa.Table:
    """The current run's table, e.g. read_table('artifacts', 'profiles')."""
    from raypipe.run.versions import current_run
    fs, path = rio.resolve(current_run(output))
    return pq.read_table(f"{path}/{name}.parquet", filesystem=fs)


def read_manifest(output: str) -> dict:
    """The current run's manifest (`output` may also name one version's folder)."""
    from raypipe.run.versions import current_run
    fs, path = rio.resolve(current_run(output))
    with fs.open_input_stream(f"{path}/{MANIFEST}") as f:
        return json.loads(f.read())


def clear_leftovers(output: str) -> list[str]:
    """Delete what killed runs left: unfinished versions under `<output>/runs/`, and the
    `<output>.tmp-*` folders of raypipe before versions; -> what was deleted. Only the
    output lock's holder calls this."""
    from raypipe.run.versions import prune, relink
    relink(output)
    gone = [f"{output.rstrip('/')}/runs/{v}" for v in prune(output)]
    fs, path = rio.resolve(output.rstrip("/"))
    parent, base = os.path.dirname(path), os.path.basename(path)
    if fs.get_file_info(parent).type == pafs.FileType.NotFound:
        return []
    found = [i.path for i in fs.get_file_info(pafs.FileSelector(parent))
             if i.type == pafs.FileType.Directory]
    olds = [p for p in found if os.path.basename(p).startswith(f"{base}.old-")]
    if olds and path not in found:        # killed between commit's two renames
        fs.move(olds.pop(), path)
    legacy = [p for p in found if os.path.basename(p).startswith(f"{base}.tmp-")] + olds
    for p in legacy:
        fs.delete_dir(p)
    return gone + legacy
