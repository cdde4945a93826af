"""Ray stages after the user vectors: K-means on Ray tasks, profiles, segment item mass and
recommendations, each a map over the user dataset around a plain function or class."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from raypipe.config import KMeansConfig, PipelineConfig
from raypipe.jobs.kmeans_tasks import RayShards
from raypipe.jobs.runtime import USER_BATCH, cached, fetch, to_table
from raypipe.segments.kmeans import KMeans
from raypipe.segments.profiles import COUNTS, nearest_segments, profile_table, segment_item_mass
from raypipe.recommend.recommender import (Recommender, index_info, interest_queries, purchased_rows,
                               query_vectors)
from raypipe.vectors.pooling import history_rows, history_weights
from raypipe.arrays import to_numpy


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

    def __init__(self, centroids: np.ndarray, item_segment: np.ndarray, cfg: PipelineConfig,
                 item_group: np.ndarray | None = None):
        self.centroids, self.item_segment, self.cfg = centroids, item_segment, cfg
        self.item_group = item_group


def _history(batch: pa.Table, catalogue, cfg):
    idx = history_rows(batch["item_ids"], catalogue.index())
    return idx, history_weights(batch["event_types"], cfg.user)


def _profiles(batch: pa.Table, catalogue, model) -> pa.Table:
    cat, m = fetch(catalogue[0]), fetch(model[0])
    idx, w = _history(batch, cat, m.cfg)
    return profile_table(batch["user_id"], to_numpy(batch[segment_column(batch.column_names)]),
                         idx, w, {c: batch[c] for c in COUNTS}, m.centroids, m.item_segment,
                         m.cfg.profiles.top_interests)


def _mass(batch: pa.Table, catalogue, model) -> pa.Table:
    cat, m = fetch(catalogue[0]), fetch(model[0])
    seg, _, _ = _segments(batch, m.centroids)
    idx, w = _history(batch, cat, m.cfg)
    return segment_item_mass(seg, idx, w)


def _queries(batch: pa.Table, cat, m):
    """A batch of users -> (query vectors, segments, history rows)."""
    seg, _, _ = _segments(batch, m.centroids)
    idx = history_rows(batch["item_ids"], cat.index())
    vectors = query_vectors(m.cfg.user_repr, to_numpy(batch["vector"]), idx,
                            batch["event_types"], m.cfg.user, m.cfg.recommend, cat.vectors)
    return vectors, seg, idx


def _recommender(cat, m, rankings) -> Recommender:
    """rankings: [ref of (segment rankings, Followers or None, blend weights)]."""
    def build():
        seg, followers, weights = fetch(rankings[0])
        return Recommender(cat.item_ids, cat.vectors, seg, m.cfg.recommend, m.item_group,
                           followers, weights)
    return cached(f"rec-{rankings[0].hex()}", build)


def _recommend(batch: pa.Table, catalogue, model, rankings) -> pa.Table:
    cat, m = fetch(catalogue[0]), fetch(model[0])
    rec, cfg = _recommender(cat, m, rankings), m.cfg
    vectors, seg, idx = _queries(batch, cat, m)
    interests = interest_queries(
        idx, batch["event_types"], m.item_segment, cat.vectors, len(m.centroids),
        cfg.profiles.top_interests, cfg.user, cfg.recommend) \
        if "multi" in cfg.recommend.strategies else None
    ranked = rec.recommend(vectors, seg, purchased_rows(idx, batch["event_types"],
                                                        cfg.recommend.exclude_purchased),
                           interests=interests, history=idx)
    return rec.to_table(batch["user_id"].combine_chunks(), ranked)


@ray.remote
def _index_check(batch: pa.Table, catalogue, model, rankings) -> dict:
    cat, m = fetch(catalogue[0]), fetch(model[0])
    rec = _recommender(cat, m, rankings)
    vectors, _, _ = _queries(batch, cat, m)
    return {**index_info(rec.index), "recall_vs_exact": round(rec.index_recall(vectors), 4),
            "users_checked": batch.num_rows}


def profile_users(users, catalogue_ref, model: SegmentModel):
    """-> (profiles dataset, segment item mass table summed over all users)."""
    model_ref = [ray.put(model)]
    kwargs = {"catalogue": catalogue_ref, "model": model_ref}
    profiles = users.map_batches(_profiles, batch_size=USER_BATCH, batch_format="pyarrow",
                                 fn_kwargs=kwargs)
    # Larger batches: each emits its (segment, item) sums, which the group-by then merges.
    mass = (users.map_batches(_mass, batch_size=4 * USER_BATCH, batch_format="pyarrow",
                              fn_kwargs=kwargs)
            .groupby(["segment", "item_row"]).sum("weight")
            .rename_columns({"sum(weight)": "weight"}))
    mass = to_table(mass)
    return profiles, model_ref, mass


def _pairs(batch: pa.Table, catalogue, window: int, share: float, seed: int) -> pa.Table:
    from raypipe.recommend.cooccur import follower_pairs, held_out
    cat = fetch(catalogue[0])
    held = held_out(batch["user_id"].to_numpy(zero_copy_only=False), share, seed)
    return follower_pairs(history_rows(batch["item_ids"], cat.index()), len(cat.item_ids),
                          window, held)


def count_followers(users, catalogue_ref, cfg: PipelineConfig, share: float) -> pa.Table:
    """-> (src, dst, count, held) summed over all users: how often catalogue row dst comes
    within recommend.cooccurrence_window events after src; `held`: the pairs that end at the
    last item of a validation user (cooccur.held_out with `share`)."""
    pairs = users.map_batches(_pairs, batch_size=4 * USER_BATCH, batch_format="pyarrow",
                              fn_kwargs={"catalogue": catalogue_ref,
                                         "window": cfg.recommend.cooccurrence_window,
                                         "share": share, "seed": cfg.encoder.seed})
    return to_table(pairs.groupby(["src", "dst"]).sum(["count", "held"])
                    .rename_columns({"sum(count)": "count", "sum(held)": "held"}))


def _validation_users(batch: pa.Table, share: float, seed: int) -> pa.Table:
    from raypipe.recommend.cooccur import held_out
    keep = held_out(batch["user_id"].to_numpy(zero_copy_only=False), share, seed)
    keep &= np.diff(batch["item_ids"].combine_chunks().offsets.to_numpy()) >= 2
    return batch.filter(pa.array(keep)).select(
        ["user_id", "item_ids", "event_types", segment_column(batch.column_names)])


def validation_users(users, share: float, seed: int) -> pa.Table:
    """The users held out for validation with at least two items, in user-id order."""
    table = to_table(users.map_batches(_validation_users, batch_size=USER_BATCH,
                                       batch_format="pyarrow",
                                       fn_kwargs={"share": share, "seed": seed}))
    return table.sort_by("user_id")


def recommend_users(users, catalogue_ref, model_ref, rankings, followers=None, weights=None):
    """-> (recommendations dataset, what the item index is and its recall@k against exact
    search, measured on the first 1,000 users). `followers` and `weights` (segment,
    co-occurrence) make `blend`."""
    kwargs = {"catalogue": catalogue_ref, "model": model_ref,
              "rankings": [ray.put((rankings, followers, weights))]}
    sample = to_table(users.limit(1000))
    check = ray.get(_index_check.remote(sample, **kwargs))
    return users.map_batches(_recommend, batch_size=USER_BATCH, batch_format="pyarrow",
                             fn_kwargs=kwargs), check
