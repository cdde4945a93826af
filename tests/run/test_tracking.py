"""raypipe/run/tracking.py without Ray: what a finished run's manifest gives the trackers,
and a run's figures read back from MLflow's file store and TensorBoard's event files.
tests/integration/test_tracked_run.py tracks a whole run, epochs as they finish."""
import glob
import struct

import pytest

from raypipe.config import TrackingConfig
from raypipe.run.tracking import Tracker, epoch_metrics, params, run_metrics

MANIFEST = {
    "config": {"kmeans": {"n_clusters": 4, "levels": []}, "user_repr": "encoder"},
    "metrics": {"protocol": "leave-one-out", "strategies": {
        "blend": {"ndcg@10": 0.08, "recall@10": 0.13, "users": 900}}},
    "seconds": {"encoder": 12.5, "segments": 3.0},
    "kmeans": {"n_clusters": 4, "inertia": 10.5, "n_iter": 7,
               "restarts": {"inertia": [10.5, 10.7], "inertia_spread": 0.02}},
    "blend": {"fitted": True, "segment": 0.05, "valid_ndcg@10": 0.1,
              "grid": [{"segment": 0.0, "valid_ndcg@10": 0.09}]},
    "encoder": {"best_epoch": 2, "history": [
        {"epoch": 1, "train_loss": 7.5, "valid_ndcg@10": 0.05},
        {"epoch": 2, "train_loss": 7.1, "valid_ndcg@10": 0.06}]},
    "rows": {"read": 100, "kept": 98, "files": [{"records": 100}]},
}


def test_a_manifest_gives_its_figures_and_leaves_out_detail():
    got = run_metrics(MANIFEST)
    assert got["test/blend/ndcg_at_10"] == 0.08 and got["test/blend/users"] == 900
    assert got["seconds/encoder"] == 12.5 and got["kmeans/inertia"] == 10.5
    assert got["kmeans/restarts/inertia/1"] == 10.7
    assert got["blend/valid_ndcg_at_10"] == 0.1 and got["rows/kept"] == 98
    assert got["training/best_epoch"] == 2 and not [k for k in got if k.startswith("encoder/")]
    assert "blend/fitted" not in got                       # booleans are not figures
    assert not [k for k in got if "history" in k or "grid" in k or "files" in k or "@" in k]
    assert params(MANIFEST["config"]) == {"kmeans.n_clusters": "4", "kmeans.levels": "[]",
                                          "user_repr": "encoder"}
    assert epoch_metrics({"epoch": 3, "train_loss": 7.0, "valid_ndcg@10": 0.07}) == \
        (3, {"encoder/train_loss": 7.0, "encoder/valid_ndcg_at_10": 0.07})
    # a cold-item run's figures on the users whose test item is cold
    cold = {**MANIFEST, "metrics": {**MANIFEST["metrics"], "cold_targets": {
        "items": 40, "strategies": {"vector": {"recall@10": 0.2, "users": 30}}}}}
    got = run_metrics(cold)
    assert got["test_cold/vector/recall_at_10"] == 0.2 and "test_cold/items" not in got


def test_off_unless_asked_and_unknown_trackers_refused(tmp_path):
    assert Tracker.open(TrackingConfig(), str(tmp_path / "out")) is None
    assert Tracker.open(TrackingConfig(to="none"), str(tmp_path / "out")) is None
    with pytest.raises(ValueError, match="wandb"):
        TrackingConfig(to=("wandb",))
    with pytest.raises(ValueError, match="tracking.uri"):
        Tracker.open(TrackingConfig(to=("mlflow",)), "s3://bucket/out")


def tensorboard_scalars(folder) -> dict:
    """Every TensorBoard event file under folder -> {tag: {step: value}}."""
    from tensorboardX.proto import event_pb2
    out = {}
    for path in glob.glob(f"{folder}/**/events.out.tfevents.*", recursive=True):
        data, i = open(path, "rb").read(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def mlflow_run(uri: str, experiment: str = "raypipe"):
    """The one MLflow run of an experiment in a file store -> (client, run)."""
    import os
    from mlflow.tracking import MlflowClient
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")    # as raypipe sets it
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return client, run


def test_a_run_lands_in_mlflow_and_tensorboard(tmp_path):
    out = str(tmp_path / "out")
    tracker = Tracker.open(TrackingConfig(to=("mlflow", "tensorboard")), out)
    assert tracker.handle.mlflow_uri == f"file://{tmp_path}/out.mlruns"
    other = Tracker.attach(tracker.handle)          # as the training controller does
    for row in MANIFEST["encoder"]["history"]:
        step, values = epoch_metrics(row)
        other.log_metrics(values, step)
    other.close()
    tracker.finish(MANIFEST)
    client, run = mlflow_run(tracker.handle.mlflow_uri)
    assert run.info.status == "FINISHED" and run.data.params["kmeans.n_clusters"] == "4"
    assert run.data.metrics["test/blend/ndcg_at_10"] == pytest.approx(0.08)
    losses = client.get_metric_history(run.info.run_id, "encoder/train_loss")
    assert [(m.step, m.value) for m in losses] == [(1, 7.5), (2, 7.1)]
    scalars = tensorboard_scalars(f"{tmp_path}/out.tensorboard")
    assert scalars["encoder/train_loss"] == {1: 7.5, 2: pytest.approx(7.1)}
    assert scalars["kmeans/inertia"] == {0: 10.5}


def test_a_reused_encoder_logs_its_epochs_from_the_manifest_and_a_failed_run_says_so(tmp_path):
    tracker = Tracker.open(TrackingConfig(to=("mlflow",)), str(tmp_path / "out"))
    tracker.finish(MANIFEST, reused_encoder=True)
    client, run = mlflow_run(tracker.handle.mlflow_uri)
    history = client.get_metric_history(run.info.run_id, "encoder/valid_ndcg_at_10")
    assert [m.step for m in history] == [1, 2]
    failed = Tracker.open(TrackingConfig(to=("mlflow",), experiment="other"),
                          str(tmp_path / "out"))
    failed.finish(None)
    assert mlflow_run(failed.handle.mlflow_uri, "other")[1].info.status == "FAILED"
