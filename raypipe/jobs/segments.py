"""The segments stage: K-means on Ray tasks over the user vectors (segments/kmeans.py knows
nothing about Ray; jobs/kmeans_tasks.py holds the shards), ids kept from the previous run."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pyarrow as pa

from raypipe.config import KMeansConfig
from raypipe.jobs.kmeans_tasks import RayShards
from raypipe.jobs.runtime import read_dataset
from raypipe.jobs.sweep import sweep_on_ray
from raypipe.run.artifacts import MANIFEST, Folder
from raypipe.run.stages import Runtime, Stage
from raypipe.run.versions import current_run
from raypipe.segments import ids, tree
from raypipe.segments.kmeans import KMeans
from raypipe.segments.seeding import canonical
from raypipe.segments.segmentation import Segmentation
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


def previous_segmentation(ref: str, enabled: bool) -> Segmentation | dict:
    """The segmentation of the run at `ref` whose segment ids this one keeps, or, when there
    is none to match, {reference: None, note: why}."""
    if not enabled:
        return {"reference": None, "note": "kmeans.stable_ids is off"}
    prev = Folder(current_run(ref))
    if not (prev.exists(MANIFEST) and prev.exists("centroids.parquet")):
        return {"reference": None, "note": f"no previous run at {ref}: ids are K-means'"}
    return Segmentation.from_table(prev.read("centroids"))


def previous_centroids(ref: str, old: Segmentation | dict, shape: tuple) -> dict:
    """The nodes at level shape[0] of `old` (previous_segmentation's answer):
    {reference, centroids} or {reference: None, note: why}."""
    if isinstance(old, dict):
        return dict(old)
    if shape[0] not in old.levels or old.leaves.shape[1] != shape[1]:
        return {"reference": None, "note": f"the previous run at {ref} has levels "
                f"{list(old.levels)} of dimension {old.leaves.shape[1]}, this one "
                f"{shape[0]} segments of {shape[1]}: ids are K-means'"}
    return {"reference": ref, "centroids": old.nodes[old.levels.index(shape[0])]}


def build_segmentation(km: KMeans, cfg: KMeansConfig, k: int, previous: str,
                       anchors: np.ndarray | None = None) -> tuple:
    """Fitted K-means (k segments, or the finest level's) -> (Segmentation with stable ids
    at every level, the leaves' sizes, what the manifest says of the ids per level).
    `anchors`: each leaf's flat segment at k, for kmeans.tree=anchored."""
    levels = cfg.levels_with(k) or (k,)
    sizes = np.bincount(km.labels_, minlength=km.n_clusters)
    paths = tree.build(km.cluster_centers_, sizes, levels, cfg.tree, anchors) \
        if len(levels) > 1 else np.arange(k, dtype=np.int32)[:, None]
    nodes, kept, old = [], {}, previous_segmentation(previous, cfg.stable_ids)
    for j, level in enumerate(levels):
        cents = tree.node_centroids(km.cluster_centers_, sizes, paths[:, j], level)[0] \
            if len(levels) > 1 else km.cluster_centers_
        cents, paths[:, j], kept[level] = ids.stable(cents, paths[:, j], previous_centroids(
            previous, old, cents.shape))
        nodes.append(cents)
    order = np.argsort(paths[:, -1])              # leaves in their stable-id order
    return (Segmentation(tuple(nodes), paths[order], levels.index(k)), sizes[order], kept)


def segments_stage(out: Folder, kmeans: KMeansConfig, users: Stage, previous: str,
                   rt: Runtime) -> dict:
    """User vectors (the users stage's segment column) -> `centroids` (segmentation.py),
    numbered as the `previous` run's segments at every level where kmeans.stable_ids is on
    (segments/ids.py). With kmeans.levels, K-means makes the finest level and a tree over
    its segments the rest (segments/tree.py)."""
    with rt.timed("segments"):
        shards = RayShards.from_dataset(read_dataset(users.folder, "_users"),
                                        users.info["segment_column"])
        sweep = sweep_segments(shards, kmeans.sweep()) if kmeans.n_clusters == "auto" else None
        if sweep:
            out.table("segment_sweep", sweep_table(sweep))
        k = sweep["chosen_k"] if sweep else kmeans.n_clusters
        fine = max(kmeans.levels_with(k) or (k,))
        km = fit_segments(shards, kmeans, fine)
        anchors = tree.leaf_anchors(km.labels_, fit_segments(shards, kmeans, k).labels_, fine) \
            if kmeans.tree == "anchored" and fine > k else None
        seg, leaf_sizes, kept = build_segmentation(km, kmeans, k, kmeans.previous or previous,
                                                   anchors)
        main = kept[k]
        if main["reference"]:
            log.info("segment ids matched to %s; centroids moved %s", main["reference"],
                     main["moved"])
        out.table("centroids", seg.to_table())
    sizes = np.bincount(seg.paths[:, seg.main], weights=leaf_sizes, minlength=k)
    hierarchy = _hierarchy_info(seg, km, leaf_sizes, kept, kmeans.tree) \
        if seg.hierarchical else None
    return {"kmeans": _kmeans_info(km, kmeans, k, hierarchy),
            "sizes": sizes.astype(int).tolist(),
            "segment_ids": main,
            **({"hierarchy": hierarchy} if hierarchy else {}),
            **({"sweep": {**{k: v for k, v in sweep.items() if k != "rows"},
                          "table": "segment_sweep.parquet"}} if sweep else {})}


def _kmeans_info(km: KMeans, cfg: KMeansConfig, k: int, hierarchy: dict | None) -> dict:
    """n_clusters and inertia are the main level's; n_iter and the restarts are K-means'
    (at the finest level with a hierarchy)."""
    inertias = [r["inertia"] for r in km.restarts_]
    inertia = hierarchy["per_level"][str(k)]["inertia"] if hierarchy else km.inertia_
    return {"n_clusters": int(k), "inertia": float(inertia),
            "n_iter": int(km.n_iter_), "restarts": {
                "n_init": cfg.n_init, "inertia": [float(i) for i in inertias],
                "inertia_spread": float((max(inertias) - min(inertias)) /
                                        max(min(inertias), 1e-30)),
                "mean_ari": km.restart_ari_}}


def _hierarchy_info(seg: Segmentation, km: KMeans, leaf_sizes: np.ndarray, kept: dict,
                    method: str) -> dict:
    """The levels, each with its node sizes, the users' inertia at that cut and its ids."""
    out = {"tree": method, "levels": list(seg.levels), "main_level": seg.n_segments,
           "per_level": {}}
    for j, level in enumerate(seg.levels):
        col = seg.paths[:, j]
        out["per_level"][str(level)] = {
            "sizes": np.bincount(col, weights=leaf_sizes, minlength=level).astype(int).tolist(),
            "inertia": float(km.inertia_) + tree.cut_inertia(seg.leaves, leaf_sizes, col),
            "segment_ids": kept[level]}
    return out
