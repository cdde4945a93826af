"""The catalogue's stages: items (read and cleaned), item_embeddings (the text model's actor
pool) and item_groups (K-means over the item vectors on Ray tasks, named by c-TF-IDF)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from raypipe.arrays import to_arrow, to_numpy
from raypipe.config import CleanConfig, EmbedConfig, ItemGroupConfig, SourceConfig
from raypipe.jobs import ingest, runtime
from raypipe.jobs.embedding import blocks_by_length, embed_texts
from raypipe.jobs.kmeans_tasks import RayShards
from raypipe.run.artifacts import Folder
from raypipe.run.stages import InputFiles, Runtime, Stage
from raypipe.schema import QUARANTINE
from raypipe.segments.item_groups import group_names
from raypipe.segments.kmeans import KMeans


def catalogue_table(items: Stage) -> pa.Table:
    """The items stage's catalogue: (item_id, text, ...) sorted by item_id."""
    return items.folder.read("_catalogue")


def text_vectors(embeddings: Stage) -> np.ndarray:
    """(n_items, d) the text model's item vectors, in catalogue order."""
    return to_numpy(embeddings.folder.read("item_embeddings")["vector"])


def items_stage(out: Folder, source: SourceConfig, clean: CleanConfig, files: InputFiles,
                rt: Runtime) -> dict:
    """Catalogue files -> `_catalogue` (items with an id and a text) and `quarantine`."""
    with rt.timed("items"):
        items, bad, rows = ingest.read_items(source, clean.strict, files, files.not_read)
        if items.num_rows == 0:
            raise ValueError(f"no catalogue item has an id and a text: {rows}")
        out.table("_catalogue", items)
        out.table("quarantine", bad.cast(QUARANTINE))
    return {"rows": rows}


def embed_items(items: pa.Table, cfg: EmbedConfig) -> tuple[np.ndarray, dict]:
    """Catalogue (sorted by item_id) -> ((n_items, d) vectors in the same order, how they
    were embedded: precision and calibration)."""
    blocks = blocks_by_length(items.select(["item_id", "text"]), "text", cfg.batch_size * 4)
    out, info = embed_texts(ray.data.from_arrow(blocks), "text", cfg)
    table = runtime.collect(out, items.num_rows, "item embeddings").sort_by("item_id")
    assert table["item_id"].equals(items["item_id"]), "embedding lost or duplicated items"
    return to_numpy(table["vector"]), info


def embeddings_stage(out: Folder, embed: EmbedConfig, items: Stage, rt: Runtime) -> dict:
    """Catalogue -> `item_embeddings` (item_id, vector)."""
    with rt.timed("item_embeddings"):
        table = catalogue_table(items)
        vectors, info = embed_items(table, embed)
        out.table("item_embeddings", pa.table({"item_id": table["item_id"],
                                               "vector": to_arrow(vectors)}))
    return {"embedding": info}


def groups_stage(out: Folder, item_groups: ItemGroupConfig, items: Stage, embeddings: Stage,
                 rt: Runtime) -> dict:
    """Product groups: K-means over the items' text vectors, named by c-TF-IDF -> `_groups`
    (item_id, group, group_name)."""
    g = item_groups
    if g.n_groups == 0:
        return {"n_groups": 0}
    with rt.timed("item_groups"):
        table, vectors = catalogue_table(items), text_vectors(embeddings)
        n = min(g.n_groups, len(vectors))
        shards = RayShards.from_arrays(np.array_split(vectors, max(1, min(
            runtime.resources()[0], len(vectors) // max(n, 1)))))
        labels = np.asarray(KMeans(n, random_state=g.seed).fit(shards).labels_)
        names = group_names(labels, n, table["text"].to_pylist(), g.top_terms)
        out.table("_groups", pa.table({
            "item_id": table["item_id"], "group": pa.array(labels, pa.int32()),
            "group_name": pa.array([names[c] for c in labels], pa.string())}))
    return {"n_groups": n, "sizes": np.bincount(labels, minlength=n).tolist(), "names": names}


def groups_table(groups: Stage) -> pa.Table | None:
    return groups.folder.read("_groups") if groups.info.get("n_groups") else None
