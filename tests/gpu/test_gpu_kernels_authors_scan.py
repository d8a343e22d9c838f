"""The authors' synthesizer's scan on a real GPU at the paper's shape (N = batch 20 x a
joined state of 5,450 = 109,000 rows, U = 50 units), fp32 with a zoneout mask: the default
tiles and every forward and backward candidate against the PyTorch reference run in
float64 on the same inputs (h, c_N and the gradients of the gates and c0); and the whole
``AuthorsSynthesizer`` on the Triton backend against the PyTorch one.

Errors are norm-relative (||a - b|| / ||b||). The scan contracts (its a = 1 - f lies in
[0, 1]), so fp32 rounding does not grow along the 109,000 steps; 1e-5 is the bound.

Run on a CUDA machine: ``pytest tests/gpu``. Not run yet on a GPU.
"""

import pytest
import torch
from altgrad_triton.kernels import authors_scan, authors_scan_reference, interpreting, tuning

from altgrad_triton.core.synthesizers import AuthorsSynthesizer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.skipif(interpreting(), reason="TRITON_INTERPRET=1: far too slow at this shape"),
]

B, D, U = 20, 5450, 50
N = B * D
BOUND = 1e-5


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.fixture(scope="module")
def case():
    g = torch.Generator(device="cuda").manual_seed(0)
    gates = torch.randn(N, 3 * U, device="cuda", generator=g)
    c0 = torch.randn(U, device="cuda", generator=g)
    keep = torch.empty(N, U, device="cuda").bernoulli_(0.9, generator=g)
    up_h = torch.randn(N, U, device="cuda", generator=g)
    up_c = torch.randn(U, device="cuda", generator=g)
    want = run(authors_scan_reference, gates.double(), c0.double(), keep.double(), up_h, up_c)
    return gates, c0, keep, up_h, up_c, want


def run(fn, gates, c0, keep, up_h, up_c, **kw):
    gates, c0 = gates.clone().requires_grad_(), c0.clone().requires_grad_()
    h, c_last = fn(gates, c0, keep, **kw)
    loss = (h * up_h.to(h.dtype)).sum() + (c_last * up_c.to(h.dtype)).sum()
    return [h, c_last, *torch.autograd.grad(loss, (gates, c0))]


def check(got, want):
    for name, x, r in zip(("h", "c_N", "d gates", "dc0"), got, want, strict=True):
        assert x.dtype == torch.float32, name
        assert rel(x, r) < BOUND, (name, rel(x, r))


def test_default_tiles_match_the_reference(case):
    gates, c0, keep, up_h, up_c, want = case
    check(run(authors_scan, gates, c0, keep, up_h, up_c, backend="triton"), want)


@pytest.mark.parametrize("direction", ["fwd", "bwd"])
def test_every_candidate_matches_the_reference(case, direction):
    gates, c0, keep, up_h, up_c, want = case
    key = tuning.make_key(torch.float32, N * U)
    for meta in tuning.candidates(f"authors_scan_{direction}"):
        with tuning.overridden(key, **{f"authors_scan_{direction}": meta}):
            got = run(authors_scan, gates, c0, keep, up_h, up_c, backend="triton")
        for name, x, r in zip(("h", "c_N", "d gates", "dc0"), got, want, strict=True):
            assert rel(x, r) < BOUND, (meta, name, rel(x, r))


def test_the_synthesizer_on_triton_matches_torch():
    out = {}
    s = torch.randn(B, D, device="cuda")
    for backend in ("torch", "triton"):
        synth = AuthorsSynthesizer(
            U, backend=backend, generator=torch.Generator(device="cuda").manual_seed(1),
            init_generator=torch.Generator().manual_seed(2),
        ).cuda()  # fmt: skip
        x = s.clone().requires_grad_()
        y, (c_last, _) = synth(x, None)
        loss = y.square().sum() + c_last.sum()
        out[backend] = [y, c_last, *torch.autograd.grad(loss, [x, *synth.parameters()])]
    for i, (x, r) in enumerate(zip(out["triton"], out["torch"], strict=True)):
        assert rel(x, r) < 1e-4, (i, rel(x, r))
