"""Point-wise kernel families on a real GPU, at the paper's shapes, fp32 and bf16.

fo-pooling at B=20, T=200, H=1550 and H=400 (the 4-layer QRNN's widths); the SG loss and
the element-wise synthesizer at N = 20 * 4 * 1550 = 124,000 scalars, U = 50. Triton
outputs and gradients are compared with the fp32 reference run on the same (upcast)
inputs; bf16 tolerances cover the rounding of the stored outputs. Most tests force one
candidate config through the tuning seam (compiling every autotune candidate for every
case would take minutes); ``test_autotuned_path_*`` run the autotuners once each.

Run on a CUDA machine: ``pytest tests/gpu`` (``tests/conftest.py`` leaves TRITON_INTERPRET
unset where a GPU exists, so the kernels compile). Measured: 39 s on an H200 with a cold
Triton cache, most of it compiling autotune candidates (before the element-wise lists were
cut from 12 to 8 candidates each).
"""

import sys

import pytest
import torch
from altgrad_triton.kernels import interpreting, tuning
from altgrad_triton.kernels.elementwise import (
    elementwise_qrnn_synth,
    elementwise_qrnn_synth_reference,
)
from altgrad_triton.kernels.fo_pool import fo_pool, fo_pool_reference
from altgrad_triton.kernels.sg_loss import sg_mse_loss, sg_mse_loss_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(
        interpreting(),
        reason="TRITON_INTERPRET=1 is set: the interpreter is far too slow at the paper's "
        "shapes; unset it to test the compiled kernels",
    ),
]

fo_mod = sys.modules["altgrad_triton.kernels.fo_pool"]
sg_mod = sys.modules["altgrad_triton.kernels.sg_loss"]
ew_mod = sys.modules["altgrad_triton.kernels.elementwise"]

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


def fo_inputs(H, dtype, use_o=True, use_c0=True):
    dev = "cuda"
    f = torch.rand(T, B, H, device=dev).to(dtype).requires_grad_()
    z = torch.randn(T, B, H, device=dev).to(dtype).requires_grad_()
    o = torch.rand(T, B, H, device=dev).to(dtype).requires_grad_() if use_o else None
    c0 = torch.randn(B, H, device=dev).to(dtype).requires_grad_() if use_c0 else None
    return [f, z, o, c0]


def fo_compare(H, dtype, use_o, use_c0):
    ins = fo_inputs(H, dtype, use_o, use_c0)
    up = [upstream((T, B, H), dtype), upstream((B, H), dtype)]
    out = fo_pool(*ins, backend="triton")
    g = grads(out, up, ins)
    ref_ins = upcast(ins)
    out_ref = fo_pool_reference(*ref_ins)
    g_ref = grads(out_ref, up, ref_ins)
    check(out[0], out_ref[0], dtype, "h")
    check(out[1], out_ref[1], dtype, "c_T")
    for a, e in zip(g, g_ref, strict=True):
        assert a.dtype == dtype
        check(a, e, dtype, "grad")


@pytest.mark.parametrize("dtype", DTYPES, ids=dname)
@pytest.mark.parametrize("H", [1550, 400])
def test_fo_pool_paper_shapes(H, dtype, forced):
    key = tuning.make_key(dtype, B * H)
    forced("fo_pool_fwd", key)
    forced("fo_pool_bwd", key)
    fo_compare(H, dtype, use_o=True, use_c0=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=dname)
def test_fo_pool_no_o_no_c0_strided(dtype, forced):
    """h = c, zero initial state, gates as chunks of one [T, B, 3H] projection."""
    H = 400
    key = tuning.make_key(dtype, B * H)
    forced("fo_pool_fwd", key)
    forced("fo_pool_bwd", key)
    proj = torch.rand(T, B, 3 * H, device="cuda").to(dtype)
    z, f, _ = (t.requires_grad_() for t in proj.chunk(3, dim=-1))
    up = [upstream((T, B, H), dtype), upstream((B, H), dtype)]
    out = fo_pool(f, z, backend="triton")
    g = grads(out, up, [f, z])
    rf, rz = upcast([f, z])
    out_ref = fo_pool_reference(rf, rz, None, None)
    g_ref = grads(out_ref, up, [rf, rz])
    check(out[0], out_ref[0], dtype, "h")
    check(out[1], out_ref[1], dtype, "c_T")
    for a, e in zip(g, g_ref, strict=True):
        check(a, e, dtype, "grad")


def test_fo_pool_bf16_storage_with_fp32_cell_state():
    """c0 in fp32 as the QRNN layer passes it under bf16: c_T and dc0 come back in fp32, and
    c_T at fp32 tolerance (the scan never rounds c)."""
    f, z, o, c0 = fo_inputs(400, torch.bfloat16)
    c0 = c0.detach().float().requires_grad_()
    ins = [f, z, o, c0]
    up = [upstream((T, B, 400), torch.bfloat16), upstream((B, 400), torch.float32)]
    out = fo_pool(*ins, backend="triton")
    g = grads(out, up, ins)
    ref_ins = upcast(ins)
    out_ref = fo_pool_reference(*ref_ins)
    g_ref = grads(out_ref, up, ref_ins)
    assert (out[0].dtype, out[1].dtype, g[-1].dtype) == (torch.bfloat16,) + (torch.float32,) * 2
    check(out[0], out_ref[0], torch.bfloat16, "h")
    check(out[1], out_ref[1], torch.float32, "c_T")
    for a, e in zip(g, g_ref, strict=True):
        check(a, e, torch.bfloat16, "grad")


def test_autotuned_path_fo_pool():
    tuning.clear_overrides()
    fo_compare(400, torch.bfloat16, use_o=True, use_c0=True)


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


def test_autotuned_path_sg_loss():
    tuning.clear_overrides()
    pred = torch.randn(N, device="cuda", requires_grad=True)
    target = torch.randn(N, device="cuda")
    loss = sg_mse_loss(pred, target, backend="triton")
    loss.backward()
    ref = sg_mse_loss_reference(pred.detach(), target)
    torch.testing.assert_close(loss.detach(), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(pred.grad, 2 * (pred.detach() - target) / N)


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
    forced("sg_loss", tuning.make_key(dtype, N))
    for k in ("elementwise_fwd", "elementwise_bwd"):
        forced(k, tuning.make_key(dtype, N) + (64,))
    f, z, o, c0 = (t.detach() for t in fo_inputs(H, dtype))
    dh, dc = torch.randn_like(f), torch.randn_like(c0)
    ins, mask = ew_inputs(dtype)
    ins = [t.detach() for t in ins]
    dy, dcs = torch.randn(N, device="cuda"), torch.randn(N, U, device="cuda")

    def step():
        h, c_last, cseq = fo_mod.fo_pool_forward(f, z, o, c0, save_c=True)
        fo_grads = fo_mod.fo_pool_backward(f, z, o, c0, cseq, dh, dc)
        loss, g = sg_mod.sg_mse_loss_forward(h, dh.to(dtype), want_grad=True)
        y, c = ew_mod.elementwise_forward(*ins, mask)
        ew_grads = ew_mod.elementwise_backward(*ins, mask, dy, dcs)
        return [h, c_last, *fo_grads, loss, g, y, c, *[t for t in ew_grads if t is not None]]

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
