"""run/stages.py: the store's rules on tiny stages, then the pipeline's driver killed with
SIGKILL mid-run and the same command run again."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.run.artifacts import read_manifest
from raypipe.run.stages import STAGE_FILE, StageStore

BIN = os.path.dirname(sys.executable)


def build(calls: list, rows: int):
    def write(folder, **inputs):
        calls.append(folder.path)
        folder.table("t", pa.table({"x": list(range(rows))}))
        return {"rows": rows}
    return write


def test_a_finished_stage_is_reused_and_a_changed_key_rebuilds(tmp_path):
    calls, out = [], str(tmp_path / "run")
    first = StageStore(out, {}).run("a", build(calls, 3), k=1)
    again = StageStore(out, {}).run("a", build(calls, 3), k=1)
    assert len(calls) == 1 and again.reused and not first.reused
    assert again.info == {"rows": 3} and again.folder.read("t").num_rows == 3
    assert again.folder.tables == {"t": 3}
    changed = StageStore(out, {}).run("a", build(calls, 4), k=2)
    assert len(calls) == 2 and not changed.reused and changed.key != first.key


def test_a_stage_without_its_marker_is_redone_and_force_redoes_all(tmp_path):
    calls, out = [], str(tmp_path / "run")
    stage = StageStore(out, {}).run("a", build(calls, 3), k=1)
    os.remove(os.path.join(stage.folder.path, STAGE_FILE))      # as if killed mid-write
    with open(os.path.join(stage.folder.path, "t.parquet", "junk.parquet"), "w") as f:
        f.write("half a file")
    redone = StageStore(out, {}).run("a", build(calls, 3), k=1)
    assert not redone.reused and len(calls) == 2
    assert redone.folder.read("t").num_rows == 3               # the junk went with the folder
    forced = StageStore(out, {}, force=True).run("a", build(calls, 3), k=1)
    assert not forced.reused and len(calls) == 3


def test_an_unreadable_marker_redoes_the_stage_instead_of_failing_every_run(tmp_path):
    calls, out = [], str(tmp_path / "run")
    stage = StageStore(out, {}).run("a", build(calls, 3), k=1)
    with open(os.path.join(stage.folder.path, STAGE_FILE), "w") as f:
        f.write('{"name": "a", "tab')                          # cut off mid-write
    redone = StageStore(out, {}).run("a", build(calls, 3), k=1)
    assert not redone.reused and len(calls) == 2
    assert StageStore(out, {}).run("a", build(calls, 3), k=1).reused
    assert not [f for f in os.listdir(redone.folder.path) if ".tmp-" in f]


def test_an_input_rewritten_with_the_same_size_and_time_changes_the_key(tmp_path):
    from raypipe.events.sources import plan_tables
    from raypipe.run.stages import InputFiles
    csv, parquet = tmp_path / "e.csv", tmp_path / "e.parquet"
    csv.write_text("user_id,item_id,timestamp\nu1,a,1\n")
    pq.write_table(pa.table({"user_id": ["u1"], "item_id": ["a"], "timestamp": [1]}), parquet)

    def key():
        return StageStore.key("events", {"files": InputFiles(plan_tables(str(tmp_path)))})
    before, stat = key(), {p: os.stat(p) for p in (csv, parquet)}
    csv.write_text("user_id,item_id,timestamp\nu1,b,1\n")    # same size
    pq.write_table(pa.table({"user_id": ["u1"], "item_id": ["b"], "timestamp": [1]}), parquet)
    for p, st in stat.items():
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert os.path.getsize(p) == st.st_size
    assert key() != before
    csv_only = key()
    pq.write_table(pa.table({"user_id": ["u1"], "item_id": ["a"], "timestamp": [1]}), parquet)
    os.utime(parquet, ns=(stat[parquet].st_atime_ns, stat[parquet].st_mtime_ns))
    assert key() != csv_only


def test_a_changed_source_file_changes_the_code_version_and_so_every_key(tmp_path, monkeypatch):
    import shutil

    import raypipe
    from raypipe.run import stages
    root = tmp_path / "raypipe"
    shutil.copytree(os.path.dirname(raypipe.__file__), root)
    before = stages.sources_hash(str(root))
    assert before == stages.code_version()
    with open(root / "segments" / "kmeans.py", "a") as f:
        f.write("\n# a changed line\n")
    assert stages.sources_hash(str(root)) != before
    key = StageStore.key("s", {"k": 1})
    monkeypatch.setattr(stages, "code_version", lambda: "other")
    assert StageStore.key("s", {"k": 1}) != key


def test_prune_keeps_only_the_stages_of_the_last_run(tmp_path):
    out = str(tmp_path / "run")
    StageStore(out, {}).run("a", build([], 1), k=1)
    store = StageStore(out, {})
    kept = store.run("a", build([], 1), k=2)
    store.prune()
    assert os.listdir(str(tmp_path / "run.stages")) == [os.path.basename(kept.folder.path)]


def test_stage_keys_ignore_settings_that_only_change_speed():
    from raypipe.config import PipelineConfig, apply_overrides
    base = PipelineConfig()
    fast = apply_overrides(base, ["embed.batch_size=7", "embed.max_actors=3",
                                  "encoder.num_workers=2", "sequences.num_partitions=9"])

    def key(cfg):
        return StageStore.key("s", {"embed": cfg.embed, "encoder": cfg.encoder,
                                    "sequences": cfg.sequences})
    assert key(base) == key(fast)
    assert key(base) != key(apply_overrides(base, ["embed.max_length=32"]))


def test_a_stage_key_is_derived_from_every_input_it_is_handed(tmp_path):
    """Stages read only what they are handed, and everything handed is in the key: a
    changed section, an input stage's key or a plain value each give a new key, while the
    Runtime (timings, output, force) never does."""
    from raypipe.config import KMeansConfig
    from raypipe.run.stages import Runtime
    store = StageStore(str(tmp_path / "run"), {})
    up = store.run("up", build([], 1), n=1)
    other_up = store.run("up", build([], 1), n=2)
    base = {"kmeans": KMeansConfig(), "users": up, "previous": "a"}
    key = StageStore.key("s", {**base, "rt": Runtime("x", {})})
    assert key == StageStore.key("s", {**base, "rt": Runtime("y", {"t": 1}, force=True)})
    for changed in ({"kmeans": KMeansConfig(n_clusters=3)}, {"users": other_up},
                    {"previous": "b"}):
        assert StageStore.key("s", {**base, **changed}) != StageStore.key("s", base)


def raypipe_run(paths, out) -> list[str]:
    """The command line that gives the `pipeline_runs('pooled')` fixture's run."""
    return [f"{BIN}/raypipe", "run", "--input", paths["events"], "--items", paths["items"],
            "--output", out, "--holdout", "last", "--num-cpus", "2",
            "--set", "user_repr=pooled", "--set", "kmeans.n_clusters=4",
            "--set", "recommend.k=10", "--set", "recommend.strategies=[vector,segment,blend,multi]",
            "--set", "embed.precision=fp32"]


