"""Keyed all-to-all steps: group rows by key (users' events), sum by key (segment item mass,
co-occurrence counts).

Two ways, one result. Ray Data's hash shuffle streams any size, spilling as it goes, but
starts its aggregator actors on every call: 5-10 s on 2 cores, whatever the data's size.
Up to `task_shuffle_rows()` rows, the same partitioning runs on plain Ray tasks instead: each
block is split by the hash of its keys (one task per block, one object per partition), and
one task per partition concatenates its parts and applies the step, in well under a second
on small data. Both partition by a stable hash of the key columns, so all of a key's rows
meet in one partition; which partition a key lands in differs between the two."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import ray

# Above this many rows the shuffle is Ray Data's. Below it the task shuffle holds the input
# in the object store whole (it is materialized to be split), a few hundred MB at most.
TASK_SHUFFLE_ROWS = 2_000_000


def task_shuffle_rows() -> int:
    """The row count up to which keyed steps run on plain tasks (RAYPIPE_TASK_SHUFFLE_ROWS
    overrides it; 0 always uses Ray Data's shuffle)."""
    return int(os.environ.get("RAYPIPE_TASK_SHUFFLE_ROWS", TASK_SHUFFLE_ROWS))


def partition_of(table: pa.Table, keys: list[str], partitions: int) -> np.ndarray:
    """Each row's partition: a stable 64-bit hash of its key columns (the same in every
    process and run), modulo `partitions`."""
    frame = table.select(keys).to_pandas()
    return (pd.util.hash_pandas_object(frame, index=False).to_numpy()
            % np.uint64(partitions)).astype(np.int64)


@ray.remote
def _split(block: pa.Table, keys: list[str], partitions: int):
    if not block.num_rows:      # an empty block may have no columns at all
        return tuple(block for _ in range(partitions))
    part = partition_of(block, keys, partitions)
    order = np.argsort(part, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(part, minlength=partitions))])
    ordered = block.take(pa.array(order))
    return tuple(ordered.slice(bounds[j], bounds[j + 1] - bounds[j]) for j in range(partitions))


@ray.remote
def _reduce(fn, fn_kwargs: dict, keys: list[str], *parts: pa.Table) -> pa.Table:
    tables = [p for p in parts if p.num_rows] or \
        [p for p in parts if set(keys) <= set(p.column_names)][:1]
    if not tables:                # every input block was empty and without columns
        return pa.table({})
    return fn(pa.concat_tables(tables, promote_options="default"), **fn_kwargs)


def by_key(ds, keys: list[str], partitions: int, fn, fn_kwargs: dict | None = None,
           rows: int = 0):
    """`ds` partitioned by `keys` into `partitions` parts, `fn(part, **fn_kwargs)` applied to
    each whole part (a pyarrow table holding every row of its keys) -> a dataset of the
    results. `rows`: the caller's estimate of the input's size, which picks the way."""
    fn_kwargs = fn_kwargs or {}
    if rows > task_shuffle_rows():
        return ds.repartition(partitions, keys=keys).map_batches(
            fn, batch_size=None, batch_format="pyarrow", fn_kwargs=fn_kwargs)
    blocks = ds.to_arrow_refs()
    if not blocks:
        return ds
    partitions = max(2, partitions)      # num_returns=1 would not return a tuple
    splits = [_split.options(num_returns=partitions).remote(b, keys, partitions)
              for b in blocks]
    parts = [_reduce.remote(fn, fn_kwargs, keys, *[s[j] for s in splits])
             for j in range(partitions)]
    sizes = ray.get([_num_rows.remote(p) for p in parts])
    kept = [p for p, n in zip(parts, sizes) if n] or parts[:1]
    return ray.data.from_arrow_refs(kept)


@ray.remote
def _num_rows(table: pa.Table) -> int:
    return table.num_rows


def _sum(table: pa.Table, keys: list[str], columns: list[str]) -> pa.Table:
    summed = table.group_by(keys, use_threads=False).aggregate([(c, "sum") for c in columns])
    return summed.rename_columns({f"{c}_sum": c for c in columns}).select([*keys, *columns])


def sum_by(ds, keys: list[str], columns: list[str], partitions: int, rows: int = 0):
    """-> a dataset of (keys, columns) with `columns` summed over each distinct key, in no
    particular order. `rows`: the caller's estimate of the input's size."""
    if rows > task_shuffle_rows():
        return (ds.groupby(keys, num_partitions=partitions).sum(columns)
                .rename_columns({f"sum({c})": c for c in columns}))
    return by_key(ds, keys, partitions, _sum, {"keys": keys, "columns": columns}, rows)
