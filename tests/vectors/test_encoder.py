"""vectors/encoder.py, vectors/training.py and jobs/training.py: the encoded histories and
leave-one-out split, the model's invariants (padding, cold items, cosine scoring, losses), a
planted next-item rule learned, Ray Train with two workers equal to the plain loop, resume."""
import numpy as np
import pytest
import torch

from raypipe.vectors import encoder, training
from raypipe.recommend.cooccur import held_out
from raypipe.config import EncoderConfig
from tests.conftest import fake_vectors

N_ITEMS = 30


def planted(n_users=240, seed=0):
    """Each history walks the catalogue by a fixed rule: item i is followed by 3i+1 mod 30."""
    rng = np.random.default_rng(seed)
    rows, types = [], []
    for _ in range(n_users):
        cur, seq = int(rng.integers(N_ITEMS)), []
        for _ in range(int(rng.integers(4, 9))):
            seq.append(cur)
            cur = (3 * cur + 1) % N_ITEMS
        rows.append(np.array(seq))
        types.append(["view"] * len(seq))
    return rows, types


def small_cfg(**kw):
    base = dict(dim=16, layers=1, heads=2, dropout=0.0, epochs=6, patience=3, batch_size=32,
                lr=5e-3)
    return EncoderConfig(**{**base, **kw})


TEXT = fake_vectors([f"item {i}" for i in range(N_ITEMS)], dim=8)


def test_encode_histories_left_pads_and_keeps_the_latest():
    items, events = encoder.encode_histories([np.array([4, 5, 6]), np.array([], int)],
                                             [["view", "cart", "purchase"], []], width=2)
    assert items.tolist() == [[6, 7], [0, 0]]
    assert events.tolist() == [[encoder.EVENT_IDS["cart"], encoder.PURCHASE], [0, 0]]


def test_split_holds_out_the_last_item_for_validation():
    items = np.array([[0, 1, 2, 3], [0, 0, 4, 5], [0, 0, 0, 6]])
    s = training.split(items, np.ones_like(items))
    assert s.train_items.tolist() == [[0, 0, 1, 2]]      # the latest event stays last
    assert s.valid_items.tolist() == [[0, 1, 2], [0, 0, 4]]
    assert s.valid_targets.tolist() == [3, 5]


def test_users_not_held_out_for_validation_train_on_their_whole_history():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, 200)
    items = np.zeros((200, 8), np.int64)
    for u, n in enumerate(lengths):          # every history distinct: rows identify users
        items[u, 8 - n:] = 1000 * u + np.arange(1, n + 1)
    ids = [f"user-{u}" for u in range(200)]
    s = training.split(items, np.ones_like(items), held_out(ids, 0.25, seed=3))
    candidates = int((lengths >= 2).sum())
    assert 0.15 * candidates < len(s.valid_targets) < 0.35 * candidates
    held = {int(t) // 1000 for t in s.valid_targets}
    assert held == set(np.flatnonzero(held_out(ids, 0.25, seed=3) & (lengths >= 2)).tolist())
    trained = {int(r[r > 0][0]) // 1000: r for r in s.train_items}
    for u, n in enumerate(lengths):
        if u in held:       # the validation target is never a training label
            assert n < 3 and u not in trained or \
                trained[u][-1] == items[u, -2] and items[u, -1] not in trained[u]
        elif n >= 2:
            np.testing.assert_array_equal(trained[u], items[u])
        else:
            assert u not in trained
    # The hash decides per user: the order of the users does not matter, the seed does.
    assert held_out(ids[::-1], 0.25, seed=3)[::-1].tolist() == held_out(ids, 0.25, 3).tolist()
    assert held_out(ids, 0.25, seed=4).tolist() != held_out(ids, 0.25, seed=3).tolist()


def test_padding_does_not_change_the_user_vector():
    torch.manual_seed(0)
    model = encoder.SequenceEncoder(N_ITEMS, TEXT, small_cfg(), max_length=8).eval()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 3, 4, 5]])
    e = torch.ones_like(short)
    with torch.no_grad():
        a = model.user_vectors(short, e)
        b = model.user_vectors(padded, torch.cat([torch.zeros(1, 3, dtype=torch.long), e], 1))
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


