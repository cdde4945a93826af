"""Ray Train around `vectors.training.fit`: a TorchTrainer with ScalingConfig(num_workers, use_gpu),
the encoded histories fed from a Ray Dataset, checkpoints through Ray Train.

Every worker reads the whole (small, integer) history dataset and trains on its slice of each
global batch, so any number of workers gives the run one worker gives (DDP averages the
gradients). A run is named after a hash of its inputs and settings: re-running the same
command with the same storage resumes from the latest checkpoint instead of starting over.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import ray
import ray.train

from raypipe.run import paths as rio

from raypipe.config import EncoderConfig
from raypipe.jobs.runtime import USER_BATCH, fetch, resources, verbose

log = logging.getLogger(__name__)
EPOCH_LINES_EVERY_S = 15.0    # the console's epoch lines, quiet mode (`--verbose`: each)
STATE_FILE = "state.pt"


def encode_users(users, catalogue_ref, width: int, cfg: EncoderConfig):
    """User sequences -> rows (user_id, items (width,) int64, events (width,) int64, held:
    whether the user is held out for validation)."""
    return users.map_batches(_encode, batch_size=USER_BATCH, batch_format="pyarrow",
                             fn_kwargs={"catalogue": catalogue_ref, "width": width,
                                        "share": cfg.validation_share, "seed": cfg.seed})


def _histories(batch: pa.Table, catalogue, width: int):
    """A batch of user sequences -> encoded (items, events), as encoder.encode_histories."""
    from raypipe.jobs.users import histories
    from raypipe.vectors.encoder import encode_histories
    return encode_histories(*histories(batch, fetch(catalogue[0])), width)


def _encode(batch: pa.Table, catalogue, width: int, share: float, seed: int) -> dict:
    from raypipe.recommend.cooccur import held_out
    items, events = _histories(batch, catalogue, width)
    users = batch["user_id"].to_numpy(zero_copy_only=False)
    return {"user_id": users, "items": items, "events": events,
            "held": held_out(users, share, seed)}


def read_encoded(it) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dataset iterator of encoded rows -> (items, events, held) in user-id order, so the
    run does not depend on block order."""
    cols = {c: [] for c in ("user_id", "items", "events", "held")}
    for b in it.iter_batches(batch_size=None, batch_format="numpy"):
        for c, parts in cols.items():
            parts.append(b[c])
    if not cols["user_id"]:
        raise ValueError("the encoder's training dataset is empty")
    order = np.argsort(np.concatenate(cols["user_id"]).astype(str), kind="stable")
    return tuple(np.concatenate(cols[c])[order] for c in ("items", "events", "held"))


def _row_hashes(batch: dict) -> dict:
    """Encoded rows -> their hashes summed mod 2**64: the sum does not depend on how rows
    fall into blocks or in which order the blocks come."""
    total = 0
    for user, items, events, held in zip(batch["user_id"], batch["items"], batch["events"],
                                         batch["held"]):
        h = hashlib.blake2b(str(user).encode(), digest_size=8)
        h.update(np.ascontiguousarray(items, np.int64).tobytes())
        h.update(np.ascontiguousarray(events, np.int64).tobytes())
        h.update(b"1" if held else b"0")
        total = (total + int.from_bytes(h.digest(), "little")) % (1 << 64)
    return {"sum": np.array([total], np.uint64), "rows": np.array([len(batch["user_id"])])}


def data_digest(encoded) -> str:
    """A digest of the encoded histories themselves, for the run name: a training
    interrupted and re-run on other data starts over instead of resuming."""
    total, rows = 0, 0
    for b in encoded.map_batches(_row_hashes, batch_format="numpy").iter_batches(
            batch_size=None, batch_format="numpy"):
        total = (total + sum(int(x) for x in b["sum"])) % (1 << 64)
        rows += int(b["rows"].sum())
    return f"{rows}-{total:016x}"


