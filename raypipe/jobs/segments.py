"""Ray stages after the user vectors: K-means on Ray tasks, profiles, segment item mass and
recommendations, each a map over the user dataset around a plain function or class."""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import ray

from raypipe.config import KMeansConfig, PipelineConfig
from raypipe.jobs.kmeans_tasks import RayShards
from raypipe.jobs.runtime import cached, fetch, to_table
from raypipe.kmeans import KMeans
from raypipe.profiles import interests, nearest_segments, segment_item_mass
from raypipe.recommend import Recommender
from raypipe.schema import EVENT_TYPES
from raypipe.users import history_rows, history_weights, pool
from raypipe.vectors import to_numpy


def segment_column(names) -> str:
    """Users are segmented on `segment_vector` when they have one (the encoder's long-term
    view), else on `vector`."""
    return "segment_vector" if "segment_vector" in names else "vector"


def fit_segments(users, cfg: KMeansConfig) -> KMeans:
    """User vectors in the object store -> fitted K-means (labels in block order)."""
    km = KMeans(cfg.n_clusters, init=cfg.init, n_init=cfg.n_init, max_iter=cfg.max_iter,
                tol=cfg.tol, random_state=cfg.seed)
    return km.fit(RayShards.from_dataset(users, segment_column(users.schema().names)))


def _segments(batch: pa.Table, centroids: np.ndarray):
    return nearest_segments(to_numpy(batch[segment_column(batch.column_names)]), centroids)


class SegmentModel:
    """Centroids and what depends on them, shipped once to the workers."""

    def __init__(self, centroids: np.ndarray, item_segment: np.ndarray, cfg: PipelineConfig):
        self.centroids, self.item_segment, self.cfg = centroids, item_segment, cfg


def _history(batch: pa.Table, catalogue, cfg):
    idx = history_rows(batch["item_ids"], catalogue.index())
    return idx, history_weights(batch["event_types"].to_pylist(), cfg.user)


def _profiles(batch: pa.Table, catalogue, model) -> pa.Table:
    cat, m = fetch(catalogue[0]), fetch(model[0])
    seg, dist, conf = _segments(batch, m.centroids)
    idx, w = _history(batch, cat, m.cfg)
    top, weights = interests(idx, w, m.item_segment, len(m.centroids), m.cfg.profiles.top_interests)
    counts = ["n_events"] + [f"n_{e}" for e in EVENT_TYPES]
    return pa.table({"user_id": batch["user_id"], "segment": pa.array(seg, pa.int32()),
                     "distance": pa.array(dist, pa.float32()),
                     "confidence": pa.array(conf, pa.float32()),
                     "interests": pa.array(top, pa.list_(pa.int32())),
                     "interest_weights": pa.array(weights, pa.list_(pa.float32())),
                     "history_length": pa.array([len(i) for i in idx], pa.int32()),
                     **{c: batch[c] for c in counts}})


def _mass(batch: pa.Table, catalogue, model) -> pa.Table:
    cat, m = fetch(catalogue[0]), fetch(model[0])
    seg, _, _ = _segments(batch, m.centroids)
    idx, w = _history(batch, cat, m.cfg)
    return segment_item_mass(seg, idx, w)


def _recommend(batch: pa.Table, catalogue, model, rankings) -> pa.Table:
    cat, m = fetch(catalogue[0]), fetch(model[0])
    rec = cached(f"rec-{rankings[0].hex()}", lambda: Recommender(
        cat.item_ids, cat.vectors, fetch(rankings[0]), m.cfg.recommend))
    vectors = to_numpy(batch["vector"])
    seg, _, _ = _segments(batch, m.centroids)
    idx = history_rows(batch["item_ids"], cat.index())
    if m.cfg.user_repr == "pooled":
        recent = dataclasses.replace(m.cfg.user, half_life=m.cfg.recommend.query_half_life)
        vectors = pool(idx, history_weights(batch["event_types"].to_pylist(), recent),
                       cat.vectors)
    if m.cfg.recommend.exclude_purchased:
        exclude = [set(rows[np.asarray(t) == "purchase"].tolist()) for rows, t in
                   zip(idx, batch["event_types"].to_pylist())]
    else:
        exclude = [set() for _ in idx]
    ranked = rec.recommend(vectors, seg, exclude)
    return rec.to_table(batch["user_id"].to_pylist(), ranked)


def profile_users(users, catalogue_ref, model: SegmentModel):
    """-> (profiles dataset, segment item mass table summed over all users)."""
    model_ref = [ray.put(model)]
    kwargs = {"catalogue": catalogue_ref, "model": model_ref}
    profiles = users.map_batches(_profiles, batch_format="pyarrow", fn_kwargs=kwargs)
    mass = (users.map_batches(_mass, batch_format="pyarrow", fn_kwargs=kwargs)
            .groupby(["segment", "item_row"]).sum("weight")
            .rename_columns({"sum(weight)": "weight"}))
    mass = to_table(mass)
    return profiles, model_ref, mass


def recommend_users(users, catalogue_ref, model_ref, rankings):
    return users.map_batches(_recommend, batch_format="pyarrow",
                             fn_kwargs={"catalogue": catalogue_ref, "model": model_ref,
                                        "rankings": [ray.put(rankings)]})
