"""fo-pooling: Triton kernels (interpreter, or compiled on a GPU) against the reference.

Forward outputs and every gradient (f, z, o, c0) with random upstream gradients for both
outputs, over sizes with non-powers of two and length-1 sequences. Fresh allocations are
NaN-poisoned so an unwritten element fails.
"""

import sys

import pytest
import torch
from altgrad_triton.kernels import tuning
from altgrad_triton.kernels.fo_pool import fo_pool, fo_pool_reference

mod = sys.modules["altgrad_triton.kernels.fo_pool"]  # the module, not the function

# (atol, rtol) per storage dtype; the kernels accumulate in fp32 like the reference, so
# fp32 differs only by operation order; fp16 by the rounding of the stored outputs.
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3)}

# every value of B, T and H appears with every other's values once (a Latin square),
# each under all four (o, c0) signatures
SHAPES = [
    (1, 1, 1),
    (1, 7, 50),
    (1, 35, 130),
    (3, 1, 50),
    (3, 7, 130),
    (3, 35, 1),
    (20, 1, 130),
    (20, 7, 1),
    (20, 35, 50),
]
CASES = [
    pytest.param(
        B, T, H, torch.float32, use_o, use_c0,
        id=f"B{B}-T{T}-H{H}-float32-{'o' if use_o else 'no_o'}-{'c0' if use_c0 else 'no_c0'}",
    )
    for (B, T, H) in SHAPES
    for use_o in (True, False)
    for use_c0 in (True, False)
]  # fmt: skip


def make_inputs(T, B, H, dtype, use_o, use_c0, requires_grad=True):
    f = torch.rand(T, B, H).to(dtype).requires_grad_(requires_grad)
    z = torch.randn(T, B, H).to(dtype).requires_grad_(requires_grad)
    o = torch.rand(T, B, H).to(dtype).requires_grad_(requires_grad) if use_o else None
    c0 = torch.randn(B, H).to(dtype).requires_grad_(requires_grad) if use_c0 else None
    return f, z, o, c0


def run(fn, f, z, o, c0, dh, dc, **kw):
    """Outputs and the gradients of <h, dh> + <c_T, dc> w.r.t. every given input."""
    inputs = [t for t in (f, z, o, c0) if t is not None and t.requires_grad]
    h, c = fn(f, z, o, c0, **kw)
    loss = 0.0
    if dh is not None:
        loss = loss + (h.float() * dh).sum()
    if dc is not None:
        loss = loss + (c.float() * dc).sum()
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads, strict=True)]
    return h, c, grads


def upcast(*ts):
    return [None if t is None else t.detach().float().requires_grad_() for t in ts]


def check(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=what)


@pytest.mark.parametrize("B,T,H,dtype,use_o,use_c0", CASES)
def test_forward_and_every_gradient(B, T, H, dtype, use_o, use_c0, nan_poison, triton_device):
    f, z, o, c0 = make_inputs(T, B, H, dtype, use_o, use_c0)
    dh, dc = torch.randn(T, B, H), torch.randn(B, H)
    h, c, grads = run(fo_pool, f, z, o, c0, dh, dc, backend="triton")
    h_ref, c_ref, grads_ref = run(fo_pool_reference, *upcast(f, z, o, c0), dh, dc)
    check(h, h_ref, dtype, "h")
    check(c, c_ref, dtype, "c_T")
    names = [n for n, t in zip(["f", "z", "o", "c0"], (f, z, o, c0), strict=True) if t is not None]
    for name, g, g_ref in zip(names, grads, grads_ref, strict=True):
        assert g.dtype == dtype, name
        check(g, g_ref, dtype, f"d{name}")


@pytest.mark.parametrize("use_o", [True, False], ids=["o", "no_o"])
def test_float16_storage(use_o, nan_poison, triton_device):
    dtype = torch.float16
    f, z, o, c0 = make_inputs(9, 3, 50, dtype, use_o, True)
    dh, dc = torch.randn(9, 3, 50), torch.randn(3, 50)
    h, c, grads = run(fo_pool, f, z, o, c0, dh, dc, backend="triton")
    h_ref, c_ref, grads_ref = run(fo_pool_reference, *upcast(f, z, o, c0), dh, dc)
    assert h.dtype == c.dtype == dtype
    check(h, h_ref, dtype, "h")
    check(c, c_ref, dtype, "c_T")
    for g, g_ref in zip(grads, grads_ref, strict=True):
        check(g, g_ref, dtype, "grad")


