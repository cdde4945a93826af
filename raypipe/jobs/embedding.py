"""Ray Data actor pool around the plain `Embedder`: one GPU per actor when the cluster has
GPUs, CPU actors with `cpus_per_actor` torch threads otherwise."""
from __future__ import annotations

import pyarrow as pa
import ray

from raypipe.config import EmbedConfig
from raypipe.jobs.runtime import resources
from raypipe.arrays import to_arrow


class EmbedActor:
    def __init__(self, cfg: EmbedConfig, text_column: str, max_length: int, threads: int):
        import torch

        from raypipe.vectors.embed import Embedder
        if threads:
            torch.set_num_threads(threads)
        self.embedder = Embedder(cfg.model, device=cfg.device, precision=cfg.precision,
                                 max_length=max_length, batch_size=cfg.batch_size)
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
    """Dataset with `text_column` -> same rows (order not kept) with `vector` instead."""
    args = pool_args(cfg)
    threads = args.pop("threads")
    # The actors may hold every CPU of a small cluster; upstream tasks still waiting for a
    # CPU would then never run. Materializing the texts first removes that deadlock.
    ds = ds.materialize()
    # A lost actor (a dead process, a preempted node) is restarted and its unfinished
    # batches run again: Ray Data's defaults for actor pools (max_restarts=-1,
    # max_task_retries=-1; passing them explicitly is deprecated), which
    # tests/test_faults.py holds to.
    return ds.map_batches(
        EmbedActor, batch_size=cfg.batch_size * 4, batch_format="pyarrow",
        fn_constructor_kwargs={"cfg": cfg, "text_column": text_column,
                               "max_length": max_length or cfg.max_length, "threads": threads},
        **args)
