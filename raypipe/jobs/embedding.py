"""Ray Data actor pool around the plain `Embedder`: one GPU per actor when the cluster has
GPUs, CPU actors with `cpus_per_actor` torch threads otherwise."""
from __future__ import annotations

import logging

import pyarrow as pa
import ray

from raypipe.config import EmbedConfig
from raypipe.jobs.runtime import resources
from raypipe.arrays import to_arrow

log = logging.getLogger("raypipe")


class EmbedActor:
    def __init__(self, cfg: EmbedConfig, text_column: str, max_length: int, threads: int,
                 precision: str, calibration=None):
        import torch

        from raypipe.vectors.embed import Embedder
        if threads:
            torch.set_num_threads(threads)
        self.embedder = Embedder(cfg.model, device=cfg.device, precision=precision,
                                 max_length=max_length, batch_size=cfg.batch_size,
                                 calibration=calibration)
        self.text_column = text_column

    def __call__(self, batch: pa.Table) -> pa.Table:
        vectors = self.embedder.encode(batch[self.text_column].to_pylist())
        return batch.drop_columns([self.text_column]).append_column("vector", to_arrow(vectors))


def blocks_by_length(table: pa.Table, column: str, rows: int) -> list[pa.Table]:
    """A table of texts -> blocks of `rows` texts sorted by length: each actor batch then
    holds texts of similar length (little padding), and the pool streams many blocks
    instead of one actor taking the whole table as a single block."""
    import pyarrow.compute as pc
    lengths = pc.fill_null(pc.utf8_length(table[column]), 0)
    table = table.take(pc.sort_indices(lengths))
    return [table.slice(i, rows) for i in range(0, max(table.num_rows, 1), rows)]


def pool_args(cfg: EmbedConfig) -> dict:
    """Actor count and per-actor resources from what the cluster has."""
    cpus, gpus = resources()
    if gpus and cfg.device != "cpu":
        n = gpus if not cfg.max_actors else min(gpus, cfg.max_actors)
        return {"compute": ray.data.ActorPoolStrategy(size=n), "num_gpus": 1, "threads": 0}
    per = max(1, min(cfg.cpus_per_actor, cpus))
    n = max(1, cpus // per)
    n = min(n, cfg.max_actors) if cfg.max_actors else n
    return {"compute": ray.data.ActorPoolStrategy(size=n), "num_cpus": per, "threads": per}


def embed_texts(ds, text_column: str, cfg: EmbedConfig, max_length: int | None = None):
    """Dataset with `text_column` -> (same rows (order not kept) with `vector` instead of
    the text, {precision, calibration}: what the actors embed with, chosen on the driver
    from a sample of these texts, see `vectors.embed.choose_precision`)."""
    from raypipe.vectors.embed import choose_precision
    args = pool_args(cfg)
    threads = args.pop("threads")
    # The actors may hold every CPU of a small cluster; upstream tasks still waiting for a
    # CPU would then never run. Materializing the texts first removes that deadlock.
    ds = ds.materialize()
    max_length = max_length or cfg.max_length
    size, texts = calibration_size(cfg, max_length), ds.count()
    precision, calibration = choose_precision(
        cfg.precision, "cuda" if args.get("num_gpus") else "cpu",
        lambda: sample_texts(ds, text_column, size), pays_off=texts >= INT8_PAYOFF * size,
        model_name_or_path=cfg.model, max_length=max_length, batch_size=cfg.batch_size)
    info = {"precision": precision, "texts": texts,
            "calibration": calibration.summary() if calibration else None}
    if cfg.precision == "auto" and precision == "fp32" and not calibration:
        info["note"] = (f"int8 not tried: {texts} texts, fewer than {INT8_PAYOFF}x the "
                        f"{size} it calibrates on")
    if calibration:
        log.info("embedding %s: int8 on %d sample texts has mean cosine %.4f to fp32 (min "
                 "%.4f): %s", text_column, calibration.texts, calibration.cosine_mean,
                 calibration.cosine_min, precision)
    # A lost actor (a dead process, a preempted node) is restarted and its unfinished
    # batches run again: Ray Data's defaults for actor pools (max_restarts=-1,
    # max_task_retries=-1; passing them explicitly is deprecated), which
    # tests/test_faults.py holds to.
    return ds.map_batches(
        EmbedActor, batch_size=cfg.batch_size * 4, batch_format="pyarrow",
        fn_constructor_kwargs={"cfg": cfg, "text_column": text_column, "max_length": max_length,
                               "threads": threads, "precision": precision,
                               "calibration": calibration if precision == "int8" else None},
        **args), info


# Calibrating on 768 titles of up to 64 tokens measured well (docs/benchmarks.md); longer
# texts (rendered sequences, 256 tokens) get as many tokens in fewer texts.
CALIBRATION_TOKENS = 768 * 64


# Calibrating costs about as much as embedding 1,500-2,000 texts in fp32 (two passes over
# the sample and a model copy), and int8 embeds 1.4-1.5x faster here (docs/benchmarks.md):
# it repays that from about 6x the sample's size (4,600 texts for 768).
INT8_PAYOFF = 6


def calibration_size(cfg: EmbedConfig, max_length: int) -> int:
    return max(48, min(cfg.calibration_texts, CALIBRATION_TOKENS // max_length))


def sample_texts(ds, column: str, n: int, seed: int = 0) -> list[str]:
    """About `n` texts drawn at random from a (materialized) dataset's `column`."""
    total = ds.count()
    if total > n:
        ds = ds.random_sample(min(1.0, 1.5 * n / total), seed=seed)
    return [r[column] for r in ds.select_columns([column]).take(n)]
