"""`raypipe tune` (jobs/tune.py) on a small generated log: every trial is a Ray Train run of
the encoder scored on the validation users; the first trial is the starting settings; the
best settings are written as a config file that `raypipe run` takes and whose training
gives the trial's validation figure again; the same command again restores the finished
experiment instead of training; a driver killed mid-search resumes its unfinished trials
from their last epoch, and they end where undisturbed ones end."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.csv as pacsv
import pytest

from raypipe.config import PipelineConfig, SourceConfig, apply_overrides, load_config
from raypipe.config import space as spaces
from raypipe.jobs.tune import METRIC, TuneSettings, tune

pytestmark = pytest.mark.slow
BIN = os.path.dirname(sys.executable)
SETS = ["eval.holdout=last", "embed.precision=fp32", "encoder.epochs=4", "encoder.patience=2",
        "kmeans.n_clusters=3", "recommend.strategies=[vector,blend]"]
SPACE = {"encoder.dim": {"choice": [16, 32]},
         "encoder.lr": {"loguniform": [1e-3, 1e-2]},
         "encoder.max_length": {"choice": [5, 50]}}
SETTINGS = dict(trials=4, space=SPACE, grace_epochs=1, reduction=2)


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    from raypipe.config import SyntheticConfig
    from raypipe.events.synthetic import generate
    return generate(SyntheticConfig(users=300, items=120, events=6000, segments=3, seed=7),
                    str(tmp_path_factory.mktemp("tune-log")))


def config(log, out) -> PipelineConfig:
    return apply_overrides(PipelineConfig(output=str(out), source=SourceConfig(
        kind="events", input=log["events"], items=log["items"])), SETS)


def comparable(rows) -> list:
    return [(r["params"], r[METRIC], r["epochs"], r["stopped"]) for r in rows]


@pytest.fixture(scope="module")
def searched(ray_session, log, tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "out"
    cfg = config(log, out)
    return cfg, tune(cfg, TuneSettings(**SETTINGS))


def test_every_trial_is_scored_and_the_first_is_the_starting_settings(searched):
    cfg, result = searched
    rows = result["rows"]
    assert len(rows) == 4 and [r["status"] for r in rows] == ["TERMINATED"] * 4
    assert rows[0]["params"] == spaces.point(cfg, SPACE)
    assert rows[0]["params"]["encoder.max_length"] == 50      # 0 said as what it reads
    for r in rows:
        assert 0.0 < r[METRIC] <= 1.0
        assert 1 <= r["best_epoch"] <= r["epochs"] <= 4
        assert r["stopped"] in {"early", "max_epochs", "scheduler"}
    for r in rows[1:]:                  # drawn from the space (the first: the defaults)
        assert r["params"]["encoder.dim"] in (16, 32)
        assert 1e-3 <= r["params"]["encoder.lr"] <= 1e-2
    assert result["best"] == max(rows, key=lambda r: r[METRIC])
    # trials.csv holds the same rows, a column per parameter
    table = pacsv.read_csv(os.path.join(result["folder"], "trials.csv"))
    assert table.num_rows == 4 and set(SPACE) <= set(table.column_names)
    assert table[METRIC].to_pylist() == [r[METRIC] for r in rows]


def test_the_best_config_file_is_the_starting_config_with_the_best_settings(searched):
    cfg, result = searched
    best = load_config(result["config"])
    assert best == spaces.apply(cfg, result["best"]["params"])
    assert best.output == cfg.output and best.source == cfg.source


def test_the_same_command_again_restores_the_experiment_without_training(searched):
    cfg, result = searched
    runs = sorted(os.listdir(os.path.join(result["folder"], "train")))
    again = tune(cfg, TuneSettings(**SETTINGS))
    assert again["experiment"] == result["experiment"]
    assert comparable(again["rows"]) == comparable(result["rows"])
    assert sorted(os.listdir(os.path.join(result["folder"], "train"))) == runs
    # a changed search is another experiment, not a resumption of this one
    other = TuneSettings(**{**SETTINGS, "seed": 1})
    from raypipe.jobs.tune import experiment_name
    assert experiment_name(cfg, SPACE, other, "k") != \
        experiment_name(cfg, SPACE, TuneSettings(**SETTINGS), "k")


def test_a_run_of_the_best_config_trains_to_the_trials_validation_figure(searched):
    from raypipe.pipeline import run
    _, result = searched
    best = result["best"]
    manifest = run(load_config(result["config"]))
    if best["stopped"] == "scheduler":      # the run trains on where ASHA stopped it
        assert manifest["encoder"]["valid_ndcg@10"] >= best[METRIC] - 0.01
        return
    # Trials train on one thread and the run on all: float sums may round apart, so close
    # rather than equal.
    assert manifest["encoder"]["valid_ndcg@10"] == pytest.approx(best[METRIC], abs=0.01)
    assert manifest["encoder"]["epochs"] == best["epochs"]


def _resumable(folder: str, seen: dict) -> bool:
    """Some Train run registered a checkpoint of an epoch before the third (with patience 2
    no trial ends earlier), and Tune's experiment state was written after that run was first
    seen (so it holds the trial). `seen`: run folder -> when first seen, kept across calls.
    A checkpoint folder alone is not enough: Ray Train resumes from the checkpoints its
    manager's snapshot lists, written after the folder."""
    now = time.time()
    for run in glob.glob(f"{folder}/train/*/"):
        seen.setdefault(run, now)
    states = [os.path.getmtime(p) for p in glob.glob(f"{folder}/tune-*/experiment_state-*.json")]
    for run, first in seen.items():
        try:
            with open(os.path.join(run, "checkpoint_manager_snapshot.json")) as f:
                latest = json.load(f).get("latest_checkpoint_result") or {}
        except (OSError, ValueError):
            continue
        epoch = (latest.get("metrics") or {}).get("epoch")
        if epoch is not None and epoch < 3 and any(t > first for t in states):
            return True
    return False


