"""vectors/users.py: the one UserModel for every user_repr, against the definitions it
replaces (pooling, the encoder's inference); what the users table stores and reads back;
new items' texts and vectors."""
import dataclasses

import numpy as np
import pytest

from raypipe.config import EncoderConfig, PipelineConfig, UserConfig, apply_overrides
from raypipe.vectors import encoder, training
from raypipe.vectors.pooling import history_weights, pool
from raypipe.vectors.users import UserModel, model_sections, training_sections
from tests.conftest import fake_vectors

TEXTS = [f"item {i} {'red' if i % 2 else 'blue'}" for i in range(12)]
VECTORS = fake_vectors(TEXTS)
ROWS = [np.array([0, 3, 5]), np.array([7]), np.array([2, 2, 9, 11])]
TYPES = [["view", "cart", "purchase"], ["click"], ["view", "view", "cart", "view"]]
USER = UserConfig()


def test_pooled_taste_and_query_are_the_two_poolings():
    model = UserModel("pooled", USER, 1.0, VECTORS, TEXTS)
    got = model.encode(ROWS, TYPES)
    np.testing.assert_allclose(got.taste, pool(ROWS, history_weights(TYPES, USER), VECTORS))
    recent = dataclasses.replace(USER, half_life=1.0)
    np.testing.assert_allclose(got.query, pool(ROWS, history_weights(TYPES, recent), VECTORS))
    assert not np.allclose(got.query, got.taste)
    assert model.stored_columns == ("vector",) and model.segment_column == "vector"
    again = model.from_stored(model.stored(got), ROWS, TYPES)
    np.testing.assert_allclose(again.query, got.query)


def test_a_users_stage_model_stores_without_a_query_half_life():
    model = UserModel("pooled", USER, None, VECTORS, TEXTS)
    got = model.encode(ROWS, TYPES)
    assert got.query is None and model.stored(got)["vector"].shape == (3, VECTORS.shape[1])
    with pytest.raises(ValueError, match="query_half_life"):
        model.from_stored(model.stored(got), ROWS, TYPES)


def test_new_items_are_pooled_from_their_text_vectors():
    model = UserModel("pooled", USER, 1.0, VECTORS, TEXTS)
    new = fake_vectors(["a brand new item"])
    got = model.encode([np.array([1, 12])], [["view", "cart"]], extra_text=new)
    space = np.concatenate([VECTORS, new])
    np.testing.assert_allclose(got.taste, pool([np.array([1, 12])], history_weights(
        [["view", "cart"]], USER), space))


def test_text_users_embed_their_rendered_history():
    model = UserModel("text", USER, 1.0, VECTORS, TEXTS)
    assert model.needs_texts
    texts = model.texts([np.array([0, 12])], [["view", "purchase"]], ["fresh item"])
    assert texts == ["purchase: fresh item; view: item 0 blue"]
    embedded = 3 * fake_vectors(texts)
    got = model.encode([np.array([0, 12])], [["view", "purchase"]], embedded)
    np.testing.assert_allclose(got.query, embedded / 3, rtol=1e-6)
    np.testing.assert_allclose(got.taste, got.query)
    with pytest.raises(ValueError, match="one embedded text per user"):
        model.encode(ROWS, TYPES)


def test_encoder_users_are_the_encoders_inference():
    cfg = EncoderConfig(dim=8, layers=1, heads=2, dropout=0.0)
    net = encoder.SequenceEncoder(len(TEXTS), VECTORS, cfg, 10).eval()
    trained = encoder.TrainedEncoder(net.state_dict(), cfg, len(TEXTS), 10, VECTORS)
    model = UserModel("encoder", USER, 1.0, VECTORS, TEXTS, trained)
    got = model.encode(ROWS, TYPES)
    items, events = encoder.encode_histories(ROWS, TYPES, 10)
    last, mean = encoder.infer(trained.model(), items, events)
    np.testing.assert_allclose(got.query, last, atol=1e-6)
    np.testing.assert_allclose(got.taste, mean, atol=1e-6)
    assert model.segment_column == "segment_vector"
    stored = model.stored(got)
    assert set(stored) == {"vector", "segment_vector"}
    np.testing.assert_allclose(model.from_stored(stored, ROWS, TYPES).taste, mean, atol=1e-6)
    np.testing.assert_allclose(model.item_space(), encoder.item_vectors(trained.model()),
                               atol=1e-6)
    assert model.item_space(fake_vectors(["new"])).shape == (len(TEXTS) + 1, 8)
    with pytest.raises(ValueError, match="trained encoder"):
        UserModel("encoder", USER, 1.0, VECTORS)
    assert training.Hooks().world == 1


def test_stage_sections_follow_the_user_repr():
    base = PipelineConfig()
    assert set(model_sections(base)) == {"user_repr", "user"}
    assert set(training_sections(base)) == {"encoder", "width", "mask_purchased", "choice"}
    # the choice against pooled vectors reads only what it asks with: other recommend
    # settings leave the trained stage's inputs as they are
    assert training_sections(apply_overrides(base, ["recommend.k=50"])) == \
        training_sections(base)
    assert training_sections(apply_overrides(base, ["recommend.cooccurrence_window=5"])) != \
        training_sections(base)
    assert set(training_sections(apply_overrides(base, ["encoder.compare_pooled=false"]))) \
        == {"encoder", "width", "mask_purchased"}
    pooled = apply_overrides(base, ["user_repr=pooled"])
    assert training_sections(pooled) == {}
    assert set(model_sections(apply_overrides(base, ["user_repr=text"]))) == \
        {"user_repr", "user", "embed"}


def test_occlusion_is_the_query_change_when_each_latest_event_is_left_out():
    cfg = EncoderConfig(dim=8, layers=1, heads=2, dropout=0.0)
    net = encoder.SequenceEncoder(len(TEXTS), VECTORS, cfg, 10).eval()
    trained = encoder.TrainedEncoder(net.state_dict(), cfg, len(TEXTS), 10, VECTORS)
    model = UserModel("encoder", USER, 1.0, VECTORS, TEXTS, trained)
    got = model.occlusion(ROWS, TYPES, 2)
    assert got.shape == (3, 2, 8)
    query = model.encode(ROWS, TYPES).query
    # user 0 without its latest event (row 5), then without the one before (row 3)
    without_last = model.encode([np.array([0, 3])], [["view", "cart"]]).query[0]
    without_mid = model.encode([np.array([0, 5])], [["view", "purchase"]]).query[0]
    np.testing.assert_allclose(got[0, 1], query[0] - without_last, atol=1e-6)
    np.testing.assert_allclose(got[0, 0], query[0] - without_mid, atol=1e-6)
    # a one-event history: leaving it out leaves nothing, so the whole query is its
    np.testing.assert_allclose(got[1, 1], query[1], atol=1e-6)
    assert not got[1, 0].any()
    # the explanation's score drop is exact: e . (q - q_without)
    e = model.item_space()[4]
    assert float(e @ got[0, 1]) == pytest.approx(float(e @ query[0] - e @ without_last),
                                                  abs=1e-6)
