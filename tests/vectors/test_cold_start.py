"""Cold start in the encoder (vectors/encoder.py): items that no training history holds keep
the text adaptor's vector alone, and encoder.id_dropout leaves whole id vectors out in
training only."""
import numpy as np
import pytest
import torch

from raypipe.config import EncoderConfig
from raypipe.vectors import encoder
from tests.conftest import fake_vectors


@pytest.mark.parametrize("text,ids", [(True, True), (False, True)])
def test_items_no_history_holds_keep_the_text_adaptor_alone(text, ids):
    cfg = EncoderConfig(dim=8, heads=2, text=text, item_ids=ids)
    text_vectors = fake_vectors([f"t{i}" for i in range(6)], 16)
    model = encoder.SequenceEncoder(6, text_vectors if text else None, cfg, 5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    seen = np.array([True, False, True, True, False, True])
    out, n = encoder.without_unseen_ids(state, seen, cfg)
    if not text:        # id-only: nothing else to score them by, left as trained
        assert n == 0 and torch.equal(out["ids.weight"], state["ids.weight"])
        return
    assert n == 2 and torch.equal(out["ids.weight"][seen], state["ids.weight"][seen])
    assert not out["ids.weight"][~seen].any() and state["ids.weight"][~seen].any()
    model.load_state_dict(out)
    with torch.no_grad():
        table = model.item_table()[1:]
        cold = model.cold_items(torch.tensor(text_vectors[~seen]))
    torch.testing.assert_close(table[torch.from_numpy(~seen)], cold)


def test_id_dropout_leaves_out_whole_id_vectors_in_training_only():
    cfg = EncoderConfig(dim=8, heads=2, id_dropout=0.5)
    text_vectors = fake_vectors([f"t{i}" for i in range(400)], 16)
    model = encoder.SequenceEncoder(400, text_vectors, cfg, 5)
    with torch.no_grad():
        model.ids.weight.normal_()
        adaptor = model.adaptor(model.text)
        model.train()
        torch.manual_seed(0)
        ids = model.item_table()[1:] - adaptor
        model.eval()
        torch.testing.assert_close(model.item_table()[1:] - adaptor, model.ids.weight)
    dropped = (ids == 0).all(1)
    assert 0.35 < dropped.float().mean() < 0.65
    torch.testing.assert_close(ids[~dropped], model.ids.weight[~dropped])
    # id-only: nothing to fall back on, never dropped
    assert encoder.SequenceEncoder(400, None, EncoderConfig(
        dim=8, heads=2, text=False, id_dropout=0.5), 5).id_dropout == 0.0
