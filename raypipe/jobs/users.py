"""Ray Data stages: sequences -> user vectors (`pooled` or `text`)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import ray
from ray.data.expressions import col

from raypipe.config import PipelineConfig, UserConfig
from raypipe.jobs.embedding import embed_texts
from raypipe.jobs.runtime import USER_BATCH, cached, fetch
from raypipe.events.sequences import sequence_text
from raypipe.vectors.pooling import history_rows, history_weights, pool
from raypipe.arrays import to_arrow


class Catalogue:
    """What every user-level stage needs of the items, shipped once through the object store."""

    def __init__(self, item_ids: list[str], texts: list[str], vectors: np.ndarray):
        self.item_ids, self.texts, self.vectors = item_ids, texts, vectors

    def index(self) -> pd.Index:
        return cached(f"index-{id(self)}", lambda: pd.Index(self.item_ids))


def _pooled(batch: pa.Table, catalogue, cfg: UserConfig) -> pa.Table:
    cat = fetch(catalogue[0])
    idx = history_rows(batch["item_ids"], cat.index())
    vectors = pool(idx, history_weights(batch["event_types"], cfg), cat.vectors)
    return batch.append_column("vector", to_arrow(vectors))


def _render(batch: pa.Table, catalogue) -> pa.Table:
    cat = fetch(catalogue[0])
    idx = history_rows(batch["item_ids"], cat.index())
    texts = [sequence_text([cat.texts[i] for i in rows], types)
             for rows, types in zip(idx, batch["event_types"].to_pylist())]
    return batch.append_column("sequence_text", pa.array(texts, pa.string()))


def profiled(seqs):
    """The users that get vectors and profiles: all but the too-short ones."""
    return seqs.filter(expr=col("too_short") == False)  # noqa: E712 (an expression)


def user_vectors(seqs, catalogue: Catalogue, cfg: PipelineConfig):
    """Sequences (too-short users left out) -> the same rows plus `vector` (lazy: write it
    once, it is not materialized)."""
    ref = [ray.put(catalogue)]
    users = profiled(seqs)
    if cfg.user_repr == "pooled":
        return users.map_batches(_pooled, batch_size=USER_BATCH, batch_format="pyarrow",
                                 fn_kwargs={"catalogue": ref, "cfg": cfg.user})
    rendered = users.map_batches(_render, batch_size=USER_BATCH, batch_format="pyarrow",
                                 fn_kwargs={"catalogue": ref})
    return embed_texts(rendered, "sequence_text", cfg.embed, cfg.embed.sequence_max_length)
