"""The segments stage: K-means on Ray tasks over the user vectors (segments/kmeans.py knows
nothing about Ray; jobs/kmeans_tasks.py holds the shards), ids kept from the previous run."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from raypipe.arrays import to_arrow, to_numpy
from raypipe.config import KMeansConfig
from raypipe.jobs.kmeans_tasks import RayShards
from raypipe.jobs.runtime import read_dataset
from raypipe.run.artifacts import MANIFEST, Folder
from raypipe.run.stages import Runtime, Stage
from raypipe.run.versions import current_run
from raypipe.segments import ids
from raypipe.segments.kmeans import KMeans

log = logging.getLogger("raypipe")


def fit_segments(users, cfg: KMeansConfig, column: str) -> KMeans:
    """User vectors (`column`) in the object store -> fitted K-means (labels in block
    order)."""
    km = KMeans(cfg.n_clusters, init=cfg.init, n_init=cfg.n_init, max_iter=cfg.max_iter,
                tol=cfg.tol, random_state=cfg.seed)
    return km.fit(RayShards.from_dataset(users, column))


def previous_centroids(ref: str, enabled: bool, shape: tuple) -> dict:
    """The run at `ref` whose segment ids this one keeps: {reference, centroids} or, when
    there is none to match, {reference: None, note: why}."""
    if not enabled:
        return {"reference": None, "note": "kmeans.stable_ids is off"}
    prev = Folder(current_run(ref))
    if not (prev.exists(MANIFEST) and prev.exists("centroids.parquet")):
        return {"reference": None, "note": f"no previous run at {ref}: ids are K-means'"}
    old = to_numpy(prev.read("centroids").sort_by("segment")["vector"])
    if old.shape != shape:
        return {"reference": None, "note": f"the previous run at {ref} has {old.shape[0]} "
                f"segments of dimension {old.shape[1]}, this one {shape[0]} of "
                f"{shape[1]}: ids are K-means'"}
    return {"reference": ref, "centroids": old}


def segments_stage(out: Folder, kmeans: KMeansConfig, users: Stage, previous: str,
                   rt: Runtime) -> dict:
    """User vectors (the users stage's segment column) -> `centroids` (segment, vector),
    numbered as the `previous` run's segments where kmeans.stable_ids is on
    (segments/ids.py)."""
    with rt.timed("segments"):
        km = fit_segments(read_dataset(users.folder, "_users"), kmeans,
                          users.info["segment_column"])
        centroids, labels, kept = ids.stable(km.cluster_centers_, km.labels_, previous_centroids(
            kmeans.previous or previous, kmeans.stable_ids, km.cluster_centers_.shape))
        if kept["reference"]:
            log.info("segment ids matched to %s; centroids moved %s", kept["reference"],
                     kept["moved"])
        out.table("centroids", pa.table({
            "segment": pa.array(range(len(centroids)), pa.int32()),
            "vector": to_arrow(centroids)}))
    return {"kmeans": {"n_clusters": int(km.n_clusters), "inertia": float(km.inertia_),
                       "n_iter": int(km.n_iter_)},
            "sizes": np.bincount(labels, minlength=kmeans.n_clusters).tolist(),
            "segment_ids": kept}
