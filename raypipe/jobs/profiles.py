"""Profiles and the segments' item mass: maps over the user dataset around the plain
segments/profiles.py, with the centroids and user model shipped once (`SegmentModel`)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from raypipe.arrays import to_numpy
from raypipe.config import ProfileConfig, RecommendConfig, UserConfig
from raypipe.jobs.runtime import USER_BATCH, fetch, shuffle_partitions, to_table
from raypipe.jobs.shuffle import sum_by
from raypipe.segments.profiles import COUNTS, nearest_segments, profile_table, segment_item_mass
from raypipe.segments.segmentation import Segmentation
from raypipe.vectors.pooling import history_rows, history_weights
from raypipe.vectors.users import UserModel


class SegmentModel:
    """The segmentation and what depends on it, shipped once to the workers: the items'
    segments, the user model, the item groups and the sections the maps read."""

    def __init__(self, segmentation: Segmentation, item_segment: np.ndarray, users: UserModel,
                 user: UserConfig, profiles: ProfileConfig, recommend: RecommendConfig,
                 item_group: np.ndarray | None = None):
        self.segmentation, self.item_segment, self.users = segmentation, item_segment, users
        self.user, self.profiles, self.recommend = user, profiles, recommend
        self.item_group = item_group


def segments_of(batch: pa.Table, m: SegmentModel):
    """A batch of users -> (segment, distance, confidence), from their segment vectors."""
    return nearest_segments(to_numpy(batch[m.users.segment_column]), m.segmentation)


def _history(batch: pa.Table, catalogue, m: SegmentModel):
    idx = history_rows(batch["item_ids"], catalogue.index())
    return idx, history_weights(batch["event_types"], m.user)


def _profiles(batch: pa.Table, catalogue, model) -> pa.Table:
    cat, m = fetch(catalogue[0]), fetch(model[0])
    idx, w = _history(batch, cat, m)
    return profile_table(batch["user_id"], to_numpy(batch[m.users.segment_column]),
                         idx, w, {c: batch[c] for c in COUNTS}, m.segmentation, m.item_segment,
                         m.profiles.top_interests, cat.item_ids, cat.vectors)


def _mass(batch: pa.Table, catalogue, model) -> pa.Table:
    cat, m = fetch(catalogue[0]), fetch(model[0])
    leaf = m.segmentation.nearest(to_numpy(batch[m.users.segment_column]))[3][:, -1]
    idx, w = _history(batch, cat, m)
    return segment_item_mass(leaf, idx, w)


def profile_users(users, catalogue_ref, model: SegmentModel, n_users: int = 0):
    """-> (profiles dataset, the model's object ref, item mass table (segment = the finest
    level's) summed over all (about `n_users`) users)."""
    model_ref = [ray.put(model)]
    kwargs = {"catalogue": catalogue_ref, "model": model_ref}
    profiles = users.map_batches(_profiles, batch_size=USER_BATCH, batch_format="pyarrow",
                                 fn_kwargs=kwargs)
    # Larger batches: each emits its (segment, item) sums, which the group-by then merges.
    mass = users.map_batches(_mass, batch_size=4 * USER_BATCH, batch_format="pyarrow",
                             fn_kwargs=kwargs)
    mass = sum_by(mass, ["segment", "item_row"], ["weight"], shuffle_partitions(), n_users)
    return profiles, model_ref, to_table(mass)
