"""The whole pipeline on a small synthetic log, on a local Ray, with the real model."""
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.metrics import adjusted_rand_score

from raypipe.run.artifacts import read_manifest
from raypipe.config import PipelineConfig, SourceConfig, SyntheticConfig, apply_overrides
from raypipe.recommend.metrics import metrics_from_recs
from raypipe.pipeline import run
from raypipe.events.synthetic import generate

pytestmark = pytest.mark.slow
TABLES = ["items", "item_embeddings", "sequences", "user_embeddings", "centroids", "profiles",
          "segments", "segment_items", "recommendations", "quarantine"]


@pytest.fixture(scope="module", params=["encoder", "pooled"])
def result(request, pipeline_runs):
    return pipeline_runs(request.param)


def table(out, name):
    return pd.read_parquet(os.path.join(out, "current", f"{name}.parquet"))


def test_every_table_and_the_manifest_are_written(result):
    out, manifest, _ = result
    for name in TABLES:
        assert os.path.isdir(os.path.join(out, "current", f"{name}.parquet")), name
    if manifest["config"]["user_repr"] == "encoder":
        assert os.path.isdir(os.path.join(out, "current", "item_vectors.parquet"))
        assert os.path.getsize(os.path.join(out, "current", "encoder.pt")) > 0
        assert "encoder" in manifest["seconds"]
    assert read_manifest(out) == manifest
    assert set(manifest["seconds"]) >= {"clean", "sequences", "item_embeddings", "segments",
                                        "profiles", "recommendations", "evaluate"}
    rows = manifest["rows"]
    assert rows["read"] == rows["kept"] + rows["quarantined"] == 15000


def test_profiles_cover_every_user_with_valid_fields(result):
    out, manifest, _ = result
    profiles = table(out, "profiles")
    assert len(profiles) == manifest["users"]["profiled"] == profiles.user_id.nunique()
    assert profiles.segment.between(0, 3).all() and profiles.confidence.between(0, 1).all()
    weights = profiles.interest_weights.map(lambda w: sum(w))
    assert ((weights > 0) & (weights <= 1.0001)).all()
    segments = table(out, "segments")
    assert segments["size"].sum() == len(profiles)
    assert (segments.top_terms.map(len) > 0).all()


def test_planted_segments_are_found(result):
    out, manifest, paths = result
    truth = pd.read_parquet(paths["users"])
    merged = table(out, "profiles").merge(truth, on="user_id")
    # Pooled vectors average a user's taste; the encoder's vector is the next-item intent
    # after the latest event, a noisier view of the long-term segment on 600 users.
    bar = 0.8 if manifest["config"]["user_repr"] == "pooled" else 0.5
    assert adjusted_rand_score(merged.true_segment, merged.segment) >= bar


def test_recommendations_ranked_and_purchases_excluded(result):
    out, _, _ = result
    recs = table(out, "recommendations")
    assert set(recs.strategy) == {"vector", "segment", "blend", "multi"}
    assert recs.groupby(["user_id", "strategy"]).size().max() == 10
    first = recs[recs["rank"] == 1]
    assert (first.groupby(["user_id", "strategy"]).size() == 1).all()
    seqs = table(out, "sequences")
    bought = {(u, i) for u, items, types in zip(seqs.user_id, seqs.item_ids, seqs.event_types)
              for i, t in zip(items, types) if t == "purchase"}
    assert not any((u, i) in bought for u, i in zip(recs.user_id, recs.item_id))


def test_printed_metrics_equal_metrics_recomputed_from_the_files(result):
    out, manifest, _ = result
    recs = pa.Table.from_pandas(table(out, "recommendations"))
    seqs = table(out, "sequences")
    seqs = pa.Table.from_pandas(seqs[~seqs.too_short][["user_id", "target_item"]])
    recomputed = metrics_from_recs(recs, seqs, (10, 20))
    strategies = manifest["metrics"]["strategies"]
    for name in ("vector", "segment", "blend", "multi"):
        assert strategies[name] == recomputed[name]
    assert strategies["vector"]["recall@10"] > strategies["most_popular"]["recall@10"]


def test_blend_weights_are_fitted_on_the_validation_users(result):
    out, manifest, _ = result
    blend = manifest["blend"]
    assert blend["fitted"] and blend["users"] > 0
    best = max(g["valid_ndcg@10"] for g in blend["grid"])
    assert blend["valid_ndcg@10"] == best >= blend["vector_valid_ndcg@10"]
    chosen = [g for g in blend["grid"] if (g["segment"], g["cooccurrence"]) ==
              (blend["segment"], blend["cooccurrence"])]
    assert chosen and chosen[0]["valid_ndcg@10"] == best
    # Every co-occurrence count is a real "b within 3 events after a" in the sequences.
    followers = table(out, "item_followers")
    seqs = table(out, "sequences")
    pairs = {}
    for items in seqs[~seqs.too_short].item_ids:
        for g in (1, 2, 3):
            for a, b in zip(items[:-g], items[g:]):
                pairs[a, b] = pairs.get((a, b), 0) + 1
    assert len(followers) > 0
    assert all(pairs.get((a, b)) == c for a, b, c in
               zip(followers.item_id, followers.follower_id, followers["count"]))


def test_vectors_are_unit_length_or_in_the_encoder_space(result):
    out, manifest, _ = result
    names = ["item_embeddings"]
    if manifest["config"]["user_repr"] == "encoder":
        users = np.stack(table(out, "user_embeddings").vector.to_numpy())
        items = np.stack(table(out, "item_vectors").vector.to_numpy())
        assert users.shape[1] == items.shape[1] == manifest["encoder"]["dim"]
        assert np.isfinite(users).all() and np.isfinite(items).all()
        assert manifest["encoder"]["epochs"] >= manifest["encoder"]["best_epoch"] >= 1
        if manifest["config"]["encoder"]["temperature"] > 0:     # cosine scoring
            for v in (users, items):
                np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    else:
        names.append("user_embeddings")
    for name in names:
        v = np.stack(table(out, name).vector.to_numpy())
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)


def test_text_user_repr_runs_through_the_same_stages(ray_session, tmp_path):
    paths = generate(SyntheticConfig(users=60, items=40, events=900, segments=2, seed=2),
                     str(tmp_path / "data"))
    cfg = PipelineConfig(output=str(tmp_path / "out"),
                         source=SourceConfig(kind="events", input=paths["events"],
                                             items=paths["items"]))
    cfg = apply_overrides(cfg, ["user_repr=text", "kmeans.n_clusters=2", "recommend.k=5",
                                "sequences.max_length=8"])
    manifest = run(cfg)
    users = table(cfg.output, "user_embeddings")
    assert len(users) == manifest["users"]["profiled"] == manifest["users"]["with_events"]
    v = np.stack(users.vector.to_numpy())
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    per_user = 5 * len(manifest["config"]["recommend"]["strategies"])      # k x strategies
    assert table(cfg.output, "recommendations").groupby("user_id").size().max() == per_user
    # One UserModel for batch and validation: blend is fitted for text users too, their
    # shortened histories embedded by the same actor pool.
    blend = manifest["blend"]
    assert blend["fitted"] and blend["users"] > 0, blend
    assert blend["valid_ndcg@10"] >= blend["vector_valid_ndcg@10"]
