"""The outputs stage: profiles, segment summaries, the items' segments and groups, segment
rankings, blend's fitted weights, recommendations and leave-one-out metrics, from the user
vectors and the centroids."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray

from raypipe.arrays import to_numpy
from raypipe.config import EmbedConfig, EvalConfig, ProfileConfig, RecommendConfig, UserConfig
from raypipe.events.sequences import cold_items
from raypipe.jobs import runtime
from raypipe.jobs.embedding import embed_texts
from raypipe.jobs.items import catalogue_table, groups_table
from raypipe.jobs.profiles import SegmentModel, profile_users
from raypipe.jobs.recommendations import count_followers, recommend_users, validation_users
from raypipe.jobs.users import load_user_model
from raypipe.recommend import blend
from raypipe.recommend.cooccur import Followers
from raypipe.recommend.metrics import (adjusted_rand_index, baselines, metrics_from_recs,
                                       protocol)
from raypipe.recommend.inputs import segment_items_table, segment_rankings
from raypipe.recommend.recommender import Recommender
from raypipe.run.artifacts import Folder
from raypipe.run.versions import current_run
from raypipe.run.stages import Runtime, Stage
from raypipe.segments import ids as segment_ids
from raypipe.segments.profiles import roll_up, summarize_segments
from raypipe.segments.segmentation import Segmentation

log = logging.getLogger("raypipe")
RANKING_DEPTH = 1000     # items kept per segment in segment_items


def outputs_stage(out: Folder, items: Stage, embeddings: Stage, groups: Stage, users: Stage,
                  segments: Stage, user_repr: str, user: UserConfig, profiles: ProfileConfig,
                  recommend: RecommendConfig, evaluation: EvalConfig, validation_share: float,
                  seed: int, truth: str | None, rt: Runtime,
                  embed: EmbedConfig | None = None) -> dict:
    """-> `profiles`, `segments`, `items`, `segment_items`, `item_followers` (with blend),
    `recommendations`; what the manifest says of them."""
    seg = Segmentation.from_table(segments.folder.read("centroids"))
    model, catalogue = load_user_model(users, items, embeddings, user_repr, user,
                                       recommend.query_half_life)
    catalogue_ref, table = [ray.put(catalogue)], runtime.read_dataset(users.folder, "_users")
    group = groups_table(groups)
    with rt.timed("profiles"):
        item_segment = seg.nearest(catalogue.vectors)[0]
        seg_model = SegmentModel(seg, item_segment, model, user, profiles, recommend,
                                 group["group"].to_numpy() if group else None)
        prof, model_ref, leaf_mass = profile_users(table, catalogue_ref, seg_model,
                                                   users.info["profiled"])
        out.dataset("profiles", prof)
        ids = _segment_ids(out, segments, seg)
        _write_segments(out, segments, seg, ids, leaf_mass, catalogue, profiles)
        cold = cold_items(catalogue.item_ids, evaluation.cold_share, evaluation.cold_seed)
        _write_items(out, items, item_segment, group, cold)
        mass = roll_up(leaf_mass, seg.paths[:, seg.main])
        rankings = segment_rankings(mass, seg.n_segments, depth=RANKING_DEPTH)
        out.table("segment_items", segment_items_table(rankings, catalogue.item_ids))
    followers, blend_info, weights = None, None, None
    if "blend" in recommend.strategies:
        with rt.timed("blend"):
            val = _Fit(table, catalogue, catalogue_ref, seg, mass, model,
                       seg_model.item_group, user, recommend, validation_share, seed, embed)
            followers, blend_info = val.fit(out, users.info["profiled"])
        weights = (blend_info["segment"], blend_info["cooccurrence"])
    with rt.timed("recommendations"):
        recs, index = recommend_users(table, catalogue_ref, model_ref, rankings, followers,
                                      weights)
        log.info("item index: %s", index)
        out.dataset("recommendations", recs)
    metrics = {"planted": planted_agreement(out, truth)} if truth else {}
    if evaluation.holdout == "last":
        with rt.timed("evaluate"):
            metrics = {**metrics, **evaluate(out, table, evaluation.ks,
                                             recommend.exclude_purchased, cold)}
    return {"metrics": metrics, "index": index, "segment_ids": ids, "blend": blend_info}


def _write_segments(out: Folder, segments: Stage, seg: Segmentation, ids: dict,
                    leaf_mass: pa.Table, catalogue, profiles: ProfileConfig) -> None:
    """-> `segments`: every node of every level (level, segment, parent): its size, name,
    top items and terms (among that level's nodes), and how its id was kept."""
    tables = []
    for j, level in enumerate(seg.levels):
        kept = ids if level == seg.n_segments else ids["levels"][str(level)]
        summary = summarize_segments(
            np.asarray(_level_sizes(segments, level)), roll_up(leaf_mass, seg.paths[:, j]),
            catalogue.item_ids, catalogue.texts, profiles.top_items, profiles.top_terms)
        parent = seg.parents(level)
        moved = kept.get("moved") or [None] * level
        changed = (kept.get("users") or {}).get("per_segment") or [None] * level
        tables.append(summary.append_column(
            "level", pa.array([level] * level, pa.int32())).append_column(
            "parent", pa.array(parent, pa.int32(), mask=parent < 0)).append_column(
            "kmeans_cluster", pa.array(kept["kmeans_cluster"], pa.int32())).append_column(
            "moved", pa.array(moved, pa.float32())).append_column(
            "changed_share", pa.array(changed, pa.float32())))
    out.table("segments", pa.concat_tables(tables))


def _level_sizes(segments: Stage, level: int) -> list:
    hierarchy = segments.info.get("hierarchy")
    return hierarchy["per_level"][str(level)]["sizes"] if hierarchy else segments.info["sizes"]


def _write_items(out: Folder, items: Stage, item_segment: np.ndarray, group,
                 cold: frozenset) -> None:
    """-> `items`: the catalogue with each item's segment and, if any, its group; with cold
    items (eval.cold_share), whether each is one."""
    table = catalogue_table(items).append_column("segment", pa.array(item_segment, pa.int32()))
    if cold:
        table = table.append_column("cold", pc.is_in(table["item_id"], value_set=pa.array(
            sorted(cold), pa.string())))
    if group:
        assert group["item_id"].equals(table["item_id"]), "groups do not match items"
        table = table.append_column("group", group["group"]).append_column(
            "group_name", group["group_name"])
    out.table("items", table)


class _Fit:
    """blend's co-occurrence counts (-> `item_followers`) and its weights, fitted on the
    validation users (recommend/blend.py) where the config leaves them unset."""

    def __init__(self, users, catalogue, catalogue_ref, seg, mass, model, item_group,
                 user: UserConfig, recommend: RecommendConfig, share: float, seed: int,
                 embed: EmbedConfig | None):
        self.users, self.catalogue, self.catalogue_ref = users, catalogue, catalogue_ref
        self.seg, self.mass, self.model, self.item_group = seg, mass, model, item_group
        self.user, self.r, self.share, self.seed, self.embed = user, recommend, share, seed, embed

    def fit(self, out: Folder, n_users: int) -> tuple:
        """-> (Followers, what the manifest says of the weights)."""
        r, n_items = self.r, len(self.catalogue.item_ids)
        share = blend.fit_share(self.share, n_users)
        pairs = count_followers(self.users, self.catalogue_ref, r.cooccurrence_window, share,
                                self.seed, n_users)
        followers = Followers.from_pairs(pairs, n_items, r.cooccurrence_top)
        out.table("item_followers", followers.to_table(self.catalogue.item_ids))
        fixed = {"segment": r.blend_segment or 0.0, "cooccurrence": r.blend_cooccurrence or 0.0,
                 "fitted": False}
        if r.blend_segment is not None and r.blend_cooccurrence is not None:
            return followers, {**fixed, "note": "both weights set in the config"}
        val_users = validation_users(self.users, share, self.seed, self.model.segment_column)
        if val_users.num_rows == 0:
            return followers, {**fixed, "note": "no validation user has two items; unset "
                               "weights are 0"}
        val = blend.validation_inputs(
            val_users, to_numpy(val_users[self.model.segment_column]), self.catalogue,
            self.seg, self.user, r.exclude_purchased, self.model,
            self._embedded(val_users))
        rec = Recommender(self.catalogue.item_ids, self.catalogue.vectors,
                          blend.validation_rankings(self.mass, val, self.seg.n_segments,
                                                    depth=RANKING_DEPTH),
                          r, self.item_group,
                          Followers.from_pairs(pairs, n_items, r.cooccurrence_top, validation=True))
        info = {**blend.fit_weights(rec, val, r), "fitted": True}
        log.info("blend: segment %s, co-occurrence %s: validation NDCG@10 %.4f (vector alone "
                 "%.4f) on %d users", info["segment"], info["cooccurrence"],
                 info["valid_ndcg@10"], info["vector_valid_ndcg@10"], info["users"])
        return followers, info

    def _embedded(self, val_users: pa.Table) -> np.ndarray | None:
        """The text model's vectors of the shortened histories, for models that need texts
        (user_repr=text), embedded by the same actor pool as the batch's sequences."""
        if not self.model.needs_texts:
            return None
        texts = self.model.texts(*blend.shortened(val_users, self.catalogue))
        ds = ray.data.from_arrow(pa.table({"row": np.arange(len(texts)), "text": texts}))
        embedded, _ = embed_texts(ds, "text", self.embed, self.embed.sequence_max_length)
        got = runtime.collect(embedded, len(texts), "validation sequences").sort_by("row")
        return to_numpy(got["vector"])


def _segment_ids(out: Folder, segments: Stage, seg: Segmentation) -> dict:
    """The segments stage's id matching, plus the share of users (in both runs) whose
    segment changed, from the previous run's profiles; with a hierarchy, the same for
    every level under `levels`."""
    ids = dict(segments.info.get("segment_ids") or {})
    ids.setdefault("kmeans_cluster", list(range(seg.n_segments)))
    ref = ids.get("reference")
    previous = Folder(current_run(ref)) if ref else None
    if previous is not None and previous.exists("profiles.parquet"):
        cols = ["user_id", "segment"]
        ids["users"] = segment_ids.changed_share(
            previous.read("profiles", cols), out.read("profiles", cols), seg.n_segments)
        log.info("segment ids: %s of the users in both runs changed segment",
                 ids["users"]["changed_share"])
    if seg.hierarchical:
        per_level = segments.info["hierarchy"]["per_level"]
        changes = _level_changes(previous, out, seg)
        ids["levels"] = {str(lv): {**per_level[str(lv)]["segment_ids"], **changes.get(lv, {})}
                         for lv in seg.levels if lv != seg.n_segments}
    return ids


def _level_changes(previous: Folder | None, out: Folder, seg: Segmentation) -> dict:
    """{level: {users: changed shares}} for each level the previous run also had; both
    runs' profiles read once."""
    if previous is None or not previous.exists("profiles.parquet"):
        return {}
    old = Segmentation.from_table(previous.read("centroids")).levels
    before, now = (f.read("profiles", ["user_id", "levels"]) for f in (previous, out))

    def at(t: pa.Table, j: int) -> pa.Table:
        return pa.table({"user_id": t["user_id"], "segment": pc.list_element(t["levels"], j)})
    return {lv: {"users": segment_ids.changed_share(at(before, old.index(lv)),
                                                    at(now, seg.levels.index(lv)), lv)}
            for lv in seg.levels if lv in old and lv != seg.n_segments}


def planted_agreement(out: Folder, truth_path: str) -> dict:
    """Synthetic data: how well the segments found match the planted ones."""
    truth = pq.read_table(truth_path)
    found = out.read("profiles").select(["user_id", "segment"]).join(truth, "user_id")
    return {"ari": round(adjusted_rand_index(found["true_segment"].to_numpy(),
                                             found["segment"].to_numpy()), 4),
            "users": found.num_rows,
            "planted_segments": len(set(truth["true_segment"].to_pylist()))}


def evaluate(out: Folder, users, ks: tuple, exclude_purchased: bool,
             cold: frozenset = frozenset()) -> dict:
    """Leave-one-out metrics recomputed from the written recommendations, plus the
    most-popular and co-occurrence baselines; with `cold` items (eval.cold_share), the same
    again over the users whose held-out item is cold (`cold_targets`) and the others."""
    u = runtime.to_table(
        users.select_columns(["user_id", "item_ids", "event_types", "target_item"]))
    recs, targets = out.read("recommendations"), u["target_item"].to_pylist()
    histories, types = u["item_ids"].to_pylist(), u["event_types"].to_pylist()

    def scored(keep) -> dict:       # the users whose target passes `keep`; others unscored
        chosen = [t if t is not None and keep(t) else None for t in targets]
        metrics = metrics_from_recs(recs, pa.table({"user_id": u["user_id"], "target_item":
                                                    pa.array(chosen, pa.string())}), ks)
        metrics.update(baselines(histories, types, chosen, ks, exclude_purchased))
        return metrics
    result = {"protocol": protocol(exclude_purchased), "strategies": scored(lambda t: True)}
    if cold:
        result["cold_targets"] = {"items": len(cold), "strategies": scored(cold.__contains__)}
        result["warm_targets"] = {"strategies": scored(lambda t: t not in cold)}
    return result
