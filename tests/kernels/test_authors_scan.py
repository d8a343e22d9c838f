"""The authors' synthesizer's scan (kernels/authors_synth.py): the Triton path (interpreter
or GPU) against the PyTorch reference, forward and every gradient (the gates' output and
c0), over N below one block, one block, ragged and many blocks, several carry tiles,
zoneout off, as a training mask and as the eval scale; and the synthesizer on the Triton
backend equal to the PyTorch one, window 1 and 2, across two calls (the carry)."""

import pytest
import torch
from altgrad_triton.kernels import authors_scan, authors_scan_reference, tuning
from altgrad_triton.kernels import authors_synth as mod

from altgrad_triton.core.synthesizers import AuthorsSynthesizer

TOL = {"atol": 1e-5, "rtol": 1e-5}

# (N, U): below one block, exactly one, ragged over three, many blocks at the real U
SHAPES = [(1, 3), (5, 4), (16, 4), (37, 5), (130, 50)]
ZONEOUT = ["off", "mask", "scale"]


@pytest.fixture
def small_carry(monkeypatch):
    """Carry-pass tiles of 4 blocks by 4 units, so that a few blocks span several tiles and
    unit blocks of the carry pass."""
    monkeypatch.setattr(mod, "CARRY_ROWS", 4)
    monkeypatch.setattr(mod, "CARRY_UNITS", 4)


def inputs(n, units, zoneout, c0=True, layout="contiguous", dtype=torch.float32):
    if layout == "contiguous":
        gates = torch.randn(n, 3 * units)
    else:  # the projection read through other strides: a slice of a wider, unit-major tensor
        gates = torch.randn(3 * units + 2, n).t()[:, 1 : 3 * units + 1]
    gates = gates.to(dtype).requires_grad_()
    start = torch.randn(units).requires_grad_() if c0 else None
    keep = (torch.rand(n, units) > 0.3).to(dtype) if zoneout == "mask" else None
    return gates, start, keep, (0.75 if zoneout == "scale" else 1.0)


def run(backend, gates, c0, keep, f_scale, up_h, up_c):
    """Outputs and the gradients of <h, up_h> + <c_N, up_c> (an upstream None: unused)."""
    h, c_last = authors_scan(gates, c0, keep, f_scale=f_scale, backend=backend)
    loss = sum((x * u).sum() for x, u in ((h, up_h), (c_last, up_c)) if u is not None)
    wrt = [t for t in (gates, c0) if t is not None]
    return (h, c_last), torch.autograd.grad(loss, wrt)


def check(got, want, tol=TOL):
    (outs, grads), (outs_ref, grads_ref) = got, want
    for name, x, r in zip(("h", "c_N"), outs, outs_ref, strict=True):
        assert x.dtype == r.dtype and x.shape == r.shape, name
        torch.testing.assert_close(x.float(), r.float(), **tol, msg=name)
    for name, x, r in zip(("d gates", "dc0"), grads, grads_ref, strict=False):
        assert x.dtype == r.dtype and x.shape == r.shape, name
        torch.testing.assert_close(x.float(), r.float(), **tol, msg=name)


@pytest.mark.parametrize("zoneout", ZONEOUT)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-U{s[1]}")
def test_triton_matches_reference(shape, zoneout, small_carry, nan_poison, triton_device):
    n, units = shape
    gates, c0, keep, f_scale = inputs(n, units, zoneout)
    up_h, up_c = torch.randn(n, units), torch.randn(units)
    got = run("triton", gates, c0, keep, f_scale, up_h, up_c)
    check(got, run("torch", gates, c0, keep, f_scale, up_h, up_c))


@pytest.mark.parametrize("used", ["h", "c_N"])
def test_one_output_unused_and_no_c0(used, small_carry, nan_poison, triton_device):
    """dh or dc_N absent (the kernel reads zeros), c0 None (zeros, no dc0), gates read
    through the strides of a slice."""
    gates, c0, keep, f_scale = inputs(37, 5, "mask", c0=False, layout="slice")
    up_h = torch.randn(37, 5) if used == "h" else None
    up_c = torch.randn(5) if used == "c_N" else None
    got = run("triton", gates, c0, keep, f_scale, up_h, up_c)
    check(got, run("torch", gates, c0, keep, f_scale, up_h, up_c))


@pytest.mark.parametrize("fwd_rows,bwd_rows", [(32, 16), (16, 64)])
def test_forward_and_backward_tiles_are_independent(fwd_rows, bwd_rows, nan_poison, triton_device):
    """The backward recomputes the forward's carries at its own block size."""
    gates, c0, keep, f_scale = inputs(100, 6, "mask")
    key = tuning.make_key(torch.float32, 100 * 6)
    fwd = {"BLOCK_N": fwd_rows, "BLOCK_U": 8, "num_warps": 2}
    bwd = {"BLOCK_N": bwd_rows, "BLOCK_U": 4, "num_warps": 2}
    up_h, up_c = torch.randn(100, 6), torch.randn(6)
    with tuning.overridden(key, authors_scan_fwd=fwd, authors_scan_bwd=bwd):
        got = run("triton", gates, c0, keep, f_scale, up_h, up_c)
    check(got, run("torch", gates, c0, keep, f_scale, up_h, up_c))


