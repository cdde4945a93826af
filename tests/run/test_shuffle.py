"""Keyed steps (jobs/shuffle.py): the task shuffle and Ray Data's give the same groups and
sums, every key's rows meet in one part, and the hash is the same in every process."""
import sys

import numpy as np
import pyarrow as pa
import pytest
from ray import cloudpickle

from raypipe.jobs import shuffle

cloudpickle.register_pickle_by_value(sys.modules[__name__])   # _groups runs in Ray workers


def _blocks(n_blocks=3, rows=2000, seed=0):
    rng = np.random.default_rng(seed)
    return [pa.table({"user_id": [f"u{u}" for u in rng.integers(0, 150, rows)],
                      "item": rng.integers(0, 40, rows).astype(np.int32),
                      "w": rng.random(rows), "one": np.ones(rows, np.int64)})
            for _ in range(n_blocks)]


def _groups(part: pa.Table) -> pa.Table:
    """One row per user of the part: its rows' count and the users' items, sorted."""
    frame = part.to_pandas()
    got = frame.groupby("user_id").agg(n=("item", "size"), items=("item", sorted))
    return pa.table({"user_id": list(got.index), "n": got["n"].to_numpy(),
                     "items": [list(map(int, x)) for x in got["items"]]})


def _rows(ds) -> dict:
    from raypipe.jobs.runtime import to_table
    t = to_table(ds)
    return {u: (n, tuple(i)) for u, n, i in zip(*(t[c].to_pylist() for c in t.column_names))}


@pytest.mark.parametrize("way", ["tasks", "ray_data"])
def test_by_key_groups_every_key_once(ray_session, monkeypatch, way):
    blocks = _blocks()
    monkeypatch.setenv("RAYPIPE_TASK_SHUFFLE_ROWS", "0" if way == "ray_data" else "1000000")
    ds = ray_session.data.from_arrow(blocks)
    got = _rows(shuffle.by_key(ds, ["user_id"], 4, _groups, rows=6000))
    everything = _groups(pa.concat_tables(blocks))
    expected = {u: (n, tuple(i)) for u, n, i in zip(*(everything[c].to_pylist()
                                                      for c in everything.column_names))}
    # a user split over two parts would appear twice, with part of its rows each
    assert got == expected


@pytest.mark.parametrize("way", ["tasks", "ray_data"])
def test_sum_by_matches_a_plain_group_by(ray_session, monkeypatch, way):
    from raypipe.jobs.runtime import to_table
    blocks = _blocks(seed=1)
    monkeypatch.setenv("RAYPIPE_TASK_SHUFFLE_ROWS", "0" if way == "ray_data" else "1000000")
    ds = ray_session.data.from_arrow(blocks)
    got = to_table(shuffle.sum_by(ds, ["user_id", "item"], ["w", "one"], 3, rows=6000))
    assert got.column_names == ["user_id", "item", "w", "one"]
    frame = pa.concat_tables(blocks).to_pandas().groupby(["user_id", "item"]).sum()
    got_frame = got.to_pandas().set_index(["user_id", "item"]).sort_index()
    assert len(got_frame) == len(frame)
    np.testing.assert_allclose(got_frame["w"], frame["w"])
    assert (got_frame["one"].to_numpy() == frame["one"].to_numpy()).all()


def test_task_shuffle_keeps_an_empty_input_readable(ray_session):
    empty = pa.table({"user_id": pa.array([], pa.string()), "item": pa.array([], pa.int32())})
    ds = ray_session.data.from_arrow([empty])
    assert shuffle.by_key(ds, ["user_id"], 4, _groups).count() == 0


def test_partition_is_a_stable_hash_of_the_keys():
    t = pa.table({"user_id": ["a", "b", "c", "a"], "k": [1, 2, 3, 1]})
    part = shuffle.partition_of(t, ["user_id", "k"], 8)
    assert part[0] == part[3] and ((0 <= part) & (part < 8)).all()
    # the same in another process: pandas' hash with its fixed key, not Python's hash()
    import subprocess
    import sys
    code = ("import pyarrow as pa; from raypipe.jobs.shuffle import partition_of; "
            "print(list(partition_of(pa.table({'user_id': ['a', 'b', 'c', 'a'], "
            "'k': [1, 2, 3, 1]}), ['user_id', 'k'], 8)))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123"})
    assert other.stdout.strip() == str(list(part))


def test_empty_blocks_without_columns_are_passed_over(ray_session):
    # what a reader leaves for a file with no readable record: a block of no rows and
    # no columns, beside real ones
    blocks = [pa.table({}), *_blocks(n_blocks=2, rows=300, seed=3), pa.table({})]
    ds = ray_session.data.from_arrow(blocks)
    got = _rows(shuffle.by_key(ds, ["user_id"], 3, _groups, rows=600))
    assert sum(n for n, _ in got.values()) == 600
