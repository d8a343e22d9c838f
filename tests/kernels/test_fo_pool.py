"""fo-pooling with fused gates: Triton kernels (interpreter, or compiled on a GPU) against
the reference.

Forward outputs and every gradient (the whole [T, B, 3H] projection and c0) with random
upstream gradients for both outputs; sequence lengths that end mid-chunk, a hidden size that
is not a multiple of the block, strided projections, and cells.QRNN (window 1 and 2) end to
end. Fresh allocations are NaN-poisoned so an unwritten element fails. The interpreter scans
tiles element by element, so shapes stay tiny: B=2, H=5 over blocks of 4 units.
"""

import pytest
import torch
from altgrad_triton.kernels import fo_pooling as mod
from altgrad_triton.kernels import tuning
from altgrad_triton.kernels.fo_pooling import fo_pool, fo_pool_reference

from altgrad_triton.core.cells import QRNN

# (atol, rtol) per storage dtype; activations and scan run in fp32 like the reference, so
# fp32 differs only by operation order; fp16 by the rounding of the stored outputs.
TOL = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3)}
B, H, BLOCK_H = 2, 5, 4  # two blocks of hidden units, the second one ragged


def make_gates(T, b, h, output_gate, dtype=torch.float32, layout="contiguous"):
    """A [T, b, G*h] projection, scaled so the gates are neither saturated nor all 1/2:
    contiguous, a column slice of a wider tensor, or batch-major and transposed."""
    g = 3 if output_gate else 2
    if layout == "slice":
        gates = (2 * torch.randn(T, b, g * h + 7)).to(dtype)[:, :, 3 : 3 + g * h]
    elif layout == "batch_major":
        gates = (2 * torch.randn(b, T, g * h)).to(dtype).transpose(0, 1)
    else:
        gates = (2 * torch.randn(T, b, g * h)).to(dtype)
    assert gates.is_contiguous() == (layout == "contiguous")
    return gates.requires_grad_()


def run(fn, gates, c0, dh, dc, **kw):
    """Outputs and the gradients of <h, dh> + <c_T, dc> w.r.t. every input needing one."""
    inputs = [t for t in (gates, c0) if t is not None and t.requires_grad]
    h, c = fn(gates, c0, **kw)
    loss = 0.0
    if dh is not None:
        loss = loss + (h.float() * dh).sum()
    if dc is not None:
        loss = loss + (c.float() * dc).sum()
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads, strict=True)]
    return h, c, grads


def upcast(*ts):
    return [None if t is None else t.detach().float().requires_grad_(t.requires_grad) for t in ts]


def check(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=what)


def compare(gates, c0, *, output_gate, dh=True, dc=True, dtype=torch.float32):
    """Triton path vs the fp32 reference on upcast inputs: h, c_T, d gates, dc0."""
    T, b, _ = gates.shape
    h_dim = gates.shape[-1] // (3 if output_gate else 2)
    dh = torch.randn(T, b, h_dim) if dh else None
    dc = torch.randn(b, h_dim) if dc else None
    out = run(fo_pool, gates, c0, dh, dc, output_gate=output_gate, backend="triton")
    ref = run(fo_pool_reference, *upcast(gates, c0), dh, dc, output_gate=output_gate)
    check(out[0], ref[0], dtype, "h")
    check(out[1], ref[1], dtype, "c_T")
    names = ["gates", "c0"][: len(out[2])]
    for name, g, g_ref in zip(names, out[2], ref[2], strict=True):
        check(g, g_ref, dtype, f"d{name}")
    return out


@pytest.fixture
def force():
    """Force the forward's and the backward's configs for one (dtype, B*H) key."""

    def set_(chunk, bwd_chunk=None, b=B, h=H, block=BLOCK_H, dtype=torch.float32):
        key = tuning.make_key(dtype, b * h)
        tuning.set_override("fo_pool_fwd", key, {"BLOCK_H": block, "CHUNK": chunk, "num_warps": 1})
        bwd = {"BLOCK_H": block, "CHUNK": bwd_chunk or chunk, "num_warps": 1}
        tuning.set_override("fo_pool_bwd", key, bwd)

    yield set_
    tuning.clear_overrides()


