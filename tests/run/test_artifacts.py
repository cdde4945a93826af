"""run/artifacts.py: an output appears only on commit and an abort leaves nothing."""
import os

import pyarrow as pa

from raypipe.run.artifacts import ArtifactWriter, read_manifest, read_table


def test_output_appears_only_on_commit_and_replaces_the_old_run(tmp_path):
    out = str(tmp_path / "run")
    first = ArtifactWriter(out)
    first.table("t", pa.table({"x": [1]}))
    first.json("manifest.json", {"n": 1})
    assert not os.path.exists(out)
    first.commit()
    assert read_table(out, "t")["x"].to_pylist() == [1]
    second = ArtifactWriter(out)
    second.table("t", pa.table({"x": [2]}))
    second.json("manifest.json", {"n": 2})
    assert read_manifest(out) == {"n": 1}          # the old run stays readable meanwhile
    second.commit()
    assert read_manifest(out) == {"n": 2}
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_abort_leaves_nothing(tmp_path):
    w = ArtifactWriter(str(tmp_path / "run"))
    w.table("t", pa.table({"x": [1]}))
    w.abort()
    assert os.listdir(tmp_path) == []
