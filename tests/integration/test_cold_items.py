"""Cold items (eval.cold_share): a seeded share of the catalogue loses every event before the
test; no history, count or training step sees them, the users whose held-out item is cold
are scored apart, the encoder gives them its text adaptor's vectors, and they stay
recommendable."""
import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from raypipe.config import PipelineConfig, SourceConfig, SyntheticConfig, apply_overrides
from raypipe.events.sequences import cold_mask
from raypipe.events.synthetic import generate
from raypipe.pipeline import run

pytestmark = pytest.mark.slow
BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench")


@pytest.fixture(scope="module")
def cold_run(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("cold")
    paths = generate(SyntheticConfig(users=400, items=200, events=8000, segments=3, seed=4),
                     str(root / "data"))
    cfg = apply_overrides(PipelineConfig(output=str(root / "out"), source=SourceConfig(
        kind="events", input=paths["events"], items=paths["items"])),
        ["eval.holdout=last", "eval.cold_share=0.2", "eval.cold_seed=1",
         "embed.precision=fp32", "kmeans.n_clusters=3", "encoder.epochs=4",
         "encoder.compare_pooled=false", "recommend.strategies=[vector,blend]"])
    return cfg.output, run(cfg)


def table(out, name):
    return pd.read_parquet(os.path.join(out, "current", f"{name}.parquet"))


def test_cold_items_are_in_no_history_and_scored_apart(cold_run):
    out, manifest = cold_run
    items = table(out, "items")
    np.testing.assert_array_equal(items.cold, cold_mask(items.item_id.tolist(), 0.2, 1))
    cold = set(items.item_id[items.cold])
    assert 0.1 < len(cold) / len(items) < 0.3
    seqs = table(out, "sequences")
    assert not any(set(h) & cold for h in seqs.item_ids)
    scored = seqs[~seqs.too_short & seqs.target_item.notna()]
    n_cold = int(scored.target_item.isin(cold).sum())
    assert n_cold > 0
    m = manifest["metrics"]
    assert m["cold_targets"]["items"] == len(cold)
    for name, row in m["strategies"].items():
        c, w = m["cold_targets"]["strategies"][name], m["warm_targets"]["strategies"][name]
        assert (c["users"], w["users"]) == (n_cold, len(scored) - n_cold)
        # the whole is the users-weighted mean of its two parts
        assert row["recall@10"] == pytest.approx(
            (c["recall@10"] * c["users"] + w["recall@10"] * w["users"]) / row["users"],
            abs=2e-6)
    # no count saw them: the popularity baseline cannot find a cold target
    assert m["cold_targets"]["strategies"]["most_popular"]["recall@20"] == 0.0


def test_the_encoder_scores_cold_items_by_their_text_and_recommends_them(cold_run):
    out, manifest = cold_run
    items = table(out, "items")
    assert manifest["encoder"]["items_without_events"] >= int(items.cold.sum())
    state = torch.load(os.path.join(out, "current", "encoder.pt"), weights_only=False)["state"]
    ids = state["ids.weight"].numpy()
    assert not ids[items.cold.to_numpy()].any()          # catalogue order is item_id order
    recs = table(out, "recommendations")
    assert recs[recs.strategy == "vector"].item_id.isin(items.item_id[items.cold]).any()


def test_the_cold_figures_recompute_from_the_files(cold_run):
    out, _ = cold_run
    sys.path.insert(0, BENCH)
    try:
        from recompute_metrics import main
    finally:
        sys.path.remove(BENCH)
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(out)
    line = json.loads(buf.getvalue())
    assert line["equal_to_manifest"] and "recomputed_cold_targets" in line


def test_the_service_recommends_cold_items_as_the_batch_does(cold_run):
    from serve.service import ProfileService
    out, _ = cold_run
    items = table(out, "items")
    cold = set(items.item_id[items.cold])
    recs = table(out, "recommendations")
    vector = recs[recs.strategy == "vector"]
    users = vector[vector.item_id.isin(cold)].user_id.unique()[:5]
    assert len(users)
    service = ProfileService(out)
    for user in users:
        batch = vector[vector.user_id == user].sort_values("rank").item_id.tolist()
        got = service.recommend(user, len(batch), "vector")["items"]
        assert [i["item_id"] for i in got] == batch