# every T with every chunk length; the four (output gate, c0) signatures twice each; and
# the projection's three layouts spread over them
CASES = [
    (1, 4, True, True, "contiguous"),
    (1, 8, False, False, "slice"),
    (5, 4, False, True, "batch_major"),
    (5, 8, True, False, "contiguous"),
    (17, 4, True, False, "slice"),
    (17, 8, False, True, "contiguous"),
    (33, 4, False, False, "contiguous"),
    (33, 8, True, True, "batch_major"),
]


@pytest.mark.parametrize(
    "T, chunk, output_gate, use_c0, layout",
    [
        pytest.param(
            *c,
            id=f"T{c[0]}-chunk{c[1]}-B{B}-H{H}-float32-{'o' if c[2] else 'no_o'}"
            f"-{'c0' if c[3] else 'no_c0'}-{c[4]}",
        )
        for c in CASES
    ],
)
def test_forward_and_every_gradient(
    T, chunk, output_gate, use_c0, layout, force, nan_poison, triton_device
):
    force(chunk)
    gates = make_gates(T, B, H, output_gate, layout=layout)
    c0 = torch.randn(B, H, requires_grad=True) if use_c0 else None
    h, c, grads = compare(gates, c0, output_gate=output_gate)
    assert h.dtype == c.dtype == torch.float32 and h.shape == (T, B, H)
    assert grads[0].shape == gates.shape and grads[0].is_contiguous()


@pytest.mark.parametrize(
    "fwd_chunk, bwd_chunk", [(4, 8), (8, 4)], ids=["bwd-longer", "bwd-shorter-runs-at-fwd"]
)
def test_backward_chunk_differs_from_checkpoint_spacing(
    fwd_chunk, bwd_chunk, force, nan_poison, triton_device
):
    """The backward starts its chunks on the forward's checkpoints: a longer chunk spans
    several, a shorter one runs at the forward's spacing."""
    force(fwd_chunk, bwd_chunk)
    compare(make_gates(19, B, H, True), torch.randn(B, H, requires_grad=True), output_gate=True)


