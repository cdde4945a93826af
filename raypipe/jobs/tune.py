"""`raypipe tune`: a search over the encoder's settings on Ray Tune.

The run's input stages (catalogue, events and sequences, item text vectors; pipeline.py)
are made once, into the same stage store `raypipe run` uses. Each trial is then one Ray
Train run of the encoder (jobs/training.py) with settings drawn from the search space
(config/space.py), scored after every epoch on the encoder's validation users only (the
test items are not in the sequences). ASHA stops the trials that trail at its rungs; the
first trial is the starting config's own settings, so the best is never worse than those
on validation. Trials run side by side, as many as the cluster's CPUs (or GPUs) hold.

Written to the tune folder (default `<output>.tune`): `best.yaml`, a config file
`raypipe run --config` takes (the starting config with the best trial's settings),
`trials.csv` and `trials.parquet` (one row per trial), and the Tune experiment itself,
named after a hash of everything that shapes the search: the same command after a driver
restart resumes it (finished trials are kept, unfinished ones resume from their last
epoch's checkpoint); a changed command starts a new one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import pyarrow as pa
import ray
import yaml

from raypipe.config import PipelineConfig, non_defaults
from raypipe.config import space as spaces
from raypipe.jobs import runtime
from raypipe.run import paths as rio

log = logging.getLogger("raypipe")
METRIC = "best_valid_ndcg@10"
TRIAL_MEMORY = 1 << 20


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    trials: int = 16
    space: dict | None = None     # None: config/space.py's DEFAULT_SPACE
    grace_epochs: int = 2         # ASHA: no trial is stopped before this many epochs
    reduction: int = 3            # ASHA: about 1 in this many trials goes on at each rung
    cpus_per_trial: int = 1       # torch threads of a CPU trial (encoder.cpus_per_worker wins)
    seed: int = 0                 # of the search itself
    folder: str | None = None     # None: <output>.tune

    def __post_init__(self):
        if self.trials < 1 or self.grace_epochs < 1 or self.reduction < 2 or \
                self.cpus_per_trial < 1:
            raise ValueError(f"tune: trials={self.trials} >= 1, grace_epochs="
                             f"{self.grace_epochs} >= 1, reduction={self.reduction} >= 2, "
                             f"cpus_per_trial={self.cpus_per_trial} >= 1")


def tune(cfg: PipelineConfig, settings: TuneSettings) -> dict:
    """Prepare the inputs, run the search, write its results -> a summary (best trial,
    where everything went)."""
    from raypipe.run.lock import OutputLock
    with OutputLock(cfg.output, "tune"):
        return _tune(cfg, settings)


def _tune(cfg: PipelineConfig, settings: TuneSettings) -> dict:
    from raypipe.jobs.training import encode_users
    from raypipe.jobs.users import catalogue_of, profiled
    from raypipe.pipeline import input_stages, prepare_source
    from raypipe.run.stages import Runtime, StageStore
    if cfg.user_repr != "encoder":
        raise ValueError(f"raypipe tune searches the encoder's settings; user_repr="
                         f"{cfg.user_repr!r} trains nothing")
    space = spaces.bounded(settings.space or spaces.check(spaces.DEFAULT_SPACE), cfg)
    runtime.start(cfg.address, cfg.num_cpus)
    requested, (cfg, _) = cfg, prepare_source(cfg)
    rt = Runtime(requested.output, {})
    store = StageStore(cfg.output, rt.timings)
    items, events, embeddings = input_stages(cfg, store, rt)
    folder = settings.folder or f"{requested.output.rstrip('/')}.tune"
    folder = folder if "://" in folder else os.path.abspath(folder)
    with rt.timed("encoded histories"):
        catalogue = catalogue_of(items, embeddings)
        seqs = profiled(runtime.read_dataset(events.folder, "sequences"))
        encoded = encode_users(seqs, [ray.put(catalogue)], cfg.sequences.max_length,
                               cfg.encoder).materialize()
    name = experiment_name(cfg, space, settings, f"{events.key}-{embeddings.key}")
    start = time.perf_counter()
    grid = _search(cfg, space, settings, encoded, catalogue, folder, name,
                   f"{events.key}-{embeddings.key}")
    rows = trial_rows(grid, space)
    finished = [r for r in rows if r["status"] == "TERMINATED" and r[METRIC] is not None]
    if not finished:
        errors = "; ".join(f"{r['trial']}: {r['error']}" for r in rows if r["error"])
        raise RuntimeError(f"raypipe tune: no trial finished ({errors or 'no trials'})")
    best = max(finished, key=lambda r: r[METRIC])      # the first of equals
    best_cfg = located(spaces.apply(requested, best["params"]))
    summary = {"experiment": f"{folder}/{name}", "trials": len(rows),
               "seconds": round(time.perf_counter() - start, 1), "best": best,
               "start_point": rows[0] if rows else None}
    _write(folder, rows, best_cfg, summary)
    return {**summary, "folder": folder, "config": f"{folder}/best.yaml",
            "rows": rows, "timings": rt.timings}


def located(cfg: PipelineConfig) -> PipelineConfig:
    """The config with its local paths made absolute, so that the file it is written to
    works from any folder (URIs stay as they are)."""
    def where(path):
        return path if not path or "://" in path else os.path.abspath(path)
    source = dataclasses.replace(cfg.source, input=where(cfg.source.input),
                                 items=where(cfg.source.items))
    synthetic = where(cfg.synthetic_dir) if cfg.source.kind == "synthetic" else \
        cfg.synthetic_dir
    return dataclasses.replace(cfg, source=source, output=where(cfg.output),
                               synthetic_dir=synthetic)


def to_tune(space: dict) -> dict:
    """-> Ray Tune's param_space ({dotted key: sampler})."""
    from ray import tune
    out = {}
    for key, spec in space.items():
        kind, args = next(iter(spec.items()))
        if kind == "choice":
            out[key] = tune.choice(list(args))
        elif kind == "uniform":
            out[key] = tune.uniform(float(args[0]), float(args[1]))
        elif kind == "loguniform":
            out[key] = tune.loguniform(float(args[0]), float(args[1]))
        else:                                 # randint: Tune's upper end is exclusive
            out[key] = tune.randint(int(args[0]), int(args[1]) + 1)
    return out