def test_bf16_gates(triton_device):
    """bf16 storage, fp32 arithmetic: against the reference run in fp32 on the same values."""
    gates, c0, keep, f_scale = inputs(40, 5, "mask", dtype=torch.bfloat16)
    up_h, up_c = torch.randn(40, 5), torch.randn(5)
    got = run("triton", gates, c0, keep, f_scale, up_h, up_c)
    g32 = gates.detach().float().requires_grad_()
    (h, c), (dg, dc0) = run("torch", g32, c0, keep.float(), f_scale, up_h, up_c)
    want = (h.bfloat16(), c), (dg.bfloat16(), dc0)
    check(got, want, {"atol": 2e-2, "rtol": 2e-2})


def test_reference_is_a_step_by_step_loop():
    """The oracle itself: c_n = (1 - f_n) c_{n-1} + f_n z_n, one row after another."""
    gates, c0, keep, f_scale = inputs(23, 3, "mask")
    z, f, o = gates.detach().chunk(3, dim=1)
    z, f, o = torch.tanh(z), torch.sigmoid(f) * keep, torch.sigmoid(o)
    c, hs = c0.detach(), []
    for n in range(23):
        c = (1 - f[n]) * c + f[n] * z[n]
        hs.append(o[n] * c)
    h, c_last = authors_scan_reference(gates, c0, keep)
    torch.testing.assert_close(h, torch.stack(hs), **TOL)
    torch.testing.assert_close(c_last, c, **TOL)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"gates": torch.zeros(4, 7)}, "gates must be a non-empty"),
        ({"c0": torch.zeros(3)}, "c0 must have shape"),
        ({"keep": torch.zeros(4, 3)}, "keep must have shape"),
        ({"f_scale": 1.5}, "f_scale must be in"),
        ({"gates": torch.zeros(4, 6, dtype=torch.int32)}, "gates has dtype"),
    ],
)
def test_bad_inputs_are_named(bad, match, triton_device):
    args = {"gates": torch.zeros(4, 6), "c0": None, "keep": None, "f_scale": 1.0, **bad}
    with pytest.raises(ValueError, match=match):
        authors_scan(args["gates"], args["c0"], args["keep"], f_scale=args["f_scale"],
                     backend="triton")  # fmt: skip


# ------------------------------------------------------------------------- the synthesizer


def synth_pair(window, zoneout, device):
    """The same synthesizer (weights and random streams) on each backend."""
    out = []
    for backend in ("torch", "triton"):
        synth = AuthorsSynthesizer(
            6, window=window, zoneout=zoneout, input_noise=0.5, backend=backend,
            generator=torch.Generator(device).manual_seed(5),
            init_generator=torch.Generator().manual_seed(4),
        )  # fmt: skip
        out.append(synth.to(device))
    return out


def two_calls(synth, s1, s2, train):
    """Two boundaries in a row (the second starts from the first's carry), then the
    gradients of every parameter and of both states."""
    synth.train(train)
    s1, s2 = s1.clone().requires_grad_(), s2.clone().requires_grad_()
    y1, carry = synth(s1, None)
    y2, carry = synth(s2, carry)
    c_last = carry if synth.window == 1 else carry[0]
    loss = (y1 * torch.arange(y1.numel()).view_as(y1)).sum() + y2.square().sum() + c_last.sum()
    grads = torch.autograd.grad(loss, [*synth.parameters(), s1, s2])
    return [y1, y2, c_last, *grads]


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("zoneout", [0.0, 0.25])
@pytest.mark.parametrize("window", [1, 2])
def test_synthesizer_on_triton_equals_torch(window, zoneout, train, triton_device, monkeypatch):
    launches = []
    real = mod.authors_scan_forward
    monkeypatch.setattr(mod, "authors_scan_forward", lambda *a: launches.append(1) or real(*a))
    s1, s2 = torch.randn(3, 7), torch.randn(3, 7)
    ref, tri = synth_pair(window, zoneout, triton_device)
    want = two_calls(ref, s1, s2, train)
    assert not launches  # the PyTorch synthesizer never reaches the kernels
    got = two_calls(tri, s1, s2, train)
    assert len(launches) == 2  # one scan per call, on the kernels
    for i, (x, r) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(x, r, atol=1e-5, rtol=1e-5, msg=f"output {i}")
