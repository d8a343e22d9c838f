"""The language model (``core/model.py``): dropouts, tying, state layout, regularisers."""

import pytest
import torch

from altgrad_triton.core.model import (
    Dropouts,
    RNNLanguageModel,
    embedding_dropout,
    lm_loss,
    locked_dropout,
)
from tests.helpers import small_model

V, B, T1, T2 = 13, 3, 5, 4


def test_locked_dropout_shares_mask_over_time_and_embedding_dropout_drops_words():
    torch.manual_seed(0)
    x = torch.ones(6, 4, 10)
    y = locked_dropout(x, 0.5, True)
    assert torch.equal(y[0], y[-1]) and set(y.unique().tolist()) <= {0.0, 2.0}
    assert torch.equal(locked_dropout(x, 0.5, False), x)
    emb = torch.nn.Embedding(20, 3)
    words = torch.arange(20).repeat(2, 1)
    out = embedding_dropout(emb, words, 0.5, True)
    zero_rows = (out[0] == 0).all(-1)
    assert zero_rows.any() and torch.equal(zero_rows, (out[1] == 0).all(-1))


@pytest.mark.parametrize("cell", ["lstm", "qrnn"])
def test_language_model_shapes_tying_and_state_layout(cell):
    model = RNNLanguageModel(
        50, cell=cell, emb_size=8, hidden_size=12, layers=3, window=2, backend="torch"
    )
    assert model.decoder.weight is model.embedding.weight
    sizes = [layer.hidden_size for layer in model.layers]
    assert sizes == [12, 12, 8]
    state = model.init_state(4)
    # LSTM: (h, c) per layer; QRNN: c per layer plus the first layer's previous input
    assert len(state) == (6 if cell == "lstm" else 4)
    out = model(torch.randint(0, 50, (5, 4)), state)
    assert out.logits.shape == (5, 4, 50)
    assert [t.shape for t in out.state] == [t.shape for t in state]
    loss, ce = lm_loss(out, torch.randint(0, 50, (5, 4)), ar_alpha=2.0, tar_beta=1.0)
    assert loss > ce > 0


def test_untied_model_has_its_own_decoder():
    dropout = Dropouts(input=0.4, hidden=0.3, output=0.4, embedding=0.1, weight=0.1)
    model = RNNLanguageModel(
        30,
        cell="lstm",
        emb_size=8,
        hidden_size=12,
        layers=2,
        tie_weights=False,
        dropout=dropout,
        backend="torch",
    )
    assert model.decoder.weight is not model.embedding.weight
    assert model.decoder.weight.shape == (30, 12)


def test_the_models_recurrent_states_leave_out_the_qrnn_window_input():
    qrnn = small_model("qrnn")  # 2 layers, window 2 on the first: (c, x_last), (c,)
    assert qrnn.recurrent_state_indices() == (0, 2)
    assert small_model("lstm").recurrent_state_indices() == (0, 1, 2, 3)
