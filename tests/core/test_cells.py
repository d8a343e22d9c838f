"""The recurrent cells (``core/cells.py``): state carried across segments, the cell state in
fp32 under bf16, the LSTM against torch's, weight drop in training only, and
``backend = "cudnn"`` (PyTorch's fused LSTM op; on the CPU its native LSTM, which lets CI
check the plumbing against the reference path; tests/gpu/test_gpu_cudnn.py checks it on
cuDNN itself)."""

from __future__ import annotations

import pytest
import torch

from altgrad_triton.core.cells import LSTM, QRNN


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


# ---------------------------------------------------------------------------- backend = "cudnn"


def _pair(weight_drop: float, training: bool) -> tuple[LSTM, LSTM]:
    torch.manual_seed(3)
    ref = LSTM(5, 7, weight_drop=weight_drop, backend="torch")
    fused = LSTM(5, 7, weight_drop=weight_drop, backend="cudnn")
    fused.load_state_dict(ref.state_dict())
    ref.train(training)
    fused.train(training)
    return ref, fused


@pytest.mark.parametrize(("weight_drop", "training"), [(0.0, True), (0.5, True), (0.5, False)])
def test_fused_lstm_matches_the_reference_forward_and_every_gradient(weight_drop, training):
    ref, fused = _pair(weight_drop, training)
    x = torch.randn(6, 3, 5)
    h0, c0 = torch.randn(3, 7), torch.randn(3, 7)
    outs, grads = [], []
    for cell in (ref, fused):
        xs = [t.clone().requires_grad_() for t in (x, h0, c0)]
        torch.manual_seed(11)  # the same weight-drop mask for both
        hs, (h, c) = cell(xs[0], (xs[1], xs[2]))
        assert c.dtype == torch.float32
        up = torch.Generator().manual_seed(5)  # random upstream gradients on every output
        loss = sum((t * torch.randn(t.shape, generator=up)).sum() for t in (hs, h, c))
        params = list(cell.parameters())
        grads.append(torch.autograd.grad(loss, xs + params))
        outs.append((hs, h, c))
    for a, b in zip(outs[0], outs[1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    names = ["x", "h0", "c0", "w_ih", "w_hh", "bias"]
    for name, a, b in zip(names, grads[0], grads[1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_weight_drop_draws_a_mask_per_call_in_training_only():
    _, fused = _pair(0.5, True)
    x, state = torch.randn(4, 2, 5), (torch.zeros(2, 7), torch.zeros(2, 7))
    a, _ = fused(x, state)
    b, _ = fused(x, state)
    assert not torch.equal(a, b)
    fused.eval()
    assert torch.equal(fused(x, state)[0], fused(x, state)[0])