def test_checkpoints_are_c_at_chunk_starts(force, nan_poison, triton_device):
    force(4)
    gates = make_gates(10, B, H, True).detach()
    c0 = torch.randn(B, H)
    _, _, ckpt, chunk = mod.fo_pool_forward(gates, c0, save=True)
    assert chunk == 4 and ckpt.dtype == torch.float32 and ckpt.shape[0] >= 3
    z, f = torch.tanh(gates[..., :H]), torch.sigmoid(gates[..., H : 2 * H])
    c, starts = c0, []
    for t in range(10):
        if t % 4 == 0:
            starts.append(c)
        c = f[t] * c + (1 - f[t]) * z[t]
    torch.testing.assert_close(ckpt[:3], torch.stack(starts), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("output_gate", [True, False], ids=["o", "no_o"])
def test_float16_storage(output_gate, nan_poison, triton_device):
    dtype = torch.float16
    gates = make_gates(9, 3, 6, output_gate, dtype=dtype)
    c0 = torch.randn(3, 6).to(dtype).requires_grad_()
    h, c, grads = compare(gates, c0, output_gate=output_gate, dtype=dtype)
    assert h.dtype == c.dtype == dtype and all(g.dtype == dtype for g in grads)


def test_fp32_state_with_fp16_storage(nan_poison, triton_device):
    """An fp32 c0 (the cells carry c in fp32) gives an fp32 c_T, unrounded: it matches the
    fp32 reference at fp32 tolerance. h and d gates are fp16; dc0 is fp32 but its upstream
    dh arrives in h's fp16, so it gets fp16 tolerance."""
    gates = make_gates(9, 3, 6, True, dtype=torch.float16)
    c0 = torch.randn(3, 6, requires_grad=True)
    dh, dc = torch.randn(9, 3, 6), torch.randn(3, 6)
    h, c, grads = run(fo_pool, gates, c0, dh, dc, backend="triton")
    h_ref, c_ref, grads_ref = run(fo_pool_reference, *upcast(gates, c0), dh, dc)
    assert (h.dtype, c.dtype) == (torch.float16, torch.float32)
    assert (grads[0].dtype, grads[1].dtype) == (torch.float16, torch.float32)
    check(h, h_ref, torch.float16, "h")
    check(c, c_ref, torch.float32, "c_T")
    check(grads[0], grads_ref[0], torch.float16, "dgates")
    check(grads[1], grads_ref[1], torch.float16, "dc0")
    h_r, c_r = fo_pool_reference(gates, c0)  # the reference keeps the same dtypes
    assert (h_r.dtype, c_r.dtype) == (torch.float16, torch.float32)


@pytest.mark.parametrize("which", ["only_h", "only_c"])
def test_unused_output_gets_none_gradient(which, nan_poison, triton_device):
    """An unused output's gradient arrives as None; the kernel must treat it as zeros."""
    gates = make_gates(7, B, H, True)
    c0 = torch.randn(B, H, requires_grad=True)
    compare(gates, c0, output_gate=True, dh=which == "only_h", dc=which == "only_c")


def test_c0_without_grad_and_inference_path(nan_poison, triton_device):
    gates = make_gates(5, B, H, True)
    c0 = torch.randn(B, H)  # no grad wanted: the kernel skips dc0
    compare(gates, c0, output_gate=True)
    with torch.no_grad():
        h, c = fo_pool(gates, c0, backend="triton")
    h_ref, c_ref = fo_pool_reference(gates, c0)
    assert h.grad_fn is None
    check(h, h_ref, torch.float32, "h")
    check(c, c_ref, torch.float32, "c_T")


@pytest.mark.parametrize("window", [1, 2])
@pytest.mark.parametrize("output_gate", [True, False], ids=["o", "no_o"])
def test_qrnn_layer_triton_equals_torch(window, output_gate, nan_poison, triton_device):
    """cells.QRNN end to end: one GEMM, then the fused kernel reading its output in place;
    outputs, carried state and every gradient (weights, input, state) as the torch path."""
    T, b, n_in, n_hid = 6, 2, 3, 5
    torch.manual_seed(3)
    layers = {
        backend: QRNN(n_in, n_hid, window=window, output_gate=output_gate, backend=backend)
        for backend in ("triton", "torch")
    }
    layers["torch"].load_state_dict(layers["triton"].state_dict())
    x = torch.randn(T, b, n_in)
    state = tuple(torch.randn_like(s) for s in layers["torch"].init_state(b, x.device))
    results = {}
    for backend, layer in layers.items():
        xs = x.clone().requires_grad_()
        st = tuple(s.clone().requires_grad_() for s in state)
        h, new = layer(xs, st)
        loss = (h * torch.linspace(-1, 1, h.numel()).view_as(h)).sum() + new[0].square().sum()
        if window == 2:
            loss = loss + new[1].sum()
        leaves = [xs, *st, *layer.parameters()]
        results[backend] = [h, *new, *torch.autograd.grad(loss, leaves)]
    assert [t.shape for t in results["triton"]] == [t.shape for t in results["torch"]]
    for a, e in zip(results["triton"], results["torch"], strict=True):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)


def test_forced_config_through_the_tuning_seam(monkeypatch, force, nan_poison, triton_device):
    """An override (as altgrad-tune would set) replaces the heuristic."""
    monkeypatch.setattr(mod, "_heuristic", lambda *a: pytest.fail("heuristic used"))
    force(4, block=8)
    compare(make_gates(6, B, H, True), torch.randn(B, H, requires_grad=True), output_gate=True)


def test_heuristic_pads_time_least():
    assert [mod._heuristic(t, 5)["CHUNK"] for t in (1, 5, 8, 12, 16, 33)] == [4, 8, 8, 4, 16, 4]
    assert mod._heuristic(200, 1550)["BLOCK_H"] == 64 and mod._heuristic(1, 3)["BLOCK_H"] == 4


