"""Element-wise QRNN synthesizer step: Triton kernels (interpreter or GPU) vs the reference.

Forward (y, c) and every gradient (x, c_prev, w, b, v, b_out) with random upstream
gradients for y and c; U = 50 pads to 64 columns, U = 1 to 2; N = 300 runs several
backward programs, each over more than one row tile.
"""

import pytest
import torch
from altgrad_triton.kernels import elementwise as mod
from altgrad_triton.kernels import tuning
from altgrad_triton.kernels.elementwise import (
    elementwise_qrnn_synth,
    elementwise_qrnn_synth_reference,
)

# (atol, rtol) per dtype; weight gradients are sums over N rows in a different order
TOL = {torch.float32: (2e-5, 1e-5), torch.float16: (3e-3, 3e-3)}
NAMES = ("x", "c_prev", "w", "b", "v", "b_out")


def make_inputs(n, u, with_mask, dtype=torch.float32, wdtype=torch.float32):
    x = torch.randn(n).to(dtype).requires_grad_()
    c_prev = torch.randn(n, u).to(dtype).requires_grad_()
    w = torch.randn(3, u).to(wdtype).requires_grad_()
    b = torch.randn(3, u).to(wdtype).requires_grad_()
    v = torch.randn(u).to(wdtype).requires_grad_()
    b_out = torch.randn(1).to(wdtype).requires_grad_()
    mask = ((torch.rand(n, u) > 0.1).float() / 0.9).to(dtype) if with_mask else None
    return [x, c_prev, w, b, v, b_out], mask


def run(fn, inputs, mask, dy, dc, **kw):
    y, c = fn(*inputs, mask, **kw)
    loss = 0.0
    if dy is not None:
        loss = loss + (y.float() * dy).sum()
    if dc is not None:
        loss = loss + (c.float() * dc).sum()
    wanted = [t for t in inputs if t.requires_grad]
    grads = torch.autograd.grad(loss, wanted, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(wanted, grads, strict=True)]
    return y, c, grads


def upcast(inputs):
    return [t.detach().float().requires_grad_(t.requires_grad) for t in inputs]


def check(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=what)


CASES = [
    pytest.param(n, u, m, id=f"N{n}-U{u}-float32-{'mask' if m else 'no_mask'}")
    for n in (1, 37, 300)
    for u in (1, 50)
    for m in (True, False)
]


@pytest.mark.parametrize("n,u,with_mask", CASES)
def test_forward_and_every_gradient(n, u, with_mask, nan_poison, triton_device):
    inputs, mask = make_inputs(n, u, with_mask)
    dy, dc = torch.randn(n), torch.randn(n, u)
    y, c, grads = run(elementwise_qrnn_synth, inputs, mask, dy, dc, backend="triton")
    y_ref, c_ref, grads_ref = run(elementwise_qrnn_synth_reference, upcast(inputs), mask, dy, dc)
    check(y, y_ref, torch.float32, "y")
    check(c, c_ref, torch.float32, "c")
    for name, t, g, g_ref in zip(NAMES, inputs, grads, grads_ref, strict=True):
        assert g.dtype == t.dtype and g.shape == t.shape, name
        check(g, g_ref, torch.float32, f"d{name}")


@pytest.mark.parametrize("which", ["only_y", "only_c"])
def test_unused_output_gets_none_gradient(which, nan_poison, triton_device):
    inputs, mask = make_inputs(37, 50, True)
    dy = torch.randn(37) if which == "only_y" else None
    dc = torch.randn(37, 50) if which == "only_c" else None
    _, _, grads = run(elementwise_qrnn_synth, inputs, mask, dy, dc, backend="triton")
    _, _, grads_ref = run(elementwise_qrnn_synth_reference, upcast(inputs), mask, dy, dc)
    for name, g, g_ref in zip(NAMES, grads, grads_ref, strict=True):
        check(g, g_ref, torch.float32, f"d{name}")


def test_detached_state_skips_dc_prev(nan_poison, triton_device):
    """The carried state usually needs no gradient: dc_prev is then never written."""
    inputs, mask = make_inputs(37, 50, False)
    inputs[1] = inputs[1].detach()
    dy, dc = torch.randn(37), torch.randn(37, 50)
    _, _, grads = run(elementwise_qrnn_synth, inputs, mask, dy, dc, backend="triton")
    _, _, grads_ref = run(elementwise_qrnn_synth_reference, upcast(inputs), mask, dy, dc)
    assert len(grads) == 5
    for g, g_ref in zip(grads, grads_ref, strict=True):
        check(g, g_ref, torch.float32, "grad")


def test_float16_state_with_float32_weights(nan_poison, triton_device):
    inputs, mask = make_inputs(37, 50, True, dtype=torch.float16)
    dy, dc = torch.randn(37), torch.randn(37, 50)
    y, c, grads = run(elementwise_qrnn_synth, inputs, mask, dy, dc, backend="triton")
    y_ref, c_ref, grads_ref = run(elementwise_qrnn_synth_reference, upcast(inputs), mask, dy, dc)
    assert y.dtype == c.dtype == torch.float16
    check(y, y_ref, torch.float16, "y")
    check(c, c_ref, torch.float16, "c")
    for name, t, g, g_ref in zip(NAMES, inputs, grads, grads_ref, strict=True):
        assert g.dtype == t.dtype, name
        check(g, g_ref, torch.float16, f"d{name}")


