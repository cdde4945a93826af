"""Recommendations, co-occurrence counts and blend's validation users: maps over the user
dataset around the plain `Recommender` (recommend/) and `UserModel` (vectors/users.py)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import ray

from raypipe.arrays import to_numpy
from raypipe.jobs.profiles import SegmentModel, segments_of
from raypipe.jobs.runtime import USER_BATCH, cached, fetch, shuffle_partitions, to_table
from raypipe.jobs.shuffle import sum_by
from raypipe.recommend.cooccur import follower_pairs, held_out
from raypipe.recommend.index import index_info
from raypipe.recommend.inputs import evidence, interest_queries, purchased
from raypipe.recommend.recommender import Recommender
from raypipe.vectors.pooling import history_rows


def _queries(batch: pa.Table, cat, m: SegmentModel):
    """A batch of users -> (query vectors, segments, history rows)."""
    seg, _, _ = segments_of(batch, m)
    idx = history_rows(batch["item_ids"], cat.index())
    stored = {c: to_numpy(batch[c]) for c in m.users.stored_columns}
    return m.users.from_stored(stored, idx, batch["event_types"]).query, seg, idx


def _recommender(cat, m: SegmentModel, rankings) -> Recommender:
    """rankings: [ref of (segment rankings, Followers or None, blend weights)]."""
    def build():
        seg, followers, weights = fetch(rankings[0])
        return Recommender(cat.item_ids, cat.vectors, seg, m.recommend, m.item_group,
                           followers, weights)
    return cached(f"rec-{rankings[0].hex()}", build)


def _recommend(batch: pa.Table, catalogue, model, rankings) -> pa.Table:
    cat, m = fetch(catalogue[0]), fetch(model[0])
    rec, r = _recommender(cat, m, rankings), m.recommend
    vectors, seg, idx = _queries(batch, cat, m)
    interests = interest_queries(
        idx, batch["event_types"], m.item_segment, cat.vectors, m.segmentation.n_segments,
        m.profiles.top_interests, m.user, r) if "multi" in r.strategies else None
    ev = evidence(idx, batch["event_types"], m.users, seg, m.segmentation, m.item_segment,
                  m.user, r, m.profiles.top_interests, cat.vectors,
                  interests_made=interests) if r.explain else None
    out = rec.recommend(vectors, seg, purchased(idx, batch["event_types"], r.exclude_purchased),
                        interests=interests, history=idx, evidence=ev)
    ranked, explained = out if ev is not None else (out, None)
    return rec.to_table(batch["user_id"].combine_chunks(), ranked, explained, cat.texts, seg)


@ray.remote
def _index_check(batch: pa.Table, catalogue, model, rankings) -> dict:
    cat, m = fetch(catalogue[0]), fetch(model[0])
    rec = _recommender(cat, m, rankings)
    vectors, _, _ = _queries(batch, cat, m)
    return {**index_info(rec.index), "recall_vs_exact": round(rec.index_recall(vectors), 4),
            "users_checked": batch.num_rows}


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


def _pairs(batch: pa.Table, catalogue, window: int, share: float, seed: int) -> pa.Table:
    cat = fetch(catalogue[0])
    held = held_out(batch["user_id"].to_numpy(zero_copy_only=False), share, seed)
    return follower_pairs(history_rows(batch["item_ids"], cat.index()), len(cat.item_ids),
                          window, held)


def count_followers(users, catalogue_ref, window: int, share: float, seed: int,
                    n_users: int = 0) -> pa.Table:
    """-> (src, dst, count, held) summed over all (about `n_users`) users: how often catalogue row dst comes
    within `window` events after src; `held`: the pairs that end at the last item of a
    validation user (cooccur.held_out with `share` and `seed`)."""
    pairs = users.map_batches(_pairs, batch_size=4 * USER_BATCH, batch_format="pyarrow",
                              fn_kwargs={"catalogue": catalogue_ref, "window": window,
                                         "share": share, "seed": seed})
    return to_table(sum_by(pairs, ["src", "dst"], ["count", "held"], shuffle_partitions(),
                           n_users))


def _validation_users(batch: pa.Table, share: float, seed: int, column: str | None) -> pa.Table:
    keep = held_out(batch["user_id"].to_numpy(zero_copy_only=False), share, seed)
    keep &= np.diff(batch["item_ids"].combine_chunks().offsets.to_numpy()) >= 2
    return batch.filter(pa.array(keep)).select(
        ["user_id", "item_ids", "event_types", *([column] if column else [])])


def validation_users(users, share: float, seed: int, column: str | None = None) -> pa.Table:
    """The users held out for validation with at least two items, in user-id order, with
    their segment vector `column` if one is named."""
    table = to_table(users.map_batches(_validation_users, batch_size=USER_BATCH,
                                       batch_format="pyarrow",
                                       fn_kwargs={"share": share, "seed": seed,
                                                  "column": column}))
    return table.sort_by("user_id")
