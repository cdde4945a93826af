"""Experiment tracking: a run's figures in MLflow and/or TensorBoard (`tracking.to`), off by
default.

One raypipe run is one MLflow run (experiment `tracking.experiment`, named after the
output and the time) and one TensorBoard run folder. What goes there:
- while the encoder trains: each epoch's `encoder/train_loss`, `encoder/valid_ndcg_at_10`
  and `encoder/valid_recall_at_10`, step = the epoch (jobs/training.py's `EpochTracking`, a
  Ray Train callback on the training controller);
- when the run ends: the config as parameters, the test metrics per strategy, each stage's
  seconds, the K-means fit (K, inertia, iterations, the restarts' spread), the K sweep's
  choice, the encoder's summary (`training/best_epoch`, ...), blend's fitted weights and
  validation figures, row and user counts, and the encoder's epochs again when its stage
  was reused from an earlier run.

Names use `/` and `_at_` (MLflow refuses `@`). MLflow's local file store is in maintenance
mode in MLflow 3 and refuses to open unless MLFLOW_ALLOW_FILE_STORE is set: for the default
file store raypipe sets it; any other tracking URI (a server, a database) is used as given.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import time

log = logging.getLogger("raypipe")

RUN_SECTIONS = ("metrics", "seconds", "kmeans", "sweep", "blend", "encoder", "rows", "users",
                "item_index", "hierarchy")
RENAMED = {"encoder": "training"}
SKIP = {"history", "grid", "files", "per_level", "segment_ids", "names", "sizes"}


@dataclasses.dataclass(frozen=True)
class Handle:
    """What a process needs to log into an open tracker's runs (picklable)."""
    to: tuple
    mlflow_uri: str = ""
    mlflow_run: str = ""
    tensorboard_dir: str = ""


def metric_name(*parts) -> str:
    return "/".join(str(p) for p in parts).replace("@", "_at_")


def numbers(tree, prefix: tuple = ()) -> dict:
    """A manifest's nested dicts -> {name: number} for the numeric leaves (not booleans),
    lists of numbers as name/i, leaving out per-row detail (SKIP)."""
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k not in SKIP:
                out.update(numbers(v, prefix + (k,)))
    elif isinstance(tree, list) and tree and all(_number(v) for v in tree) and len(tree) <= 64:
        out.update({metric_name(*prefix, i): float(v) for i, v in enumerate(tree)})
    elif _number(tree):
        out[metric_name(*prefix)] = float(tree)
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def run_metrics(manifest: dict) -> dict:
    """The figures of a finished run's manifest worth tracking -> {name: number}."""
    out = {}
    for section in RUN_SECTIONS:
        if section == "metrics":
            metrics = manifest.get("metrics") or {}
            out.update(numbers(metrics.get("strategies", {}), ("test",)))
            if "cold_targets" in metrics:       # eval.cold_share
                out.update(numbers(metrics["cold_targets"]["strategies"], ("test_cold",)))
        elif section in manifest:      # the encoder's summary apart from its epochs
            out.update(numbers(manifest[section], (RENAMED.get(section, section),)))
    return out


def params(config: dict) -> dict:
    """The config as flat parameters: section.field -> its value as text."""
    out = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in params(v).items()})
        else:
            out[k] = str(v)[:500]
    return out


def epoch_metrics(row: dict) -> tuple[int, dict]:
    """One epoch's report (or history row) -> (step, {name: number})."""
    step = int(row["epoch"])
    return step, {metric_name("encoder", k): float(v) for k, v in row.items()
                  if k != "epoch" and _number(v)}


