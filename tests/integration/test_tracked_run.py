"""A small encoder run from the CLI, in its own process, with `tracking.to` on: its console
stays under 60 lines with the encoder training, each epoch reaches MLflow's file store and
TensorBoard's event files as the Ray Train callback logs it, and the run's figures follow
at its end."""
import re
import subprocess
import sys

import pytest

from tests.run.test_tracking import mlflow_run, tensorboard_scalars

pytestmark = pytest.mark.slow
EPOCHS = 3
CRASH = re.compile(r"Traceback \(most recent call last\)|SIGABRT|Fatal Python error")
WORKER = re.compile(r"^\S*\(.*? pid=(\d+)\)")       # "(HashShuffleMap(...) pid=409) ..."


def without_crash_reports(lines: list[str]) -> tuple[list[str], int]:
    """The console without the lines of Ray worker processes that crashed or raised in a
    thread of Ray's own (Ray retries their tasks; e.g. an abseil mutex abort in a shuffle
    task, an InterruptedError in Ray Data's file listing): those come and go between runs
    and are not the run's output. -> (the rest, how many were left out)."""
    crashed = {m.group(1) for line in lines if CRASH.search(line)
               for m in [WORKER.search(line)] if m}
    kept = [line for line in lines
            if not ((m := WORKER.search(line)) and m.group(1) in crashed)]
    return kept, len(lines) - len(kept)


def test_a_tracked_encoder_run(tmp_path):
    from raypipe.config import SyntheticConfig
    from raypipe.events.synthetic import generate
    from raypipe.run.artifacts import read_manifest
    paths = generate(SyntheticConfig(users=300, items=150, events=6000, segments=3, seed=4),
                     str(tmp_path / "data"))
    out = str(tmp_path / "out")
    settings = [f"encoder.epochs={EPOCHS}", "encoder.patience=10", "kmeans.n_clusters=3",
                "embed.precision=fp32", "item_groups.n_groups=0",
                "tracking.to=[mlflow,tensorboard]"]
    done = subprocess.run([sys.executable, "-m", "raypipe.cli", "run", "--input",
                           paths["events"], "--items", paths["items"], "--output", out,
                           "--holdout", "last", *[a for s in settings for a in ("--set", s)]],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    console, crashes = without_crash_reports((done.stdout + done.stderr).splitlines())
    assert len(console) < 60, "\n".join(console)
    print(f"console: {len(console)} lines, and {crashes} of Ray workers' crash reports")
    assert sum("encoder epoch" in line for line in console) <= EPOCHS
    manifest = read_manifest(out)
    assert manifest["encoder"]["epochs"] == EPOCHS
    assert "tracking" not in manifest["config_hash"]

    client, run = mlflow_run(f"file://{tmp_path}/out.mlruns")
    assert run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "encoder/valid_ndcg_at_10")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))   # once each: live
    want = {r["epoch"]: r["valid_ndcg@10"] for r in manifest["encoder"]["history"]}
    assert {m.step: m.value for m in history} == pytest.approx(want)
    ndcg = manifest["metrics"]["strategies"]["blend"]["ndcg@10"]
    assert run.data.metrics["test/blend/ndcg_at_10"] == pytest.approx(ndcg)
    assert run.data.metrics["kmeans/n_clusters"] == 3
    assert run.data.params["encoder.epochs"] == str(EPOCHS)

    scalars = tensorboard_scalars(f"{tmp_path}/out.tensorboard")
    assert sorted(scalars["encoder/train_loss"]) == list(range(1, EPOCHS + 1))
    assert scalars["test/blend/ndcg_at_10"][0] == pytest.approx(ndcg)
