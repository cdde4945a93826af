"""run/artifacts.py and run/versions.py: a run is an immutable version under
`<output>/runs/<id>/` that readers see only once the LATEST pointer names it; a crash at each
point of a commit leaves a complete, readable run; a version whose tables do not match its
manifest is refused; old versions are pruned; an output from before versions is read and
then replaced."""
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.run.artifacts import clear_leftovers, read_manifest, read_table
from raypipe.run.versions import (LATEST, ArtifactWriter, IncompleteRun, current_run, prune,
                                  verify, versions)


def write_run(out: str, n: int, commit: bool = True) -> ArtifactWriter:
    w = ArtifactWriter(out)
    w.table("t", pa.table({"x": list(range(n))}))
    w.json("manifest.json", {"n": n, "tables": w.tables})
    if commit:
        w.commit()
    return w


def test_a_version_appears_only_on_commit_and_the_old_one_stays_readable(tmp_path):
    out = str(tmp_path / "run")
    write_run(out, 1)
    assert read_table(out, "t").num_rows == 1
    second = write_run(out, 2, commit=False)
    assert read_manifest(out)["n"] == 1                # the old run stays the current one
    second.commit()
    assert read_manifest(out)["n"] == 2 and read_table(out, "t").num_rows == 2
    assert sorted(os.listdir(out)) == ["LATEST", "current", "runs"]
    assert pq.read_table(os.path.join(out, "current", "t.parquet")).num_rows == 2
    assert current_run(out).endswith(json.load(open(os.path.join(out, LATEST)))["run"])


def test_abort_of_a_first_run_leaves_nothing(tmp_path):
    w = ArtifactWriter(str(tmp_path / "run"))
    w.table("t", pa.table({"x": [1]}))
    w.abort()
    assert os.listdir(tmp_path) == []


def test_a_version_that_does_not_match_its_manifest_is_refused(tmp_path):
    out = str(tmp_path / "run")
    w = write_run(out, 3, commit=False)
    w.json("manifest.json", {"n": 3, "tables": {"t": 3, "gone": 5}})
    with pytest.raises(IncompleteRun, match="table gone is missing"):
        w.commit()
    assert not os.path.exists(os.path.join(out, LATEST))
    write_run(out, 3)
    part = next(p for p in (os.path.join(dp, f) for dp, _, fs in os.walk(
        current_run(out)) for f in fs) if p.endswith(".parquet"))
    pq.write_table(pa.table({"x": [1]}), part)           # a half-copied table
    with pytest.raises(IncompleteRun, match="has 1 rows, its manifest 3"):
        verify(current_run(out))


def test_old_versions_and_unfinished_ones_are_pruned(tmp_path):
    out = str(tmp_path / "run")
    for n in range(5):
        write_run(out, n + 1)
    assert len(versions(out)) == 3
    crashed = write_run(out, 9, commit=False)             # no commit: a crashed run
    os.remove(os.path.join(crashed.path, "manifest.json"))
    assert prune(out) == [crashed.run_id]
    assert read_manifest(out)["n"] == 5


def test_an_output_from_before_versions_is_read_then_replaced(tmp_path):
    out = tmp_path / "run"
    (out / "t.parquet").mkdir(parents=True)
    pq.write_table(pa.table({"x": [7]}), out / "t.parquet" / "part-0.parquet")
    (out / "manifest.json").write_text(json.dumps({"n": 0, "tables": {"t": 1}}))
    (out / "encoder.pt").write_bytes(b"old")
    assert read_manifest(str(out))["n"] == 0 and read_table(str(out), "t").num_rows == 1
    write_run(str(out), 2)
    assert sorted(os.listdir(out)) == ["LATEST", "current", "runs"]
    assert read_manifest(str(out))["n"] == 2


CRASH = """
import os, sys
import pyarrow as pa
from raypipe.run import artifacts, versions
point, out = sys.argv[1], sys.argv[2]
real_bytes, real_link, real_prune = artifacts.Folder.bytes, versions._link, versions.prune

def die(*a, **k):
    os._exit(9)                       # as kill -9: no cleanup, no finally
if point == "manifest":
    artifacts.Folder.bytes = lambda self, name, data: die() if name == "manifest.json" \\
        else real_bytes(self, name, data)
elif point == "pointer":
    artifacts.Folder.bytes = lambda self, name, data: die() if name == "LATEST" \\
        else real_bytes(self, name, data)
elif point == "link":
    versions._link = die
elif point == "prune":
    versions.prune = die
w = versions.ArtifactWriter(out)
w.table("t", pa.table({"x": list(range(2))}))
w.json("manifest.json", {"n": 2, "tables": w.tables})
w.commit()
"""


@pytest.mark.parametrize("point,expected", [("manifest", 1), ("pointer", 1), ("link", 2),
                                            ("prune", 2)])
def test_a_crash_at_each_point_of_the_commit_leaves_a_complete_run(tmp_path, point, expected):
    out = str(tmp_path / "run")
    write_run(out, 1)
    r = subprocess.run([sys.executable, "-c", CRASH, point, out])
    assert r.returncode == 9
    assert read_manifest(out)["n"] == expected           # the old run, or the new one whole
    verify(current_run(out))
    assert read_table(out, "t").num_rows == expected
    clear_leftovers(out)                                   # what the next run does first
    assert pq.read_table(os.path.join(out, "current", "t.parquet")).num_rows == expected
    write_run(out, 3)                                      # the next run goes on as usual
    assert read_manifest(out)["n"] == 3 and len(versions(out)) <= 3
