"""One output folder, written atomically: everything goes to a temporary sibling folder that is
renamed into place only when the run succeeds, so a reader never sees a half-written run.

Tables are Parquet datasets named `<table>.parquet` (a folder of part files, as Spark and Ray
write them; `pandas.read_parquet` and `pyarrow.parquet.read_table` read them whole).
"""
from __future__ import annotations

import json
import uuid

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raypipe import io as rio


class ArtifactWriter:
    def __init__(self, output: str):
        self.output = output
        self.fs, self.final = rio.resolve(output)
        self.tmp = f"{self.final.rstrip('/')}.tmp-{uuid.uuid4().hex[:8]}"
        self.fs.create_dir(self.tmp, recursive=True)
        self.tables: dict[str, int] = {}

    def _uri(self, path: str) -> str:
        return self.output.split("://")[0] + "://" + path if "://" in self.output else path

    def path(self, name: str) -> str:
        return self._uri(f"{self.tmp}/{name}")

    def table(self, name: str, table: pa.Table) -> None:
        folder = f"{self.tmp}/{name}.parquet"
        self.fs.create_dir(folder, recursive=True)
        pq.write_table(table, f"{folder}/part-00000.parquet", filesystem=self.fs)
        self.tables[name] = table.num_rows

    def dataset(self, name: str, ds, schema: pa.Schema | None = None) -> None:
        """Write a Ray dataset (materialized first, so counting re-runs nothing). An empty one
        still leaves a readable table with `schema`."""
        ds = ds.materialize()
        n = ds.count()
        if n == 0:
            self.table(name, (schema or ds.schema().base_schema).empty_table())
            return
        ds.write_parquet(self._uri(f"{self.tmp}/{name}.parquet"))
        self.tables[name] = n

    def json(self, name: str, obj) -> None:
        with self.fs.open_output_stream(f"{self.tmp}/{name}") as f:
            f.write(json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def bytes(self, name: str, data: bytes) -> None:
        with self.fs.open_output_stream(f"{self.tmp}/{name}") as f:
            f.write(data)

    def read(self, name: str) -> pa.Table:
        return pq.read_table(f"{self.tmp}/{name}.parquet", filesystem=self.fs)

    def commit(self) -> None:
        """Move the finished run into place; an earlier run there is replaced."""
        old = None
        if self.fs.get_file_info(self.final).type != pafs.FileType.NotFound:
            old = f"{self.final.rstrip('/')}.old-{uuid.uuid4().hex[:8]}"
            self.fs.move(self.final, old)
        self.fs.move(self.tmp, self.final)
        if old:
            self.fs.delete_dir(old)

    def abort(self) -> None:
        if self.fs.get_file_info(self.tmp).type != pafs.FileType.NotFound:
            self.fs.delete_dir(self.tmp)


def read_table(output: str, name: str) -> pa.Table:
    """A finished run's table, e.g. read_table('artifacts', 'profiles')."""
    fs, path = rio.resolve(output)
    return pq.read_table(f"{path}/{name}.parquet", filesystem=fs)


def read_manifest(output: str) -> dict:
    fs, path = rio.resolve(output)
    with fs.open_input_stream(f"{path}/manifest.json") as f:
        return json.loads(f.read())