class Tracker:
    """The open trackers of one run. `open` starts them in the driver; `attach(handle)`
    joins them from another process (the training controller)."""

    def __init__(self, handle: Handle, owner: bool = False):
        self.handle, self.owner = handle, owner
        self._mlflow = self._writer = None
        if "mlflow" in handle.to:
            from mlflow.tracking import MlflowClient
            _allow_file_store(handle.mlflow_uri)
            self._mlflow = MlflowClient(handle.mlflow_uri)
        if "tensorboard" in handle.to and owner:
            # Its own file: two writers of one folder in the same second would share a name.
            self._writer = _summary_writer(handle.tensorboard_dir, f".{os.getpid()}.run")

    @classmethod
    def open(cls, cfg, output: str) -> "Tracker | None":
        """cfg: TrackingConfig. None when tracking is off."""
        if not cfg.to:
            return None
        missing = _missing(cfg.to)
        if missing:
            raise ValueError(f"tracking.to={list(cfg.to)} needs {', '.join(missing)}: "
                             f"pip install 'raypipe[tracking]'")
        name = f"{os.path.basename(output.rstrip('/')) or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
        uri = run_id = folder = ""
        if "mlflow" in cfg.to:
            uri, run_id = _start_mlflow(cfg, output, name)
        if "tensorboard" in cfg.to:
            folder = os.path.join(cfg.dir or f"{output.rstrip('/')}.tensorboard", name)
        tracker = cls(Handle(tuple(cfg.to), uri, run_id, folder), owner=True)
        log.info("tracking: %s", ", ".join(
            ([f"MLflow run {run_id} at {uri}"] if run_id else []) +
            ([f"TensorBoard at {folder}"] if folder else [])))
        return tracker

    @classmethod
    def attach(cls, handle: Handle) -> "Tracker":
        return cls(handle)

    def log_metrics(self, values: dict, step: int = 0) -> None:
        if self._mlflow is not None and values:
            from mlflow.entities import Metric
            now = int(time.time() * 1000)
            batch = [Metric(k, v, now, step) for k, v in values.items()]
            for i in range(0, len(batch), 1000):
                self._mlflow.log_batch(self.handle.mlflow_run, metrics=batch[i:i + 1000])
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(k, v, step)
            self._writer.flush()
        elif "tensorboard" in self.handle.to:
            # An attached tracker (the training controller, which may end as soon as the
            # last report is handled) writes each step to a file of its own and closes it,
            # so every step is on disk before the call returns.
            writer = _summary_writer(self.handle.tensorboard_dir,
                                     f".{os.getpid()}.step{step}.{time.monotonic_ns()}")
            for k, v in values.items():
                writer.add_scalar(k, v, step)
            writer.close()

    def log_params(self, values: dict) -> None:
        if self._mlflow is not None:
            from mlflow.entities import Param
            batch = [Param(k, v) for k, v in values.items()]
            for i in range(0, len(batch), 100):
                self._mlflow.log_batch(self.handle.mlflow_run, params=batch[i:i + 100])
        if self._writer is not None:
            self._writer.add_text("config", "\n".join(f"    {k}: {v}"
                                                      for k, v in sorted(values.items())))

    def finish(self, manifest: dict | None, reused_encoder: bool = False) -> None:
        """The run's figures (from its manifest), then close; manifest None: it failed."""
        if manifest is not None:
            self.log_params(params(manifest.get("config", {})))
            self.log_metrics(run_metrics(manifest))
            if reused_encoder:
                for row in (manifest.get("encoder") or {}).get("history", []):
                    self.log_metrics(*reversed(epoch_metrics(row)))
        self.close("FINISHED" if manifest is not None else "FAILED")

    def close(self, status: str = "FINISHED") -> None:
        if self._writer is not None:
            self._writer.close()
        if self._mlflow is not None and self.owner:
            self._mlflow.set_terminated(self.handle.mlflow_run, status)


def _summary_writer(folder: str, suffix: str):
    from tensorboardX import SummaryWriter
    return SummaryWriter(folder, filename_suffix=suffix)


def _missing(to) -> list[str]:
    import importlib.util
    need = {"mlflow": "mlflow (or mlflow-skinny)", "tensorboard": "tensorboardX"}
    module = {"mlflow": "mlflow", "tensorboard": "tensorboardX"}
    return [need[t] for t in to if importlib.util.find_spec(module[t]) is None]


def _start_mlflow(cfg, output: str, name: str) -> tuple[str, str]:
    from mlflow.tracking import MlflowClient
    if not cfg.uri and "://" in output:
        raise ValueError(f"tracking.to=mlflow with the output on {output.split('://')[0]}:// "
                         f"needs tracking.uri (an MLflow server or database): MLflow's file "
                         f"store is local")
    uri = cfg.uri or "file://" + os.path.abspath(f"{output.rstrip('/')}.mlruns")
    _allow_file_store(uri)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(cfg.experiment)
    experiment = found.experiment_id if found else client.create_experiment(cfg.experiment)
    run = client.create_run(experiment, run_name=name, tags={"raypipe.output": output})
    return uri, run.info.run_id


def _allow_file_store(uri: str) -> None:
    if uri.startswith("file:") or not re.match(r"^[a-z][a-z0-9+.-]*:", uri):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")     # see the module doc