@pytest.mark.parametrize("text,ids", [(True, True), (False, True), (True, False)])
def test_encoder_learns_a_planted_next_item_rule(text, ids):
    rows, types = planted()
    items, events = encoder.encode_histories(rows, types, 10)
    cfg = small_cfg(text=text, item_ids=ids, epochs=30, patience=30)
    state, summary = training.fit(training.split(items, events), N_ITEMS,
                                 TEXT if text else None, cfg, 10, mask_purchased=False)
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
    model = encoder.load(state, N_ITEMS, TEXT if text else None, cfg, 10)
    # Fresh histories: the next item follows the rule, never seen as a target here.
    test_rows, test_types = planted(100, seed=1)
    x, e = encoder.encode_histories(test_rows, test_types, 10)
    y = np.array([(3 * r[-1] + 1) % N_ITEMS + 1 for r in test_rows])
    ndcg, recall, n = training.rank_metrics(model, x, e, y, False, "cpu", k=1)
    assert recall / n >= 0.95, (text, ids, recall / n)


def test_the_time_budget_ends_training_and_keeps_the_best_epoch(monkeypatch):
    """Each epoch "takes" 20 s (a fake clock): a 1-minute budget starts no epoch after the
    third; without one, training runs to max_epochs; the reason is in the summary."""
    now, train_epoch = [0.0], training._train_epoch

    def slow_epoch(*args):
        now[0] += 20.0
        return train_epoch(*args)
    monkeypatch.setattr(training.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(training, "_train_epoch", slow_epoch)
    rows, types = planted()
    items, events = encoder.encode_histories(rows, types, 10)
    data = training.split(items, events)
    _, budgeted = training.fit(data, N_ITEMS, TEXT, small_cfg(epochs=10, patience=10,
                                                              max_minutes=1.0), 10)
    assert (budgeted["epochs"], budgeted["stopped"]) == (3, "time_budget")
    assert budgeted["train_seconds"] == 60.0
    assert budgeted["best_epoch"] == max(budgeted["history"],
                                         key=lambda r: r["valid_ndcg@10"])["epoch"]
    _, free = training.fit(data, N_ITEMS, TEXT, small_cfg(epochs=4, patience=10), 10)
    assert (free["epochs"], free["stopped"]) == (4, "max_epochs")
    with pytest.raises(ValueError, match="max_minutes"):
        small_cfg(max_minutes=-1)


@pytest.mark.parametrize("temperature", [0.0, 0.07])
def test_cold_item_with_text_gets_the_adaptor_vector(temperature):
    cfg = small_cfg(temperature=temperature)
    torch.manual_seed(0)
    model = encoder.SequenceEncoder(N_ITEMS, TEXT, cfg, 8)
    with torch.no_grad():
        expected = model.adaptor(torch.tensor(TEXT)) + model.ids.weight
    if temperature:         # cosine scoring: items are ranked by direction only
        expected = torch.nn.functional.normalize(expected, dim=-1)
    np.testing.assert_allclose(encoder.item_vectors(model), expected.numpy(), atol=1e-6)


def test_cosine_scoring_ranks_what_the_loss_trained():
    # With a temperature the loss scores cos(user, item) / t; the exported user and item
    # vectors are unit length, so the dot product downstream (faiss, the service) ranks by
    # that same cosine, and validation ranks the same way.
    rows, types = planted(60)
    items, events = encoder.encode_histories(rows, types, 10)
    cfg = small_cfg(temperature=0.1)
    torch.manual_seed(0)
    model = encoder.SequenceEncoder(N_ITEMS, TEXT, cfg, 10).eval()
    last, _ = encoder.infer(model, items, events)
    table = encoder.item_vectors(model)
    np.testing.assert_allclose(np.linalg.norm(last, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        states, raw = model(torch.as_tensor(items), torch.as_tensor(events))
        h = states[:, -1]
    logits = (torch.nn.functional.normalize(h, dim=-1) @
              torch.nn.functional.normalize(raw[1:], dim=-1).T / 0.1)
    np.testing.assert_allclose(last @ table.T / 0.1, logits.numpy(), atol=1e-4)
    best = (last @ table.T).argmax(1) + 1
    _, recall, n = training.rank_metrics(model, items, events, best, False, "cpu", k=1)
    assert recall == n


def test_sampled_loss_is_the_full_loss_when_every_item_is_a_negative():
    torch.manual_seed(0)
    states, table = torch.randn(2, 3, 8), torch.randn(6, 8)
    table[0] = 0
    labels = torch.tensor([[1, 2, 0], [3, 4, 5]])
    full, n = training.next_item_loss(states, table, labels, small_cfg(loss="full"))
    # Negatives drawn from the 5 items with many repeats: every item appears; duplicates of a
    # negative change the sum, so compare against the same logits computed by hand.
    g = torch.Generator().manual_seed(1)
    sampled, m = training.next_item_loss(states, table, labels,
                                        small_cfg(loss="sampled", negatives=64), generator=g)
    assert n == m == 5
    assert torch.isfinite(sampled) and sampled > full     # repeated negatives add mass


# --- Ray Train ------------------------------------------------------------------------------

def _dataset(ray, rows, types):
    items, events = encoder.encode_histories(rows, types, 10)
    ids = [f"u{i:04d}" for i in range(len(items))]
    held = held_out(ids, small_cfg().validation_share, small_cfg().seed)
    ds = ray.data.from_items([{"user_id": u, "items": x, "events": e, "held": h}
                              for u, x, e, h in zip(ids, items, events, held)])
    return ds.repartition(3), items, events, held


def _plain(items, events, held, cfg):
    return training.fit(training.split(items, events, held), N_ITEMS, TEXT, cfg, 10)


@pytest.mark.slow
def test_ray_train_two_workers_equal_the_plain_loop(ray_session, tmp_path):
    from raypipe.jobs.training import train_encoder
    rows, types = planted(120)
    ds, items, events, held = _dataset(ray_session, rows, types)
    cfg = small_cfg(epochs=2, patience=2, num_workers=2, cpus_per_worker=1)
    state, summary = train_encoder(ds, N_ITEMS, TEXT, cfg, 10, str(tmp_path), "planted")
    plain_state, plain = _plain(items, events, held, cfg)
    assert summary["epochs"] == plain["epochs"] == 2
    # Same batches, same gradients up to the order of float additions (DDP sums across
    # workers).
    for name, value in plain_state.items():
        np.testing.assert_allclose(state[name].numpy(), value.numpy(), atol=2e-4, err_msg=name)
    assert summary["valid_ndcg@10"] == pytest.approx(plain["valid_ndcg@10"], abs=1e-3)


class _DieAfterEpoch:
    """A Ray Train callback that fails the run once epoch `n`'s checkpoint is saved."""

    def __new__(cls, n: int):
        from ray.train import UserCallback

        class Die(UserCallback):
            def after_report(self, run_context, metrics, checkpoint):
                if checkpoint is not None and metrics[0]["epoch"] >= n:
                    raise RuntimeError(f"killed after epoch {n}")
        return Die()


@pytest.mark.slow
def test_interrupted_training_resumes_on_the_same_data_and_starts_over_on_changed_data(
        ray_session, tmp_path):
    from raypipe.jobs.training import train_encoder
    rows, types = planted(120)
    ds, items, events, held = _dataset(ray_session, rows, types)
    cfg = small_cfg(epochs=4, patience=4, cpus_per_worker=1)

    def interrupted(data):
        # The attempt dies after its second epoch's checkpoint and may not retry, as when
        # the driver is killed.
        with pytest.raises(Exception):
            train_encoder(data, N_ITEMS, TEXT, cfg, 10, str(tmp_path), "planted",
                          max_failures=0, callbacks=(_DieAfterEpoch(2),))
    interrupted(ds)
    # The log changed before the re-run (one user's last item), under the same data key
    # and settings: training starts over instead of continuing the old run's checkpoint.
    changed_rows = [r.copy() for r in rows]
    changed_rows[0][-1] = (changed_rows[0][-1] + 1) % N_ITEMS
    changed, *_ = _dataset(ray_session, changed_rows, types)
    _, fresh = train_encoder(changed, N_ITEMS, TEXT, cfg, 10, str(tmp_path), "planted")
    assert fresh["resumed_from_epoch"] == 0 and fresh["epochs"] == 4
    # The same command on the same data resumes from the interrupted run's checkpoint.
    state, summary = train_encoder(ds, N_ITEMS, TEXT, cfg, 10, str(tmp_path), "planted")
    assert summary["resumed_from_epoch"] == 2
    plain_state, plain = _plain(items, events, held, cfg)
    assert [h["valid_ndcg@10"] for h in summary["history"]] == \
        pytest.approx([h["valid_ndcg@10"] for h in plain["history"]], abs=1e-4)
    for name, value in plain_state.items():
        np.testing.assert_allclose(state[name].numpy(), value.numpy(), atol=2e-4, err_msg=name)
    assert summary["run"] != fresh["run"]


def test_an_encoder_file_from_before_the_temperature_keeps_dot_product_scores():
    cfg = small_cfg(temperature=0.0)
    torch.manual_seed(0)
    model = encoder.SequenceEncoder(N_ITEMS, TEXT, cfg, 8)
    saved = encoder.TrainedEncoder(model.state_dict(), cfg, N_ITEMS, 8, TEXT).to_file()
    del saved["cfg"]["temperature"]         # as written before the setting existed
    loaded = encoder.TrainedEncoder.from_file(saved, TEXT)
    assert loaded.cfg.temperature == 0.0 and not loaded.model().cosine