def test_fp32_state_with_fp16_storage(nan_poison, triton_device):
    """An fp32 c0 (the cells carry c in fp32) gives an fp32 c_T, unrounded: it matches the
    fp32 reference at fp32 tolerance. h and df/dz/do are fp16; dc0 is fp32 but its upstream
    dh arrives in h's fp16, so it gets fp16 tolerance."""
    f, z, o, _ = make_inputs(9, 3, 50, torch.float16, True, False)
    c0 = torch.randn(3, 50).requires_grad_()
    dh, dc = torch.randn(9, 3, 50), torch.randn(3, 50)
    h, c, grads = run(fo_pool, f, z, o, c0, dh, dc, backend="triton")
    h_ref, c_ref, grads_ref = run(fo_pool_reference, *upcast(f, z, o, c0), dh, dc)
    assert (h.dtype, c.dtype, grads[-1].dtype) == (torch.float16, torch.float32, torch.float32)
    check(h, h_ref, torch.float16, "h")
    check(c, c_ref, torch.float32, "c_T")
    for name, g, g_ref in zip("fzo", grads[:3], grads_ref[:3], strict=True):
        assert g.dtype == torch.float16, name
        check(g, g_ref, torch.float16, f"d{name}")
    check(grads[-1], grads_ref[-1], torch.float16, "dc0")
    h_r, c_r = fo_pool_reference(f, z, o, c0)  # the reference keeps the same dtypes
    assert (h_r.dtype, c_r.dtype) == (torch.float16, torch.float32)


@pytest.mark.parametrize("which", ["only_h", "only_c"])
def test_unused_output_gets_none_gradient(which, nan_poison, triton_device):
    """An unused output's gradient arrives as None; the kernel must treat it as zeros."""
    f, z, o, c0 = make_inputs(7, 3, 50, torch.float32, True, True)
    dh = torch.randn(7, 3, 50) if which == "only_h" else None
    dc = torch.randn(3, 50) if which == "only_c" else None
    _, _, grads = run(fo_pool, f, z, o, c0, dh, dc, backend="triton")
    _, _, grads_ref = run(fo_pool_reference, *upcast(f, z, o, c0), dh, dc)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        check(g, g_ref, torch.float32, "grad")


def test_strided_views_from_one_projection(nan_poison, triton_device):
    """z, f, o as ``chunk`` views of a [T, B, 3H] projection are read in place."""
    T, B, H = 7, 3, 50
    proj = torch.rand(T, B, 3 * H)  # values in (0, 1): fine for every gate
    z, f, o = (t.requires_grad_() for t in proj.chunk(3, dim=-1))
    c0 = torch.randn(B, H, requires_grad=True)
    assert not (f.is_contiguous() or z.is_contiguous() or o.is_contiguous())
    dh, dc = torch.randn(T, B, H), torch.randn(B, H)
    h, c, grads = run(fo_pool, f, z, o, c0, dh, dc, backend="triton")
    ref = upcast(f.contiguous(), z.contiguous(), o.contiguous(), c0)
    h_ref, c_ref, grads_ref = run(fo_pool_reference, *ref, dh, dc)
    check(h, h_ref, torch.float32, "h")
    check(c, c_ref, torch.float32, "c_T")
    for g, g_ref in zip(grads, grads_ref, strict=True):
        check(g, g_ref, torch.float32, "grad")


def test_c0_without_grad_and_inference_path(nan_poison, triton_device):
    f, z, o, _ = make_inputs(5, 3, 50, torch.float32, True, False)
    c0 = torch.randn(3, 50)  # no grad wanted: the kernel skips dc0
    dh, dc = torch.randn(5, 3, 50), torch.randn(3, 50)
    _, _, grads = run(fo_pool, f, z, o, c0, dh, dc, backend="triton")
    _, _, grads_ref = run(fo_pool_reference, *upcast(f, z, o), c0, dh, dc)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        check(g, g_ref, torch.float32, "grad")
    with torch.no_grad():
        h, c = fo_pool(f, z, o, c0, backend="triton")
    h_ref, c_ref = fo_pool_reference(f, z, o, c0)
    assert h.grad_fn is None
    check(h, h_ref, torch.float32, "h")
    check(c, c_ref, torch.float32, "c_T")


