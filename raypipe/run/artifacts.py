"""Output folders on a local disk or an object store (`pyarrow.fs` URIs: s3://, gs://).

Tables are Parquet datasets named `<table>.parquet` (a folder of part files, as Spark and Ray
write them; `pandas.read_parquet` and `pyarrow.parquet.read_table` read them whole).

A run's output folder is written atomically for its readers: everything goes to a temporary
sibling folder first. On a local disk the finished folder is renamed into place. Object stores
have no rename, so there the old run's `manifest.json` is deleted first, the files are copied
in, and the new `manifest.json` comes last: a run is complete exactly when its manifest is
there, and the service and `read_manifest` look for nothing else.
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
        files = self.files(f"{name}.parquet") if self.exists(f"{name}.parquet") else []
        n = 0
        for path in files:
            with self.fs.open_input_file(path) as f:
                n += pq.ParquetFile(f).metadata.num_rows
        if not files:
            self.table(name, (schema or ds.schema().base_schema).empty_table())
            return
        self.tables[name] = n

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

    def read_dataset(self, name: str):
        import ray
        return ray.data.read_parquet(self.child(f"{name}.parquet"))

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


class ArtifactWriter(Folder):
    """A run's output: written to `<output>.tmp-<id>`, put in place by `commit`."""

    def __init__(self, output: str):
        super().__init__(output)
        self.final = self.path
        self.path = f"{self.final}.tmp-{uuid.uuid4().hex[:8]}"
        self.fs.create_dir(self.path, recursive=True)

    def commit(self) -> None:
        """Put the finished run in place; an earlier run there is replaced."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            old = None
            if self.fs.get_file_info(self.final).type != pafs.FileType.NotFound:
                old = f"{self.final}.old-{uuid.uuid4().hex[:8]}"
                self.fs.move(self.final, old)
            self.fs.move(self.path, self.final)
            if old:
                self.fs.delete_dir(old)
            return
        final = Folder(self._uri(self.final))
        if final.exists(MANIFEST):
            self.fs.delete_file(f"{self.final}/{MANIFEST}")   # from here on: not complete
        if final.exists():
            self.fs.delete_dir_contents(self.final)
        files = self.files()
        for path in sorted(files, key=lambda p: p.endswith(f"/{MANIFEST}")):
            self.fs.copy_file(path, f"{self.final}/{os.path.relpath(path, self.path)}")
        self.fs.delete_dir(self.path)

    def abort(self) -> None:
        self.delete()


def read_table(output: str, name: str) -> pa.Table:
    """A finished run's table, e.g. read_table('artifacts', 'profiles')."""
    fs, path = rio.resolve(output)
    return pq.read_table(f"{path}/{name}.parquet", filesystem=fs)


def read_manifest(output: str) -> dict:
    fs, path = rio.resolve(output)
    with fs.open_input_stream(f"{path}/{MANIFEST}") as f:
        return json.loads(f.read())


def clear_leftovers(output: str) -> list[str]:
    """Delete `<output>.tmp-*` folders that a killed run left behind; -> what was deleted.
    Only one run may write to an output at a time."""
    fs, path = rio.resolve(output.rstrip("/"))
    parent, base = os.path.dirname(path), os.path.basename(path)
    if fs.get_file_info(parent).type == pafs.FileType.NotFound:
        return []
    found = [i.path for i in fs.get_file_info(pafs.FileSelector(parent))
             if i.type == pafs.FileType.Directory]
    olds = [p for p in found if os.path.basename(p).startswith(f"{base}.old-")]
    if olds and path not in found:        # killed between commit's two renames
        fs.move(olds.pop(), path)
    gone = [p for p in found if os.path.basename(p).startswith(f"{base}.tmp-")] + olds
    for p in gone:
        fs.delete_dir(p)
    return gone
