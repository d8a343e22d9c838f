"""Cells and the language model: carried state, dropouts, tying, regularisers."""

import pytest
import torch

from altgrad_triton.core.cells import LSTM, QRNN
from altgrad_triton.core.model import (
    Dropouts,
    RNNLanguageModel,
    embedding_dropout,
    lm_loss,
    locked_dropout,
)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: LSTM(5, 7, backend="torch"),
        lambda: QRNN(5, 7, window=1, backend="torch"),
        lambda: QRNN(5, 7, window=2, output_gate=False, backend="torch"),
    ],
    ids=["lstm", "qrnn-w1", "qrnn-w2-no-o"],
)
def test_two_segments_with_carried_state_equal_one_long_segment(layer):
    torch.manual_seed(0)
    cell = layer()
    x = torch.randn(9, 3, 5)
    s0 = cell.init_state(3)
    whole, s_whole = cell(x, s0)
    first, s_mid = cell(x[:4], s0)
    second, s_end = cell(x[4:], s_mid)
    torch.testing.assert_close(torch.cat([first, second]), whole)
    for a, b in zip(s_end, s_whole, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "layer", [lambda: LSTM(5, 7, backend="torch"), lambda: QRNN(5, 7, backend="torch")],
    ids=["lstm", "qrnn"],
)  # fmt: skip
def test_cell_state_crosses_segments_in_fp32_under_bf16(layer):
    """Under bf16 autocast the outputs are bf16 but the carried c stays fp32, unrounded."""
    torch.manual_seed(0)
    cell = layer()
    state = cell.init_state(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(2):
            h, state = cell(torch.randn(6, 3, 5), state)
    c = state[-1] if isinstance(cell, LSTM) else state[0]
    assert h.dtype == torch.bfloat16 and c.dtype == torch.float32
    assert not torch.equal(c, c.bfloat16().float())  # not rounded to bf16 on the way


def test_lstm_layer_matches_torch_lstm():
    torch.manual_seed(0)
    ours = LSTM(4, 6, backend="torch")
    ref = torch.nn.LSTM(4, 6)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(ours.w_ih)
        ref.weight_hh_l0.copy_(ours.w_hh)
        ref.bias_ih_l0.copy_(ours.bias)
        ref.bias_hh_l0.zero_()
    x = torch.randn(5, 2, 4)
    h, (hT, cT) = ours(x, ours.init_state(2))
    h_ref, (hT_ref, cT_ref) = ref(x)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(cT, cT_ref[0])


def test_weight_drop_only_in_training():
    torch.manual_seed(0)
    cell = QRNN(4, 6, weight_drop=0.5, backend="torch")
    x = torch.randn(3, 2, 4)
    cell.eval()
    a, _ = cell(x, cell.init_state(2))
    b, _ = cell(x, cell.init_state(2))
    torch.testing.assert_close(a, b)
    cell.train()
    c, _ = cell(x, cell.init_state(2))
    assert not torch.allclose(a, c)


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