def test_a_killed_driver_resumes_unfinished_trials_and_ends_as_undisturbed(searched, log,
                                                                           tmp_path):
    _, undisturbed = searched
    out = tmp_path / "out"
    command = [f"{BIN}/raypipe", "tune", "--input", log["events"], "--items", log["items"],
               "--output", str(out), "--num-cpus", "2", "--trials", "4",
               # no trial is stopped by ASHA here, whose choices hang on which trial
               # reports first: every trial runs to its own end, which is deterministic
               "--grace-epochs", "4", "--reduction", "2", "--space", str(tmp_path / "s.yaml")]
    for s in SETS:
        command += ["--set", s]
    import yaml
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SPACE))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(command, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, seen = time.monotonic() + 600, {}
        # Killed once a trial that cannot have ended yet has a checkpoint Ray Train will
        # resume from, and Tune saved its state after that trial's Train run began.
        while not _resumable(f"{out}.tune", seen):
            assert proc.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline, "no trial finished an epoch"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        time.sleep(2)
        try:
            os.killpg(proc.pid, signal.SIGKILL)     # the local Ray it had started
        except ProcessLookupError:
            pass
    from raypipe.cli import main
    assert main(command[1:]) == 0
    rows = pacsv.read_csv(f"{out}.tune/trials.csv").to_pylist()
    assert len(rows) == 4 and {r["status"] for r in rows} == {"TERMINATED"}
    assert {r["stopped"] for r in rows} <= {"early", "max_epochs"}
    # the same draws as the undisturbed search; where that one let a trial end by itself
    # too, the same figure
    compared = 0
    for r, u in zip(rows, undisturbed["rows"]):
        assert r["encoder.dim"] == u["params"]["encoder.dim"]
        if u["stopped"] != "scheduler":
            assert (r[METRIC], r["epochs"]) == (u[METRIC], u["epochs"]), (r, u)
            compared += 1
    assert compared >= 1
    assert any((r["resumed_from_epoch"] or 0) >= 1 for r in rows), \
        "no trial resumed from its checkpoint"
