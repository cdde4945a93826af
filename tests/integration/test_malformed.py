"""A malformed log, one file per kind of bad row: every row is accounted for."""
import os
import shutil

import pandas as pd
import pytest

from raypipe.run.artifacts import read_manifest
from raypipe.cli import main

HERE = os.path.join(os.path.dirname(__file__), "..", "data", "malformed")
SMALL = ["--set", "kmeans.n_clusters=2", "--set", "recommend.k=2", "--num-cpus", "2",
         "--set", "user_repr=pooled"]

pytestmark = pytest.mark.slow


def run(*args, items=os.path.join(HERE, "items.csv")):
    return main(["run", "--source", "events", "--items", items, *SMALL, *args])


def test_quarantine_counts_per_reason(ray_session):
    """The ingest stage on Ray (reading, tagging, dedup after partitioning by user) accounts
    for every row of the fixed malformed folder with its reason. The whole run's manifest
    and quarantine table are checked on the corpus below, so this runs the stage alone."""
    from raypipe.config import SourceConfig
    from raypipe.jobs import ingest
    from raypipe.jobs.runtime import to_table
    cfg = SourceConfig(kind="events", input=os.path.join(HERE, "events"),
                       items=os.path.join(HERE, "items.csv"))
    items, bad_items, item_rows = ingest.read_items(cfg, strict=False)
    kept, bad, rows = ingest.read_events(cfg, items["item_id"], False, partitions=2)
    assert rows["reasons"] == {"duplicate_event": 2, "item_without_text": 2,
                               "missing_item_id": 1, "missing_timestamp": 1,
                               "missing_user_id": 1, "unknown_event_type": 1,
                               "unparsable_timestamp": 1}
    assert (rows["read"], rows["kept"], rows["quarantined"]) == (15, 6, 9)
    assert kept.count() == 6
    assert item_rows["reasons"] == {"missing_text": 1}
    q = pd.concat([bad_items.to_pandas(), to_table(bad).to_pandas()])
    assert len(q) == 10 and set(q["table"]) == {"events", "items"}
    bad_ts = q[q.reason == "unparsable_timestamp"].iloc[0]
    assert bad_ts["_file"].endswith("03_bad_timestamps.jsonl") and bad_ts["_row"] == 1
    assert "next tuesday" in bad_ts["record"]


def test_strict_stops_naming_file_row_and_column(ray_session, tmp_path, capsys):
    folder = tmp_path / "events"
    folder.mkdir()
    for name in ("01_good.csv", "04_unknown_event_type.csv"):
        shutil.copy(os.path.join(HERE, "events", name), folder / name)
    good_items = tmp_path / "items.csv"
    good_items.write_text("".join(open(os.path.join(HERE, "items.csv")).readlines()[:4]))
    out = str(tmp_path / "out")
    assert run("--input", str(folder), "--output", out, "--strict", items=str(good_items)) == 2
    err = capsys.readouterr().err
    assert "04_unknown_event_type.csv, row 1, column 'event_type': unknown_event_type" in err
    assert "'wishlist'" in err
    # Nothing half-written: no output, no temporary folder; the store keeps the stage that
    # finished (the catalogue) for the next run, and nothing of the failed one.
    assert sorted(os.listdir(tmp_path)) == ["events", "items.csv", "out.stages"]
    stages = os.listdir(tmp_path / "out.stages")
    assert [s.split("-")[0] for s in stages] == ["items"]
    assert os.path.exists(tmp_path / "out.stages" / stages[0] / "_stage.json")

    assert run("--input", str(folder), "--output", out, "--strict") == 2
    assert "items.csv, row 4, column 'text': missing_text" in capsys.readouterr().err


def test_missing_columns_fail_before_any_work(ray_session, tmp_path, capsys):
    (tmp_path / "e.csv").write_text("customer,item_id\nu1,i1\n")
    assert run("--input", str(tmp_path / "e.csv"), "--output", str(tmp_path / "o")) == 2
    assert "missing required columns ['user_id', 'timestamp']" in capsys.readouterr().err



def test_a_log_of_every_kind_of_bad_record_runs_to_completion_keeping_no_raw_id(
        ray_session, tmp_path, monkeypatch, capfd):
    """Each malformed record of the corpus (tests/conftest.py) is quarantined with its reason,
    the manifest lists every file read with its count, equal to what was written, and the
    files that were not read with why; the good records are kept. The run is pseudonymised:
    no file it writes, no log line and no --strict error holds a raw id (the corpus's secret
    id appears only in records the readers cannot parse)."""
    from conftest import write_malformed_corpus
    corpus = write_malformed_corpus(tmp_path / "log")
    items = tmp_path / "items.csv"
    items.write_text("item_id,text\ni1,Tent\ni2,Stove\ni3,Lamp\n")
    monkeypatch.setenv("RAYPIPE_PSEUDONYM_KEY", "k" * 32)
    out = str(tmp_path / "out")
    args = ("--input", str(tmp_path / "log"), "--output", out, "--set",
            "privacy.pseudonymize=true")
    assert run(*args, items=str(items)) == 0
    rows = read_manifest(out)["rows"]
    read = {os.path.basename(f["file"]): f["records"] for f in rows["files"]}
    assert read == corpus["records"]
    assert rows["read"] == sum(corpus["records"].values())
    assert rows["reasons"] == corpus["reasons"] and rows["kept"] == corpus["good"]
    assert sorted(os.path.basename(f["file"]) for f in rows["not_read"]) == corpus["not_read"]
    q = pd.read_parquet(os.path.join(out, "current", "quarantine.parquet"))
    assert (q.table == "events").sum() == rows["quarantined"]
    for root, _, names in os.walk(tmp_path):
        if root.startswith(str(tmp_path / "log")):
            continue
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                assert corpus["secret"].encode() not in f.read(), os.path.join(root, name)
    assert run(*args, "--strict", items=str(items)) == 2           # stops at the first bad one
    captured = capfd.readouterr()
    assert "row 3" in captured.err and corpus["secret"] not in captured.out + captured.err