def test_forced_config_through_the_tuning_seam(monkeypatch, nan_poison, triton_device):
    """An override (as altgrad-tune would set) replaces the heuristic: 16-column programs."""
    T, B, H = 4, 3, 50
    monkeypatch.setattr(mod, "_heuristic", lambda bh: pytest.fail("heuristic used"))
    key = tuning.make_key(torch.float32, B * H)
    try:
        tuning.set_override("fo_pool_fwd", key, {"BLOCK": 16, "num_warps": 1})
        tuning.set_override("fo_pool_bwd", key, {"BLOCK": 32, "num_warps": 1})
        f, z, o, c0 = make_inputs(T, B, H, torch.float32, True, True)
        dh, dc = torch.randn(T, B, H), torch.randn(B, H)
        h, c, grads = run(fo_pool, f, z, o, c0, dh, dc, backend="triton")
    finally:
        tuning.clear_overrides()
    h_ref, c_ref, grads_ref = run(fo_pool_reference, *upcast(f, z, o, c0), dh, dc)
    check(h, h_ref, torch.float32, "h")
    check(c, c_ref, torch.float32, "c_T")
    for g, g_ref in zip(grads, grads_ref, strict=True):
        check(g, g_ref, torch.float32, "grad")


def test_config_candidates():
    metas = mod.configs_fo_pool_fwd()
    assert metas and metas == tuning.candidates("fo_pool_fwd")
    for m in metas:
        assert m["BLOCK"] & (m["BLOCK"] - 1) == 0
        assert 1 <= m["BLOCK"] // (32 * m["num_warps"]) <= 4
    assert mod.configs_fo_pool_bwd() == tuning.candidates("fo_pool_bwd")


def test_reference_gradcheck_float64():
    """The reference computes in fp32 by contract, so finite differences use eps=1e-3."""
    T, B, H = 3, 2, 3
    f = torch.rand(T, B, H, dtype=torch.float64, requires_grad=True)
    z = torch.randn(T, B, H, dtype=torch.float64, requires_grad=True)
    o = torch.rand(T, B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        fo_pool_reference, (f, z, o, c0), eps=1e-3, atol=1e-3, rtol=1e-3
    )
    assert torch.autograd.gradcheck(
        lambda f, z: fo_pool_reference(f, z, None, None), (f, z), eps=1e-3, atol=1e-3, rtol=1e-3
    )


def test_torch_backend_is_the_reference():
    f, z, o, c0 = make_inputs(5, 3, 7, torch.float32, True, True)
    h, c = fo_pool(f, z, o, c0, backend="torch")
    h_ref, c_ref = fo_pool_reference(f, z, o, c0)
    assert torch.equal(h, h_ref) and torch.equal(c, c_ref)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_cpu_tensors_take_the_reference_path(backend, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("Triton path taken")

    monkeypatch.setattr(mod, "fo_pool_forward", boom)
    f, z, o, c0 = make_inputs(5, 3, 7, torch.float32, True, True)
    h, c = fo_pool(f, z, o, c0, backend=backend)
    h_ref, c_ref = fo_pool_reference(f, z, o, c0)
    assert torch.equal(h, h_ref) and torch.equal(c, c_ref)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"z": torch.rand(4, 3, 6)}, r"z must have shape \(4, 3, 5\)"),
        ({"o": torch.rand(4, 3)}, r"o must have shape \(4, 3, 5\)"),
        ({"c0": torch.rand(3, 6)}, r"c0 must have shape \(3, 5\)"),
        ({"z": torch.rand(4, 3, 5, dtype=torch.float64)}, r"z has dtype torch.float64; allowed"),
        ({"c0": torch.rand(3, 5).half()}, r"c0 has dtype torch.float16, must match"),
        ({"f": torch.rand(3, 5)}, r"f must be \[T, B, H\], got shape \(3, 5\)"),
        ({"f": torch.ones(4, 3, 5, dtype=torch.int32)}, r"f has dtype torch.int32; allowed"),
        ({"f": torch.rand(0, 3, 5), "z": torch.rand(0, 3, 5)}, r"f must be non-empty"),
    ],
    ids=["z-shape", "o-shape", "c0-shape", "z-dtype", "c0-dtype", "f-rank", "f-int", "empty"],
)
def test_clear_value_errors(kwargs, match, triton_device):
    args = {"f": torch.rand(4, 3, 5), "z": torch.rand(4, 3, 5), "o": None, "c0": None}
    args.update({k: v.to(triton_device) for k, v in kwargs.items()})
    with pytest.raises(ValueError, match=match):
        fo_pool(args["f"], args["z"], args["o"], args["c0"], backend="triton")
