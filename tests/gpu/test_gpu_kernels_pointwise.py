"""Point-wise kernel families on a real GPU, at the paper's shapes, fp32 and bf16.

fo-pooling at B=20, T=200, H=1550 and H=400 (the 4-layer QRNN's widths), from the raw
[T, B, 3H] projection; the SG loss (with its fused telemetry) and the element-wise
synthesizer at N = 20 * 4 * 1550 = 124,000 scalars, U = 50. Triton
outputs and gradients are compared with the fp32 reference run on the same (upcast)
inputs; bf16 tolerances cover the rounding of the stored outputs. Most tests force one
candidate config through the tuning seam (compiling every autotune candidate for every
case would take minutes); ``test_autotuned_path_*`` run the autotuners once each.

Run on a CUDA machine: ``pytest tests/gpu`` (``tests/conftest.py`` leaves TRITON_INTERPRET
unset where a GPU exists, so the kernels compile). Measured: 39 s on an H200 with a cold
Triton cache, most of it compiling autotune candidates (before the element-wise lists were
cut from 12 to 8 candidates each).
"""

import pytest
import torch
from altgrad_triton.kernels import elementwise as ew_mod
from altgrad_triton.kernels import fo_pooling as fo_mod
from altgrad_triton.kernels import interpreting, tuning
from altgrad_triton.kernels import sg_loss as sg_mod
from altgrad_triton.kernels._common import ticket_counters
from altgrad_triton.kernels.elementwise import (
    elementwise_qrnn_synth,
    elementwise_qrnn_synth_reference,
)
from altgrad_triton.kernels.fo_pooling import fo_pool, fo_pool_reference
from altgrad_triton.kernels.sg_loss import (
    sg_mse_loss,
    sg_mse_loss_reference,
    sg_mse_loss_with_stats,
    sg_mse_loss_with_stats_reference,
)

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(
        interpreting(),
        reason="TRITON_INTERPRET=1 is set: the interpreter is far too slow at the paper's "
        "shapes; unset it to test the compiled kernels",
    ),
]

# (atol, rtol) against the fp32 reference on upcast inputs
TOL = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (1e-2, 1.6e-2)}
DTYPES = [torch.float32, torch.bfloat16]
B, T = 20, 200
N, U = 20 * 4 * 1550, 50


def dname(dtype):
    return str(dtype).removeprefix("torch.")


def check(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=what)


def upcast(ts):
    return [None if t is None else t.detach().float().requires_grad_(t.requires_grad) for t in ts]


def grads(outputs, upstream, inputs):
    loss = sum((o.float() * g).sum() for o, g in zip(outputs, upstream, strict=True))
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    return torch.autograd.grad(loss, wanted)


