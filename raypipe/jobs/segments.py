"""The segments stage: K-means on Ray tasks over the user vectors (segments/kmeans.py knows
nothing about Ray; jobs/kmeans_tasks.py holds the shards), ids kept from the previous run."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pyarrow as pa

from raypipe.arrays import to_arrow, to_numpy
from raypipe.config import KMeansConfig
from raypipe.jobs.kmeans_tasks import RayShards
from raypipe.jobs.runtime import read_dataset
from raypipe.jobs.sweep import sweep_on_ray
from raypipe.run.artifacts import MANIFEST, Folder
from raypipe.run.stages import Runtime, Stage
from raypipe.run.versions import current_run
from raypipe.segments import ids
from raypipe.segments.kmeans import KMeans
from raypipe.segments.seeding import canonical
from raypipe.segments.sweep import CRITERIA, SweepConfig

log = logging.getLogger("raypipe")


def fit_segments(shards: RayShards, cfg: KMeansConfig, k: int) -> KMeans:
    """User vectors in the object store -> fitted K-means (labels in block order); its
    restarts run concurrently."""
    km = KMeans(k, init=cfg.init, n_init=cfg.n_init, max_iter=cfg.max_iter, tol=cfg.tol,
                random_state=cfg.seed)
    return km.fit(shards)


def sweep_segments(shards: RayShards, sweep: SweepConfig) -> dict:
    """kmeans.n_clusters=auto: the sweep (segments/sweep.py) on a content-hash sample of the
    user vectors, its trials as Ray tasks."""
    n = sum(shards.sizes)
    rows = canonical(np.concatenate(shards.sample(min(1.0, sweep.sample_rows / n),
                                                  sweep.seed)), sweep.seed)[: sweep.sample_rows]
    if len(rows) < 4 * sweep.k_max:           # a half-sample fit needs rows to spare
        k_max = len(rows) // 4
        if k_max < sweep.k_min:
            raise ValueError(f"kmeans.n_clusters=auto: {len(rows)} users are too few to "
                             f"choose among K >= {sweep.k_min}; set kmeans.n_clusters")
        log.warning("segments: %d users: the sweep tries K up to %d, not %d", len(rows),
                    k_max, sweep.k_max)
        sweep = dataclasses.replace(sweep, k_max=k_max)
    result = sweep_on_ray(rows, sweep)
    log.info("segments: sweep of K=%d..%d on %d users in %.1f s chose K=%d", sweep.k_min,
             sweep.k_max, len(rows), result["seconds"], result["chosen_k"])
    return result


def sweep_users(artifacts: str, sweep: SweepConfig) -> dict:
    """`raypipe segments sweep`: the sweep over a finished run's user vectors (the column
    its segments were made of)."""
    folder = Folder(current_run(artifacts))
    users = read_dataset(folder, "user_embeddings")
    column = "segment_vector" if "segment_vector" in users.schema().names else "vector"
    return sweep_segments(RayShards.from_dataset(users, column), sweep)


def sweep_table(result: dict) -> pa.Table:
    rows = result["rows"]
    return pa.table({
        "k": pa.array([r["k"] for r in rows], pa.int32()),
        **{c: pa.array([float(r[c]) for r in rows]) for c in ("inertia", *CRITERIA)},
        "seconds": pa.array([float(r["seconds"]) for r in rows]),
        "chosen": pa.array([r["k"] == result["chosen_k"] for r in rows])})


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
        shards = RayShards.from_dataset(read_dataset(users.folder, "_users"),
                                        users.info["segment_column"])
        sweep = sweep_segments(shards, kmeans.sweep()) if kmeans.n_clusters == "auto" else None
        if sweep:
            out.table("segment_sweep", sweep_table(sweep))
        km = fit_segments(shards, kmeans, sweep["chosen_k"] if sweep else kmeans.n_clusters)
        centroids, labels, kept = ids.stable(km.cluster_centers_, km.labels_, previous_centroids(
            kmeans.previous or previous, kmeans.stable_ids, km.cluster_centers_.shape))
        if kept["reference"]:
            log.info("segment ids matched to %s; centroids moved %s", kept["reference"],
                     kept["moved"])
        out.table("centroids", pa.table({
            "segment": pa.array(range(len(centroids)), pa.int32()),
            "vector": to_arrow(centroids)}))
    inertias = [r["inertia"] for r in km.restarts_]
    return {"kmeans": {"n_clusters": int(km.n_clusters), "inertia": float(km.inertia_),
                       "n_iter": int(km.n_iter_), "restarts": {
                           "n_init": kmeans.n_init, "inertia": [float(i) for i in inertias],
                           "inertia_spread": float((max(inertias) - min(inertias)) /
                                                   max(min(inertias), 1e-30)),
                           "mean_ari": km.restart_ari_}},
            "sizes": np.bincount(labels, minlength=km.n_clusters).tolist(),
            "segment_ids": kept,
            **({"sweep": {**{k: v for k, v in sweep.items() if k != "rows"},
                          "table": "segment_sweep.parquet"}} if sweep else {})}