@pytest.mark.slow
def test_a_killed_driver_leaves_no_artifact_and_the_rerun_reuses_finished_stages(
        pipeline_runs, tmp_path):
    ref_out, ref_manifest, paths = pipeline_runs("pooled")
    out = str(tmp_path / "out")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(raypipe_run(paths, out), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not glob.glob(f"{out}.stages/users-*/{STAGE_FILE}"):
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the users stage never finished"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)           # the driver only, mid-run
        proc.wait(30)
    finally:
        time.sleep(2)
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # then the local Ray it had started
        except ProcessLookupError:
            pass
    finished = {os.path.basename(os.path.dirname(m)).rsplit("-", 1)[0]
                for m in glob.glob(f"{out}.stages/*/{STAGE_FILE}")}
    assert {"items", "events", "item_embeddings", "users"} <= finished
    assert not os.path.exists(os.path.join(out, "LATEST")), "a killed run must leave no " \
        "version for readers"
    assert not glob.glob(os.path.join(out, "runs", "*", "manifest.json"))
    assert glob.glob(os.path.join(out, "runs", "*")), "the killed run's unfinished version"

    # The same command again (in this process: it joins the session's Ray, like a re-run
    # joining the cluster's).
    from raypipe.cli import main
    assert main(raypipe_run(paths, out)[1:]) == 0
    manifest = read_manifest(out)
    reused = {name: s["reused"] for name, s in manifest["stages"].items()}
    assert reused == {name: name in finished for name in reused}, (finished, reused)
    assert len(reused) == 7
    assert [os.path.exists(os.path.join(v, "manifest.json"))
            for v in glob.glob(os.path.join(out, "runs", "*"))] == [True], \
        "the rerun should clear what the killed run left"
    assert manifest["tables"] == ref_manifest["tables"]
    assert manifest["metrics"] == ref_manifest["metrics"]
    for name in ("profiles", "recommendations", "user_embeddings", "centroids", "segments"):
        a, b = (sorted_table(o, name) for o in (out, ref_out))
        assert a.column_names == b.column_names and a.num_rows == b.num_rows, name
        for col in a.column_names:
            x, y = a[col], b[col]
            if is_float(x.type):
                # Float sums may round differently when a reused worker process runs BLAS
                # with another thread count (seen at 1e-8 in centroids): close, not equal.
                np.testing.assert_allclose(flat(x), flat(y), rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name}.{col}")
            else:
                assert x.equals(y), f"{name}.{col} differs from an undisturbed run's"


def is_float(t: pa.DataType) -> bool:
    lists = pa.types.is_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_large_list(t)
    return pa.types.is_floating(t.value_type if lists else t)


def flat(column) -> np.ndarray:
    column = column.combine_chunks()
    if not pa.types.is_floating(column.type):
        column = column.flatten()
    return column.to_numpy(zero_copy_only=False)


def sorted_table(out: str, name: str) -> pa.Table:
    t = pq.read_table(os.path.join(out, "current", f"{name}.parquet")).replace_schema_metadata(None)
    keys = [c for c in ("user_id", "segment", "strategy", "rank") if c in t.column_names]
    return t.sort_by([(k, "ascending") for k in keys])