def test_forced_configs_and_determinism(monkeypatch, nan_poison, triton_device):
    """Forced tiles: 16-row forward programs, 8-row backward tiles (10 per program)."""
    monkeypatch.setattr(mod, "_heuristic", lambda n: pytest.fail("heuristic used"))
    n, u = 300, 50
    inputs, mask = make_inputs(n, u, True)
    dy, dc = torch.randn(n), torch.randn(n, u)
    key = tuning.make_key(torch.float32, n) + (64,)
    try:
        tuning.set_override("elementwise_fwd", key, {"BLOCK_N": 16, "num_warps": 2})
        tuning.set_override("elementwise_bwd", key, {"BLOCK_N": 8, "num_warps": 2})
        y, c, grads = run(elementwise_qrnn_synth, inputs, mask, dy, dc, backend="triton")
        _, _, again = run(elementwise_qrnn_synth, inputs, mask, dy, dc, backend="triton")
    finally:
        tuning.clear_overrides()
    y_ref, c_ref, grads_ref = run(elementwise_qrnn_synth_reference, upcast(inputs), mask, dy, dc)
    check(y, y_ref, torch.float32, "y")
    check(c, c_ref, torch.float32, "c")
    for name, g, g2, g_ref in zip(NAMES, grads, again, grads_ref, strict=True):
        check(g, g_ref, torch.float32, f"d{name}")
        assert torch.equal(g, g2), f"d{name} not bit-reproducible"


def test_inference_path(nan_poison, triton_device):
    inputs, mask = make_inputs(37, 50, True)
    with torch.no_grad():
        y, c = elementwise_qrnn_synth(*inputs, mask, backend="triton")
    y_ref, c_ref = elementwise_qrnn_synth_reference(*inputs, mask)
    assert y.grad_fn is None
    check(y, y_ref, torch.float32, "y")
    check(c, c_ref, torch.float32, "c")


def test_config_candidates():
    for name, fn in (
        ("elementwise_fwd", mod.configs_elementwise_fwd),
        ("elementwise_bwd", mod.configs_elementwise_bwd),
    ):
        metas = fn()
        assert metas == tuning.candidates(name)
        assert all(m["BLOCK_N"] & (m["BLOCK_N"] - 1) == 0 for m in metas)


def test_reference_gradcheck_float64():
    """The reference computes in fp32 by contract, so finite differences use eps=1e-3."""
    torch.manual_seed(1)
    n, u = 4, 3
    args = [
        torch.randn(n, dtype=torch.float64),
        torch.randn(n, u, dtype=torch.float64),
        torch.randn(3, u, dtype=torch.float64),
        torch.randn(3, u, dtype=torch.float64),
        torch.randn(u, dtype=torch.float64),
        torch.randn(1, dtype=torch.float64),
    ]
    args = [a.requires_grad_() for a in args]
    mask = (torch.rand(n, u, dtype=torch.float64) > 0.3).double() / 0.7
    assert torch.autograd.gradcheck(
        lambda *a: elementwise_qrnn_synth_reference(*a, mask),
        tuple(args),
        eps=1e-3,
        atol=2e-3,
        rtol=2e-3,
    )


def test_torch_backend_is_the_reference():
    inputs, mask = make_inputs(37, 50, True)
    y, c = elementwise_qrnn_synth(*inputs, mask, backend="torch")
    y_ref, c_ref = elementwise_qrnn_synth_reference(*inputs, mask)
    assert torch.equal(y, y_ref) and torch.equal(c, c_ref)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_cpu_tensors_take_the_reference_path(backend, monkeypatch):
    monkeypatch.setattr(mod, "elementwise_forward", lambda *a, **k: pytest.fail("Triton used"))
    inputs, mask = make_inputs(37, 50, False)
    y, c = elementwise_qrnn_synth(*inputs, mask, backend=backend)
    y_ref, c_ref = elementwise_qrnn_synth_reference(*inputs, mask)
    assert torch.equal(y, y_ref) and torch.equal(c, c_ref)


@pytest.mark.parametrize(
    "index, value, match",
    [
        (1, torch.rand(5, 3), r"c_prev must be \[N=4, U\], got \(5, 3\)"),
        (2, torch.rand(3, 4), r"w must have shape \(3, 3\), got \(3, 4\)"),
        (4, torch.rand(3, 1), r"v must have shape \(3,\), got \(3, 1\)"),
        (5, torch.rand(2), r"b_out must have shape \(1,\), got \(2,\)"),
        (6, torch.rand(4, 2), r"dropout_mask must have shape \(4, 3\), got \(4, 2\)"),
        (1, torch.rand(4, 3).half(), r"c_prev has dtype torch.float16, must match x's"),
        (3, torch.rand(3, 3).half(), r"b has dtype torch.float16, must match w's"),
        (0, torch.ones(4, dtype=torch.int32), r"x has dtype torch.int32; allowed"),
        (0, torch.rand(4, 1), r"x must be \[N\] with N >= 1, got \(4, 1\)"),
    ],
    ids=["c_prev-shape", "w-shape", "v-shape", "b_out-shape", "mask-shape", "c_prev-dtype",
         "b-dtype", "x-int", "x-rank"],
)  # fmt: skip
def test_clear_value_errors(index, value, match, triton_device):
    args = [torch.rand(4), torch.rand(4, 3), torch.rand(3, 3), torch.rand(3, 3), torch.rand(3)]
    args += [torch.rand(1), None]
    args[index] = value.to(triton_device)
    with pytest.raises(ValueError, match=match):
        elementwise_qrnn_synth(*args, backend="triton")