def test_config_candidates():
    fwd, bwd = mod.configs_fo_pool_fwd(), mod.configs_fo_pool_bwd()
    assert fwd == tuning.candidates("fo_pool_fwd") and bwd == tuning.candidates("fo_pool_bwd")
    longest = max(m["CHUNK"] for m in fwd)  # a backward tile runs max(CHUNK, this) steps
    for metas, (least, most), floor in ((fwd, (8, 16), 0), (bwd, (4, 8), longest)):
        assert {m["CHUNK"] for m in metas} == set(mod.CHUNKS)
        for m in metas:
            steps = max(m["CHUNK"], floor)
            assert m["BLOCK_H"] & (m["BLOCK_H"] - 1) == 0 and m["CHUNK"] in mod.CHUNKS
            assert least <= m["BLOCK_H"] * steps // (32 * m["num_warps"]) <= most


def test_reference_gradcheck_float64():
    """The reference computes in fp32 by contract, so finite differences use eps=1e-3."""
    gates = torch.randn(3, 2, 9, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    tol = {"eps": 1e-3, "atol": 1e-3, "rtol": 1e-3}
    assert torch.autograd.gradcheck(fo_pool_reference, (gates, c0), **tol)
    two = gates[..., :6].detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda g: fo_pool_reference(g, None, output_gate=False), (two,), **tol
    )


def test_reference_is_the_qrnn_recurrence():
    """The reference against the definition, written out once more step by step."""
    gates = torch.randn(4, 2, 9)
    c0 = torch.randn(2, 3)
    z, f, o = torch.tanh(gates[..., :3]), torch.sigmoid(gates[..., 3:6]), gates[..., 6:]
    c, hs = c0, []
    for t in range(4):
        c = f[t] * c + (1 - f[t]) * z[t]
        hs.append(torch.sigmoid(o[t]) * c)
    h, c_last = fo_pool_reference(gates, c0)
    torch.testing.assert_close(h, torch.stack(hs))
    torch.testing.assert_close(c_last, c)


def test_torch_backend_is_the_reference():
    gates, c0 = torch.randn(5, 3, 21), torch.randn(3, 7)
    h, c = fo_pool(gates, c0, backend="torch")
    h_ref, c_ref = fo_pool_reference(gates, c0)
    assert torch.equal(h, h_ref) and torch.equal(c, c_ref)


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_cpu_tensors_take_the_reference_path(backend, monkeypatch):
    monkeypatch.setattr(mod, "fo_pool_forward", lambda *a, **k: pytest.fail("Triton used"))
    gates, c0 = torch.randn(5, 3, 14), torch.randn(3, 7)
    h, c = fo_pool(gates, c0, output_gate=False, backend=backend)
    h_ref, c_ref = fo_pool_reference(gates, c0, output_gate=False)
    assert torch.equal(h, h_ref) and torch.equal(c, c_ref)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"gates": torch.rand(4, 3, 16)}, r"last dimension must be 3 x hidden size .*, got 16"),
        ({"c0": torch.rand(3, 6)}, r"c0 must have shape \(3, 5\)"),
        ({"gates": torch.rand(4, 3, 15, dtype=torch.float64)}, r"gates has dtype torch.float64"),
        ({"c0": torch.rand(3, 5).half()}, r"c0 has dtype torch.float16, must match"),
        ({"gates": torch.rand(3, 15)}, r"gates must be \[T, B, 3H\], got shape \(3, 15\)"),
        ({"gates": torch.ones(4, 3, 15, dtype=torch.int32)}, r"gates has dtype torch.int32"),
        ({"gates": torch.rand(0, 3, 15)}, r"gates must be non-empty"),
    ],
    ids=["width", "c0-shape", "gates-dtype", "c0-dtype", "gates-rank", "gates-int", "empty"],
)
def test_clear_value_errors(kwargs, match, triton_device):
    args = {"gates": torch.rand(4, 3, 15), "c0": None}
    args.update({k: v.to(triton_device) for k, v in kwargs.items()})
    with pytest.raises(ValueError, match=match):
        fo_pool(args["gates"], args["c0"], backend="triton")