def _train_loop(config: dict) -> None:
    """Runs in each Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from raypipe.vectors import training
    if not logging.getLogger().handlers:     # epoch lines in the job's logs
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                            datefmt="%H:%M:%S")
    if not config.get("verbose"):
        _quiet_train_worker()
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    items, events, held = read_encoded(ray.train.get_dataset_shard("train"))
    width = config["max_length"]        # histories encoded wider than the model reads
    items, events = items[:, -width:], events[:, -width:]
    text = ray.get(config["text"]) if config["text"] is not None else None

    def reduce(a: np.ndarray) -> np.ndarray:
        if world == 1:
            return a
        t = torch.as_tensor(a, dtype=torch.float64)
        dist.all_reduce(t)
        return t.numpy()

    def report(metrics: dict, state: dict) -> None:
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0:       # one copy of the state; every worker must still report
                torch.save(state, os.path.join(d, STATE_FILE))
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=checkpoint)

    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            resume = torch.load(os.path.join(d, STATE_FILE), map_location="cpu")
        log.info("encoder: resuming after epoch %d", resume["epoch"])
    hooks = training.Hooks(rank=rank, world=world, device=str(ray.train.torch.get_device()),
                          reduce=reduce, report=report,
                          log_every_s=0.0 if config.get("verbose") else EPOCH_LINES_EVERY_S,
                          wrap=lambda m: ray.train.torch.prepare_model(m, move_to_device=False)
                          if world > 1 else m)
    cfg = config["cfg"]
    training.fit(training.split(items, events, held), config["n_items"],
                text, cfg, config["max_length"], mask_purchased=config["mask_purchased"],
                hooks=hooks, resume=resume)


def _quiet_train_worker() -> None:
    """Ray Train's per-epoch lines in a worker at WARNING: "Checkpoint successfully created"
    (a ray.train logger) and "Reporting training result" (a logger named by its file), and
    Ray Data's ("Dataset ... execution finished", "Progress bars disabled") as in the
    driver (jobs/runtime.py)."""
    from raypipe.jobs.runtime import quiet_ray_data
    quiet_ray_data(False)
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:              # another Ray version: its lines stay
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


class EpochTracking(ray.train.UserCallback):
    """On the training controller: each epoch's report (rank 0's) into the run's trackers,
    as it arrives. A tracker that fails is logged and left; training goes on."""

    def __init__(self, handle):
        self.handle, self._tracker = handle, None

    def after_report(self, run_context, metrics, checkpoint) -> None:
        from raypipe.run.tracking import Tracker, epoch_metrics
        if not metrics or "epoch" not in metrics[0]:
            return
        try:
            self._tracker = self._tracker or Tracker.attach(self.handle)
            step, values = epoch_metrics(metrics[0])
            self._tracker.log_metrics(values, step)
        except Exception as exc:            # noqa: BLE001 - tracking never stops training
            log.warning("tracking: epoch %s not logged: %s", metrics[0].get("epoch"), exc)


def run_name(cfg: EncoderConfig, n_items: int, max_length: int, mask_purchased: bool,
             data_key: str) -> str:
    blob = json.dumps([repr(cfg), n_items, max_length, mask_purchased, data_key]).encode()
    return "encoder-" + hashlib.sha256(blob).hexdigest()[:16]


def train_encoder(encoded, n_items: int, text_vectors: np.ndarray | None, cfg: EncoderConfig,
                  max_length: int, storage: str, data_key: str, mask_purchased: bool = True,
                  max_failures: int = 2, fresh: bool = False, callbacks: tuple = (),
                  digest: str | None = None) -> tuple[dict, dict]:
    """Encoded histories (a Ray Dataset; wider than `max_length`: cut to the latest events)
    -> (best state dict, training summary), trained by Ray Train; checkpoints under
    `storage`/<run name>, the name a hash of the settings, `data_key` and the histories'
    data_digest (`digest`, where the caller has it). A failed worker group is restarted
    from the latest checkpoint up to `max_failures` times. `callbacks`: Ray Train
    `UserCallback`s, run on the controller after each epoch's report (progress, tracking)."""
    import torch
    from ray.data import ExecutionOptions
    from ray.train import (CheckpointConfig, DataConfig, FailureConfig, LoggingConfig,
                           RunConfig, ScalingConfig)
    from ray.train.torch import TorchTrainer
    cpus, gpus = resources()
    use_gpu = bool(gpus) if cfg.use_gpu is None else cfg.use_gpu
    threads = cfg.cpus_per_worker or max(1, cpus // cfg.num_workers)
    scaling = ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                            resources_per_worker=None if use_gpu else {"CPU": threads})
    encoded = encoded.materialize()
    name = run_name(cfg, n_items, max_length, mask_purchased,
                    f"{data_key}-{digest or data_digest(encoded)}")
    if fresh:
        _delete_run(storage, name)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"cfg": cfg, "n_items": n_items, "max_length": max_length,
                           "mask_purchased": mask_purchased, "threads": 0 if use_gpu else threads,
                           "verbose": verbose(),
                           "text": None if text_vectors is None else ray.put(text_vectors)},
        scaling_config=scaling,
        datasets={"train": encoded},
        # Our own ingest options: Ray Train's default copies the deprecated
        # exclude_resources and warns about it on every run.
        dataset_config=DataConfig(datasets_to_split=[], execution_options=ExecutionOptions(
            preserve_order=True)),
        run_config=RunConfig(name=name, storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=1),
                             failure_config=FailureConfig(max_failures=max_failures),
                             callbacks=list(callbacks),
                             # the controller's worker-group lines: the log files keep them
                             logging_config=LoggingConfig(
                                 log_level="INFO" if verbose() else "WARNING")))
    log.info("encoder: training %s with %d worker(s), %s, storage %s", name, cfg.num_workers,
             "GPU" if use_gpu else f"{threads} CPU threads each", storage)
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu")
    from raypipe.vectors.training import stop_reason
    summary = {"run": name, "epochs": state["epoch"], "best_epoch": state["best_epoch"],
               "stopped": stop_reason({"seconds": 0.0, **state}, cfg),
               "train_seconds": round(state.get("seconds", 0.0), 2),
               "resumed_from_epoch": state.get("resumed_from", 0),
               "valid_ndcg@10": state["best"], "history": state["history"],
               "workers": cfg.num_workers, "device": "cuda" if use_gpu else "cpu",
               "dim": cfg.dim}
    return state["best_state"], summary