def experiment_name(cfg: PipelineConfig, space: dict, settings: TuneSettings,
                    data_key: str) -> str:
    """The Tune experiment's name: a hash of the config (its training-relevant fields and
    the data's stage keys), the space and the search settings."""
    blob = json.dumps([cfg.hash(), space, settings.trials, settings.grace_epochs,
                       settings.reduction, settings.seed, data_key], sort_keys=True,
                      default=str).encode()
    return "tune-" + hashlib.sha256(blob).hexdigest()[:12]


def concurrency(cfg: PipelineConfig, settings: TuneSettings) -> tuple[int, int, bool]:
    """-> (trials at once, torch threads per CPU trial, on GPUs): as many trials as the
    cluster's GPUs or CPUs hold, never more than there are trials."""
    cpus, gpus = runtime.resources()
    enc = cfg.encoder
    use_gpu = bool(gpus) if enc.use_gpu is None else enc.use_gpu
    if use_gpu:
        return max(1, min(settings.trials, gpus // enc.num_workers)), 0, True
    threads = enc.cpus_per_worker or settings.cpus_per_trial
    return max(1, min(settings.trials, cpus // (threads * enc.num_workers))), threads, False


def _search(cfg, space, settings, encoded, catalogue, folder: str, name: str, data_key: str):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from raypipe.jobs.training import data_digest
    at_once, threads, use_gpu = concurrency(cfg, settings)
    trainable = tune.with_resources(
        tune.with_parameters(_trial, encoded=encoded, digest=data_digest(encoded),
                             text=catalogue.vectors if cfg.encoder.text else None,
                             n_items=len(catalogue.item_ids), base=cfg, threads=threads,
                             storage=f"{folder}/train", data_key=data_key),
        # The trial only drives its Train run, whose workers hold the CPUs (or GPUs). Tune
        # takes no all-zero request, so the trial asks for a token amount of memory.
        {"memory": TRIAL_MEMORY})
    path = f"{folder}/{name}"
    if tune.Tuner.can_restore(path):
        log.info("tune: resuming %s", path)
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        log.info("tune: %d trials, %d at once (%s), experiment %s", settings.trials, at_once,
                 "GPU" if use_gpu else f"{threads} CPU thread(s) each", path)
        tuner = tune.Tuner(
            trainable, param_space=to_tune(space),
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="max", num_samples=settings.trials,
                # the generator's own limit: Tune's max_concurrent_trials leaves it alone
                search_alg=BasicVariantGenerator(
                    points_to_evaluate=[spaces.point(cfg, space)],
                    max_concurrent=at_once, random_state=settings.seed),
                scheduler=ASHAScheduler(time_attr="epoch", max_t=cfg.encoder.epochs,
                                        grace_period=settings.grace_epochs,
                                        reduction_factor=settings.reduction)),
            run_config=tune.RunConfig(name=name, storage_path=folder, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=1),
                                      callbacks=[_progress(settings.trials)]))
    return tuner.fit()


def _progress(total: int):
    """A Tune callback: a console line as each trial ends."""
    from ray.tune import Callback

    class Progress(Callback):
        def __init__(self):
            self.ended = 0

        def _line(self, trial, how: str) -> None:
            self.ended += 1
            m = trial.last_result or {}
            score = m.get(METRIC)
            log.info("tune: trial %s %s after %s epoch(s), validation NDCG@10 %s (%d/%d ended)",
                     trial.trial_id, how, m.get("epoch", 0),
                     "-" if score is None else f"{score:.4f}", self.ended, total)

        def on_trial_complete(self, iteration, trials, trial, **info):
            m = trial.last_result or {}
            self._line(trial, f"ended ({m.get('stopped') or 'stopped by ASHA'})")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._line(trial, "failed")
    return Progress()


def _trial(params: dict, *, encoded, digest: str, text, n_items: int, base: PipelineConfig,
           threads: int, storage: str, data_key: str) -> None:
    """One trial (in a Tune trial actor): the encoder trained with `params` by Ray Train,
    each epoch's validation scores reported to Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from raypipe.jobs.training import train_encoder
    from raypipe.vectors.users import encoder_width
    cfg = spaces.apply(base, params)
    enc = dataclasses.replace(cfg.encoder, cpus_per_worker=threads) if threads else cfg.encoder
    width = encoder_width(cfg)
    # The trial's id in the Train run's name: two trials that drew the same settings never
    # share checkpoints. The workers cut the histories to `width`; no Ray Data work runs
    # here, where other trials' workers may hold every CPU.
    train_encoder(encoded, n_items, text, enc, width, storage,
                  f"{data_key}-{tune.get_context().get_trial_id()}",
                  base.recommend.exclude_purchased, callbacks=(TuneReportCallback(),),
                  digest=digest)


def trial_rows(grid, space: dict) -> list[dict]:
    """Tune's results -> one row per trial, in the order they were drawn."""
    rows = []
    for result in grid:
        m = result.metrics or {}
        params = {k: spaces.plain(result.config.get(k)) for k in space}
        epochs = m.get("epoch")
        stopped = m.get("stopped") or ("scheduler" if epochs else None)
        rows.append({
            "trial": m.get("trial_id") or os.path.basename(result.path or ""),
            "status": "ERROR" if result.error else "TERMINATED",
            "params": params, METRIC: m.get(METRIC), "best_epoch": m.get("best_epoch"),
            "epochs": epochs, "resumed_from_epoch": m.get("resumed_from_epoch"),
            "stopped": stopped if not result.error else "error",
            "seconds": round(float(m.get("time_total_s", 0.0)), 1),
            "error": str(result.error).splitlines()[0][:300] if result.error else ""})
    return sorted(rows, key=lambda r: r["trial"])


def _write(folder: str, rows: list[dict], best_cfg: PipelineConfig, summary: dict) -> None:
    fs, path = rio.resolve(folder)
    fs.create_dir(path, recursive=True)
    flat = [{**{k: v for k, v in r.items() if k != "params"}, **r["params"]} for r in rows]
    table = pa.Table.from_pylist(flat)
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    with fs.open_output_stream(f"{path}/trials.csv") as f:
        pacsv.write_csv(table, f)
    pq.write_table(table, f"{path}/trials.parquet", filesystem=fs)
    text = yaml.safe_dump(non_defaults(best_cfg), sort_keys=True)
    note = (f"# raypipe tune: the best of {summary['trials']} trials ({summary['best']['trial']}"
            f", validation NDCG@10 {summary['best'][METRIC]:.4f}); "
            f"raypipe run --config this-file\n")
    with fs.open_output_stream(f"{path}/best.yaml") as f:
        f.write((note + text).encode())
