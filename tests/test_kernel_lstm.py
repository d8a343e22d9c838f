"""Triton LSTM segment vs the PyTorch reference, under the Triton interpreter (CPU).

Forward (h_seq, h_T, c_T) and every gradient (gx, w_hh, h0, c0) with random upstream
gradients on all three outputs. fp32 with IEEE ``tl.dot`` under the interpreter, so the
tolerances are tight: forward atol 1e-5 / rtol 1e-5, gradients atol 1e-5 / rtol 1e-4
(the gradients sum over up to T*B = 140 terms). fp16 storage (fp32 compute): atol/rtol
1e-2 against the fp32 reference on the same (fp16-rounded) inputs.
"""

import pytest
import torch
from altgrad_triton.kernels import tuning
from altgrad_triton.kernels.lstm import (
    config_key,
    configs_lstm_bwd,
    configs_lstm_fwd,
    lstm_segment,
    lstm_segment_backward_triton,
    lstm_segment_forward_triton,
    lstm_segment_reference,
)

TOL = {  # dtype -> (forward (atol, rtol), gradient (atol, rtol))
    torch.float32: ((1e-5, 1e-5), (1e-5, 1e-4)),
    torch.float16: ((1e-2, 1e-2), (1e-2, 1e-2)),
}

# A Latin square over B in {1, 3, 20}, T in {1, 3, 7}, H in {1, 5, 33}: each value of each
# size meets each value of the other two once across the nine cases.
SHAPES = [
    (1, 1, 1), (1, 3, 5), (1, 7, 33),
    (3, 1, 5), (3, 3, 33), (3, 7, 1),
    (20, 1, 33), (20, 3, 1), (20, 7, 5),
]  # fmt: skip


def _ids(shapes, dtype):
    return [f"B{b}-T{t}-H{h}-{str(dtype).removeprefix('torch.')}" for b, t, h in shapes]


def _inputs(batch, steps, hidden, dtype):
    gx = torch.randn(steps, batch, 4 * hidden).to(dtype)
    w_hh = (torch.randn(4 * hidden, hidden) / hidden**0.5).to(dtype)
    h0 = torch.randn(batch, hidden).to(dtype)
    c0 = torch.randn(batch, hidden).to(dtype)
    return [x.requires_grad_() for x in (gx, w_hh, h0, c0)]


def _compare(batch, steps, hidden, dtype):
    inputs = _inputs(batch, steps, hidden, dtype)
    out = lstm_segment(*inputs, backend="triton")
    ref_inputs = [x.detach().float().requires_grad_() for x in inputs]
    ref = lstm_segment_reference(*ref_inputs)
    (fa, fr), (ga, gr) = TOL[dtype]
    for name, o, r in zip(("h_seq", "h_T", "c_T"), out, ref, strict=True):
        assert o.dtype == dtype, name
        torch.testing.assert_close(o.float(), r, atol=fa, rtol=fr, msg=f"{name} differs")
    ups = [torch.randn_like(r) for r in ref]
    grads = torch.autograd.grad(out, inputs, [u.to(dtype) for u in ups])
    ref_grads = torch.autograd.grad(ref, ref_inputs, ups)
    for name, g, r in zip(("gx", "w_hh", "h0", "c0"), grads, ref_grads, strict=True):
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.float(), r, atol=ga, rtol=gr, msg=f"d{name} differs")


@pytest.mark.parametrize(("batch", "steps", "hidden"), SHAPES, ids=_ids(SHAPES, torch.float32))
def test_forward_and_all_grads_fp32(batch, steps, hidden, nan_poison):
    _compare(batch, steps, hidden, torch.float32)


@pytest.mark.parametrize(
    ("batch", "steps", "hidden"), [(3, 3, 33)], ids=_ids([(3, 3, 33)], torch.float16)
)
def test_forward_and_all_grads_fp16(batch, steps, hidden, nan_poison):
    _compare(batch, steps, hidden, torch.float16)


def test_fp32_cell_state_with_fp16_storage(nan_poison):
    """c0 in fp32 under fp16 storage (how the cells carry c): c_T and dc0 come back fp32,
    h and the other gradients fp16; both paths agree with the fp32 reference."""
    gx, w_hh, h0, c0 = _inputs(3, 4, 33, torch.float16)
    c0 = c0.detach().float().requires_grad_()
    inputs = [gx, w_hh, h0, c0]
    ref_inputs = [x.detach().float().requires_grad_() for x in inputs]
    ref = lstm_segment_reference(*ref_inputs)
    ups = [torch.randn_like(r) for r in ref]
    ref_grads = torch.autograd.grad(ref, ref_inputs, ups)
    (fa, fr), (ga, gr) = TOL[torch.float16]
    for backend in ("triton", "torch"):
        out = lstm_segment(*inputs, backend=backend)
        assert [o.dtype for o in out] == [torch.float16, torch.float16, torch.float32], backend
        for name, o, r in zip(("h_seq", "h_T", "c_T"), out, ref, strict=True):
            torch.testing.assert_close(o.float(), r, atol=fa, rtol=fr, msg=f"{backend} {name}")
        grads = torch.autograd.grad(
            out, inputs, [u.to(o.dtype) for u, o in zip(ups, out, strict=True)]
        )
        assert [g.dtype for g in grads] == [torch.float16] * 3 + [torch.float32], backend
        for name, g, r in zip(("gx", "w_hh", "h0", "c0"), grads, ref_grads, strict=True):
            torch.testing.assert_close(g.float(), r, atol=ga, rtol=gr, msg=f"{backend} d{name}")