def _delete_run(storage: str, name: str) -> None:
    """A fresh run: the checkpoints of an earlier one of the same name go first."""
    fs, path = rio.resolve(f"{storage.rstrip('/')}/{name}")
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        log.info("encoder: deleting the checkpoints of %s (a fresh run)", name)
        fs.delete_dir(path)


def fit_encoder(users, catalogue, catalogue_ref, cfg: EncoderConfig, width: int,
                mask_purchased: bool, storage: str, data_key: str, fresh: bool = False,
                tracking=None):
    """Users stage: user sequences -> a TrainedEncoder over histories of `width` events and
    its training summary. `fresh` deletes the run's checkpoints first, so training starts
    over; `tracking` (a run/tracking.py Handle) logs each epoch as it ends."""
    from raypipe.vectors.encoder import TrainedEncoder, without_unseen_ids
    encoded = encode_users(users, catalogue_ref, width, cfg).materialize()
    text = catalogue.vectors if cfg.text else None
    start = time.perf_counter()
    state, summary = train_encoder(encoded, len(catalogue.item_ids), text, cfg, width,
                                   storage, data_key, mask_purchased, fresh=fresh,
                                   callbacks=(EpochTracking(tracking),) if tracking else ())
    trained = summary["epochs"] - summary["resumed_from_epoch"]
    summary["seconds"] = round(time.perf_counter() - start, 2)
    summary["seconds_per_epoch"] = round(summary["seconds"] / max(trained, 1), 2)
    # catalogue items no history holds (new, or cold in evaluation): the text adaptor alone
    state, summary["items_without_events"] = without_unseen_ids(
        state, item_counts(encoded, len(catalogue.item_ids)) > 0, cfg)
    return TrainedEncoder(state, cfg, len(catalogue.item_ids), width, text), summary


def item_counts(encoded, n_items: int) -> np.ndarray:
    """Encoded histories -> (n_items,) how many times each catalogue item occurs in them."""
    total = np.zeros(n_items + 1, np.int64)
    for b in encoded.select_columns(["items"]).iter_batches(batch_size=None,
                                                            batch_format="numpy"):
        total += np.bincount(np.asarray(b["items"]).ravel(), minlength=n_items + 1)
    return total[1:]
