"""ProfileService (no Ray, no HTTP) against the batch job's own tables."""
import numpy as np
import pandas as pd
import pytest

from raypipe.vectors.embed import Embedder
from serve.service import BadRequest, ProfileService, UnknownUser

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["encoder", "pooled"])
def run(request, pipeline_runs):
    out, manifest, _ = pipeline_runs(request.param)
    return out, manifest, ProfileService(out, answers_max_rows=0)   # always computed


def table(out, name):
    return pd.read_parquet(f"{out}/current/{name}.parquet")


def sample_users(out, n=40):
    profiles = table(out, "profiles")
    return profiles.user_id.sample(n, random_state=0).tolist()


def events_of(seq_row):
    return [{"item_id": i, "event_type": e, "timestamp": int(t)}
            for i, e, t in zip(seq_row.item_ids, seq_row.event_types, seq_row.timestamps)]


def test_known_user_recommendations_equal_the_batch_rows(run):
    out, _, service = run
    recs = table(out, "recommendations")
    for user in sample_users(out):
        for strategy in ("vector", "segment", "blend", "multi"):
            batch = recs[(recs.user_id == user) & (recs.strategy == strategy)].sort_values("rank")
            served = service.recommend(user, 10, strategy)
            assert [i["item_id"] for i in served["items"]] == batch.item_id.tolist()
            np.testing.assert_allclose([i["score"] for i in served["items"]], batch.score,
                                       rtol=1e-5, atol=1e-6)
            # the same reasons and evidence as the batch table (recommend/explain.py)
            assert [i["reason"] for i in served["items"]] == batch.reason.tolist()
            assert [i["because"] for i in served["items"]] == [list(b) for b in batch.because]
            assert [i["explanation"] for i in served["items"]] == batch.explanation.tolist()
            np.testing.assert_allclose(
                np.concatenate([i["because_weights"] for i in served["items"]] or [[]]),
                np.concatenate([list(w) for w in batch.because_weights] or [[]]), rtol=1e-5)
            short = service.recommend(user, 3, strategy)["items"]
            assert short == served["items"][:3]


def test_the_service_blends_with_the_runs_weights_and_counts(run):
    out, manifest, service = run
    rec = service.recommender
    assert rec.blend_weights == (manifest["blend"]["segment"], manifest["blend"]["cooccurrence"])
    followers = table(out, "item_followers")
    assert rec.followers.matrix.nnz == len(followers)
    a, b = (service.item_index.get_loc(i) for i in followers[["item_id", "follower_id"]].iloc[0])
    assert rec.followers.matrix[a, b] == followers["count"].iloc[0]


def test_known_user_profile_is_the_profiles_row(run):
    out, _, service = run
    profiles = table(out, "profiles").set_index("user_id")
    segments = table(out, "segments").set_index("segment")
    for user in sample_users(out, 10):
        p, row = service.profile(user), profiles.loc[user]
        assert p["segment"]["id"] == row.segment
        assert p["segment"]["name"] == segments.loc[row.segment, "name"]
        assert [i["id"] for i in p["interests"]] == list(row.interests)
        assert p["counts"]["n_events"] == row.n_events
        assert p["version"] == service.version


def test_a_posted_history_gets_the_users_profile_and_recommendations(run):
    out, _, service = run
    seqs = table(out, "sequences").set_index("user_id")
    for user in sample_users(out, 30):
        plan = service.plan(events_of(seqs.loc[user]))
        answer = service.answer(plan, None, 10, "vector")
        known = service.profile(user)
        assert answer["profile"]["segment"] == known["segment"]
        got, want = answer["profile"]["interests"], known["interests"]
        assert [i["id"] for i in got] == [i["id"] for i in want]
        assert [i["weight"] for i in got] == pytest.approx([i["weight"] for i in want], abs=1e-5)
        # what explains the profile: the same items, posted or known
        assert [i["items"] for i in got] == [i["items"] for i in want]
        assert answer["profile"]["segment_items"] == known["segment_items"]
        assert answer["profile"]["confidence"] == pytest.approx(known["confidence"], abs=1e-4)
        served = service.recommend(user, 10, "vector")["items"]
        assert [i["item_id"] for i in answer["recommendations"]["items"]] == \
            [i["item_id"] for i in served]
        # the same history gets the same reasons
        assert [(i["reason"], i["because"]) for i in answer["recommendations"]["items"]] == \
            [(i["reason"], i["because"]) for i in served]


def test_new_items_count_by_their_text_and_unknown_ones_are_listed(run):
    out, manifest, service = run
    seqs = table(out, "sequences")
    events = events_of(seqs.iloc[0])
    events += [{"item_id": "brand-new", "event_type": "cart", "timestamp": 2_000_000_000},
               {"item_id": "no-text", "event_type": "view", "timestamp": 2_000_000_001}]
    plan = service.plan(events, {"brand-new": "waterproof hiking boots"})
    assert plan.new_items == ["brand-new"] and plan.unknown_items == ["no-text"]
    assert plan.item_ids[-1] == "brand-new" and plan.rows[-1] == len(service.item_ids)
    vectors = Embedder(manifest["config"]["embed"]["model"]).encode(plan.texts)
    answer = service.answer(plan, vectors, 5, "blend")
    assert len(answer["recommendations"]["items"]) == 5
    assert answer["new_items"] == ["brand-new"]
    # explanations may cite the new item by its id, never a catalogue row past the end
    cited = {c for i in answer["recommendations"]["items"] for c in i["because"]}
    assert cited <= set(plan.item_ids) and all(i["reason"] for i in
                                               answer["recommendations"]["items"])


def test_refusals_name_the_problem(run):
    _, _, service = run
    with pytest.raises(UnknownUser, match="nobody"):
        service.profile("nobody")
    with pytest.raises(BadRequest, match="no events"):
        service.plan([])
    with pytest.raises(BadRequest, match=r"events\[1\]: unparsable_timestamp"):
        service.plan([{"item_id": service.item_ids[0], "timestamp": 1},
                      {"item_id": service.item_ids[1], "timestamp": "yesterday"}])
    with pytest.raises(BadRequest, match="usable items"):
        service.plan([{"item_id": "unheard-of", "timestamp": 1}])
    # The strategy is checked first, before anything of the request is embedded.
    events = [{"item_id": service.item_ids[i], "timestamp": i} for i in range(3)]
    with pytest.raises(BadRequest, match="strategy 'nope'"):
        service.plan(events, {"brand-new": "a text to embed"}, None, "nope")