@pytest.fixture
def forced():
    """Force the middle candidate of a kernel's list for one key; cleared afterwards."""

    def force(kernel, key):
        metas = tuning.candidates(kernel)
        tuning.set_override(kernel, key, metas[len(metas) // 2])

    yield force
    tuning.clear_overrides()


def upstream(shape, dtype):
    """A random upstream gradient exactly representable in ``dtype``: autograd hands the
    kernels the gradient in the output's dtype, the fp32 reference gets the same values."""
    return torch.randn(shape, device="cuda").to(dtype).float()


# --------------------------------------------------------------------------- fo-pooling


def fo_inputs(H, dtype, output_gate=True, use_c0=True):
    """The raw [T, B, 3H] projection (scaled so the gates are neither saturated nor all
    1/2) and c0."""
    g = 3 if output_gate else 2
    gates = (2 * torch.randn(T, B, g * H, device="cuda")).to(dtype).requires_grad_()
    c0 = torch.randn(B, H, device="cuda").to(dtype).requires_grad_() if use_c0 else None
    return [gates, c0]


def fo_compare(ins, dtype, output_gate=True, c_dtype=None):
    gates, c0 = ins
    H = gates.shape[-1] // (3 if output_gate else 2)
    up = [upstream((T, B, H), dtype), upstream((B, H), c_dtype or dtype)]
    out = fo_pool(gates, c0, output_gate=output_gate, backend="triton")
    g = grads(out, up, ins)
    ref_ins = upcast(ins)
    out_ref = fo_pool_reference(*ref_ins, output_gate=output_gate)
    g_ref = grads(out_ref, up, ref_ins)
    check(out[0], out_ref[0], dtype, "h")
    check(out[1], out_ref[1], c_dtype or dtype, "c_T")
    assert g[0].dtype == dtype and g[0].shape == gates.shape
    for a, e, what in zip(g, g_ref, ("dgates", "dc0"), strict=False):
        check(a, e, dtype, what)
    return out, g


@pytest.mark.parametrize("dtype", DTYPES, ids=dname)
@pytest.mark.parametrize("H", [1550, 400])
def test_fo_pool_paper_shapes(H, dtype, forced):
    key = tuning.make_key(dtype, B * H)
    forced("fo_pool_fwd", key)
    forced("fo_pool_bwd", key)
    fo_compare(fo_inputs(H, dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dname)
def test_fo_pool_no_o_no_c0_strided(dtype, forced):
    """h = c, zero initial state, the projection a column slice of a wider tensor."""
    H = 400
    key = tuning.make_key(dtype, B * H)
    forced("fo_pool_fwd", key)
    forced("fo_pool_bwd", key)
    wide = (2 * torch.randn(T, B, 2 * H + 16, device="cuda")).to(dtype)
    gates = wide[:, :, 8 : 8 + 2 * H].requires_grad_()
    assert not gates.is_contiguous()
    fo_compare([gates, None], dtype, output_gate=False)


def test_fo_pool_bf16_storage_with_fp32_cell_state():
    """c0 in fp32 as the QRNN layer passes it under bf16: c_T and dc0 come back in fp32, and
    c_T at fp32 tolerance (the scan never rounds c)."""
    gates, c0 = fo_inputs(400, torch.bfloat16)
    c0 = c0.detach().float().requires_grad_()
    out, g = fo_compare([gates, c0], torch.bfloat16, c_dtype=torch.float32)
    assert (out[0].dtype, out[1].dtype, g[1].dtype) == (torch.bfloat16,) + (torch.float32,) * 2


def test_autotuned_path_fo_pool():
    """No override: both kernels autotune, the forward's chosen chunk sets the backward's
    checkpoint spacing."""
    tuning.clear_overrides()
    fo_compare(fo_inputs(400, torch.bfloat16), torch.bfloat16)


# --------------------------------------------------------------------------- SG loss


@pytest.mark.parametrize("dtype", DTYPES, ids=dname)
def test_sg_loss_paper_size(dtype, forced):
    forced("sg_loss", tuning.make_key(dtype, N))
    pred = torch.randn(B, N // B, device="cuda").to(dtype).requires_grad_()
    target = torch.randn(B, N // B, device="cuda").to(dtype)
    up = torch.rand((), device="cuda") + 0.5
    loss = sg_mse_loss(pred, target, backend="triton")
    (g,) = torch.autograd.grad(loss, pred, up)
    (rp,) = upcast([pred])
    loss_ref = sg_mse_loss_reference(rp, target)
    (g_ref,) = torch.autograd.grad(loss_ref, rp, up)
    torch.testing.assert_close(loss.detach(), loss_ref.detach(), atol=1e-6, rtol=1e-5)
    assert g.dtype == dtype
    check(g, g_ref, dtype, "dpred")
    again = sg_mse_loss(pred.detach(), target, backend="triton")
    assert torch.equal(again, loss.detach()), "loss not bit-reproducible"


@pytest.mark.parametrize("dtype", DTYPES, ids=dname)
def test_sg_loss_with_stats_paper_size(dtype, forced):
    """The fit pass at the WT2 QRNN's size: loss against s * target, gradient, sg_cos and
    sg_norm_ratio as PyTorch computes them; bit-reproducible, counter back at zero."""
    forced("sg_loss", tuning.make_key(dtype, N))
    pred = torch.randn(B, N // B, device="cuda").to(dtype).requires_grad_()
    target = torch.randn(B, N // B, device="cuda") * 1e-3
    got = sg_mse_loss_with_stats(pred, target, target_scale=700.0, backend="triton")
    ref = sg_mse_loss_with_stats_reference(upcast([pred])[0], target, 700.0)
    for a, e, what in zip(got, ref, ("loss", "cos", "ratio"), strict=True):
        torch.testing.assert_close(a.detach(), e.detach(), atol=1e-6, rtol=1e-5, msg=what)
    again = sg_mse_loss_with_stats(pred.detach(), target, target_scale=700.0, backend="triton")
    assert all(torch.equal(a, b.detach()) for a, b in zip(again, got, strict=True))
    assert ticket_counters(pred.device).count_nonzero().item() == 0


def test_autotuned_path_sg_loss():
    """Autotuning launches the kernel many times: each launch must leave the counter at 0."""
    tuning.clear_overrides()
    pred = torch.randn(B, N // B, device="cuda", requires_grad=True)
    target = torch.randn(B, N // B, device="cuda")
    loss, cos, ratio = sg_mse_loss_with_stats(pred, target, backend="triton")
    loss.backward()
    ref = sg_mse_loss_with_stats_reference(pred.detach(), target)
    for a, e in zip((loss.detach(), cos, ratio), ref, strict=True):
        torch.testing.assert_close(a, e, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pred.grad, 2 * (pred.detach() - target) / N)
    assert ticket_counters(pred.device).count_nonzero().item() == 0


# --------------------------------------------------------------------------- synthesizer


def ew_inputs(dtype, with_mask=True):
    dev = "cuda"
    state = [torch.randn(N, device=dev), torch.randn(N, U, device=dev)]
    weights = [
        torch.randn(3, U, device=dev),
        torch.randn(3, U, device=dev),
        torch.randn(U, device=dev) * 0.1,
        torch.randn(1, device=dev),
    ]
    ins = [t.to(dtype).requires_grad_() for t in state] + [t.requires_grad_() for t in weights]
    mask = ((torch.rand(N, U, device=dev) > 0.1).float() / 0.9).to(dtype) if with_mask else None
    return ins, mask


def ew_compare(dtype, with_mask):
    ins, mask = ew_inputs(dtype, with_mask)
    up = [upstream((N,), dtype), upstream((N, U), dtype)]
    out = elementwise_qrnn_synth(*ins, mask, backend="triton")
    g = grads(out, up, ins)
    ref_ins = upcast(ins)
    out_ref = elementwise_qrnn_synth_reference(*ref_ins, mask)
    g_ref = grads(out_ref, up, ref_ins)
    check(out[0], out_ref[0], dtype, "y")
    check(out[1], out_ref[1], dtype, "c")
    names = ("x", "c_prev", "w", "b", "v", "b_out")
    for name, t, a, e in zip(names, ins, g, g_ref, strict=True):
        assert a.dtype == t.dtype, name
        if name in ("x", "c_prev"):
            check(a, e, dtype, f"d{name}")
        else:  # fp32 sums over N = 124,000 rows, in another order than torch's
            atol = 1e-4 * e.abs().max().item()
            torch.testing.assert_close(a, e, atol=atol, rtol=1e-4, msg=f"d{name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=dname)
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask", "no_mask"])
def test_elementwise_paper_size(dtype, with_mask, forced):
    key = tuning.make_key(dtype, N) + (64,)
    forced("elementwise_fwd", key)
    forced("elementwise_bwd", key)
    ew_compare(dtype, with_mask)


def test_autotuned_path_elementwise():
    tuning.clear_overrides()
    ew_compare(torch.float32, True)


# --------------------------------------------------------------------------- CUDA graphs


def test_launchers_capture_in_a_cuda_graph(forced):
    """No host sync in any launch path: forward and backward launchers replay in a graph."""
    H, dtype = 400, torch.bfloat16
    for k in ("fo_pool_fwd", "fo_pool_bwd"):
        forced(k, tuning.make_key(dtype, B * H))
    forced("sg_loss", tuning.make_key(dtype, T * B * H))  # the loss of h against dh
    for k in ("elementwise_fwd", "elementwise_bwd"):
        forced(k, tuning.make_key(dtype, N) + (64,))
    gates, c0 = (t.detach() for t in fo_inputs(H, dtype))
    dh, dc = torch.randn(T, B, H, device="cuda").to(dtype), torch.randn_like(c0)
    ins, mask = ew_inputs(dtype)
    ins = [t.detach() for t in ins]
    dy, dcs = torch.randn(N, device="cuda"), torch.randn(N, U, device="cuda")

    def step():
        h, c_last, ckpt, chunk = fo_mod.fo_pool_forward(gates, c0, save=True)
        fo_grads = fo_mod.fo_pool_backward(gates, ckpt, chunk, dh, dc, dc0_dtype=c0.dtype)
        loss, sg_stats, g = sg_mod.sg_loss_forward(
            h.flatten(1), dh.flatten(1), target_scale=3.0, stats=True, want_grad=True
        )
        fo_sg = [h, c_last, *fo_grads, loss, sg_stats, g]
        y, c = ew_mod.elementwise_forward(*ins, mask)
        ew_grads = ew_mod.elementwise_backward(*ins, mask, dy, dcs)
        return [*fo_sg, y, c, *[t for t in ew_grads if t is not None]]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        eager = step()  # warm-up: compiles outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    graph.replay()
    torch.cuda.synchronize()
    for a, e in zip(captured, eager, strict=True):
        assert torch.equal(a, e)