def test_unused_outputs_give_none_upstream(nan_poison):
    """Only h_T feeds the loss: dh_seq and dc_T arrive as None and count as zeros."""
    inputs = _inputs(3, 4, 5, torch.float32)
    _, h_t, _ = lstm_segment(*inputs, backend="triton")
    grads = torch.autograd.grad(h_t.square().sum(), inputs)
    ref_inputs = [x.detach().requires_grad_() for x in inputs]
    _, h_ref, _ = lstm_segment_reference(*ref_inputs)
    ref_grads = torch.autograd.grad(h_ref.square().sum(), ref_inputs)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_backward_launcher_all_upstream_none(nan_poison):
    gx, w_hh, h0, c0 = (x.detach() for x in _inputs(3, 2, 5, torch.float32))
    h_all, c_all, act = lstm_segment_forward_triton(gx, w_hh, h0, c0)
    dgates, dh0, dc0 = lstm_segment_backward_triton(w_hh, h_all, c_all, act, None, None, None)
    for x in (dgates, dh0, dc0):
        assert torch.equal(x, torch.zeros_like(x))


def test_no_grad_path_matches(nan_poison):
    inputs = [x.detach() for x in _inputs(20, 3, 5, torch.float32)]
    out = lstm_segment(*inputs, backend="triton")
    ref = lstm_segment_reference(*inputs)
    for o, r in zip(out, ref, strict=True):
        torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)


def test_explicit_config(nan_poison):
    gx, w_hh, h0, c0 = (x.detach() for x in _inputs(3, 2, 33, torch.float32))
    cfg = {"BLOCK_B": 16, "BLOCK_H": 32, "BLOCK_K": 16, "num_warps": 2, "num_stages": 1}
    h_all, c_all, _ = lstm_segment_forward_triton(gx, w_hh, h0, c0, config=cfg)
    ref = lstm_segment_reference(gx, w_hh, h0, c0)
    torch.testing.assert_close(h_all[1:], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c_all[-1], ref[2], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="BLOCK_H"):
        lstm_segment_forward_triton(gx, w_hh, h0, c0, config=dict(cfg, BLOCK_H=24))
    with pytest.raises(ValueError, match="unknown"):
        lstm_segment_forward_triton(gx, w_hh, h0, c0, config=dict(cfg, BLOCK_Q=16))


def test_config_spaces_registered():
    for name, gen in (("lstm_fwd", configs_lstm_fwd), ("lstm_bwd", configs_lstm_bwd)):
        assert tuning.candidates(name) == gen()
        for c in gen():
            assert min(c["BLOCK_B"], c["BLOCK_H"], c["BLOCK_K"]) >= 16


def test_configs_override_is_used(nan_poison):
    """A forced choice in ``tuning`` wins over the interpreter's heuristic config."""
    gx, w_hh, h0, c0 = (x.detach().requires_grad_() for x in _inputs(3, 2, 33, torch.float32))
    key = config_key(3, 33, torch.float32)
    bad = {"BLOCK_B": 16, "BLOCK_H": 24, "BLOCK_K": 16}
    try:
        tuning.set_override("lstm_fwd", key, bad)
        with pytest.raises(ValueError, match="BLOCK_H"):
            lstm_segment(gx, w_hh, h0, c0, backend="triton")
        good = {"BLOCK_B": 16, "BLOCK_H": 64, "BLOCK_K": 64, "num_warps": 2}
        tuning.set_override("lstm_fwd", key, good)
        tuning.set_override("lstm_bwd", key, good)
        out = lstm_segment(gx, w_hh, h0, c0, backend="triton")
        grads = torch.autograd.grad(out[0].sum(), (gx, w_hh, h0, c0))
    finally:
        tuning.clear_overrides("lstm_fwd")
        tuning.clear_overrides("lstm_bwd")
    ref_in = [x.detach().requires_grad_() for x in (gx, w_hh, h0, c0)]
    ref = lstm_segment_reference(*ref_in)
    torch.testing.assert_close(out[0], ref[0], atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, torch.autograd.grad(ref[0].sum(), ref_in), strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_reference_gradcheck_float64():
    inputs = [x.double().detach().requires_grad_() for x in _inputs(2, 3, 3, torch.float32)]
    assert torch.autograd.gradcheck(lstm_segment_reference, inputs)


def _valid():
    return [x.detach() for x in _inputs(3, 2, 5, torch.float32)]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda a: a.__setitem__(0, a[0][0]), "gx must be"),
        (lambda a: a.__setitem__(0, a[0][:0]), "gx must be"),
        (lambda a: a.__setitem__(0, a[0][..., :-1]), "gx's last dim"),
        (lambda a: a.__setitem__(1, a[1][:-1]), "w_hh must be"),
        (lambda a: a.__setitem__(2, a[2][:, :-1]), "h0 must have shape"),
        (lambda a: a.__setitem__(3, a[3][:-1]), "c0 must have shape"),
        (lambda a: a.__setitem__(3, a[3].double()), "c0 has dtype torch.float64; allowed"),
        (lambda a: a.__setitem__(2, a[2].half()), "h0 has dtype torch.float16, must match gx's"),
        (lambda a: a.__setitem__(0, a[0].int()), "gx has dtype torch.int32; allowed"),
        (lambda a: a.__setitem__(0, a[0].transpose(0, 1).contiguous().transpose(0, 1)),
         "gx must be contiguous"),
    ],
    ids=["gx-2d", "gx-T0", "gx-gates", "w_hh-shape", "h0-shape", "c0-shape", "c0-float64",
         "h0-dtype-mismatch", "gx-int", "gx-noncontiguous"],
)  # fmt: skip
def test_value_errors(mutate, match):
    args = _valid()
    mutate(args)
    with pytest.raises(ValueError, match=match):
        lstm_segment(*args, backend="triton")


def test_bad_backend():
    with pytest.raises(ValueError, match="backend"):
        lstm_segment(*_valid(), backend="cuda")
