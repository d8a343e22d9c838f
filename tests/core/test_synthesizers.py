"""The synthesizers (``core/synthesizers.py``): element-wise cells per scalar, the conditioned
(cDNI) synthesizer, and the authors' synthesizer by hand, with its linear scan."""

import math

import pytest
import torch
from altgrad_triton.kernels import linear_scan
from torch import nn

from altgrad_triton.core.boundary import SyntheticBoundary
from altgrad_triton.core.synthesizers import (
    AuthorsSynthesizer,
    ConditionedSynthesizer,
    LinearSynthesizer,
    ToolkitElementwiseSynthesizer,
)


@pytest.mark.parametrize("cell", ["qrnn", "gru", "lstm"])
def test_elementwise_cells_predict_per_scalar(cell):
    synth = ToolkitElementwiseSynthesizer(cell=cell, hidden=5, dropout=0.0, input_noise=0.0).eval()
    nn.init.normal_(synth.v)
    s = torch.randn(4, 6)
    y, carry = synth(s, None)
    assert y.shape == s.shape
    # each scalar is independent: changing one input changes only its own output
    s2 = s.clone()
    s2[1, 2] += 1.0
    y2, _ = synth(s2, None)
    changed = y2 != y
    assert changed[1, 2] and changed.sum() == 1


def conditioned_linear(d, c):
    return ConditionedSynthesizer(LinearSynthesizer(d), c, d)


def test_conditioned_synthesizer_starts_as_its_base():
    base = ToolkitElementwiseSynthesizer(hidden=4, dropout=0.0, input_noise=0.0)
    nn.init.normal_(base.v)
    s, c = torch.randn(3, 5), torch.randn(3, 7)
    synth = ConditionedSynthesizer(base, 7, 5)
    torch.testing.assert_close(synth(s, None, c)[0], base(s, None)[0])


def test_only_a_conditioned_synthesizer_fits_a_gradient_the_state_does_not_determine():
    """The cDNI case: the gradient is a function of what comes after the boundary."""
    torch.manual_seed(4)
    d, c = 6, 5
    m = torch.randn(d, c)
    cos = {}
    for name, synth in (("state", LinearSynthesizer(d)), ("context", conditioned_linear(d, c))):
        boundary = SyntheticBoundary(synth, torch.optim.Adam(synth.parameters(), lr=0.05), 1.0)
        seen = []
        for _ in range(300):
            s, ctx = torch.randn(8, d), torch.randn(8, c)
            leaf = boundary.start((s,), "real", ctx if name == "context" else None)
            (leaf[0] * (ctx @ m.t())).sum().backward()  # grad = M ctx, whatever s is
            seen.append(float(boundary.fit().cos))
        cos[name] = sum(seen[-20:]) / 20
    assert cos["context"] > 0.95 and abs(cos["state"]) < 0.2


# ---------------------------------------------------------------------------- the authors' code


def scan_by_steps(a, b, c0):
    out, c = [], c0
    for n in range(a.shape[0]):
        c = a[n] * c + b[n]
        out.append(c)
    return torch.stack(out)


@pytest.mark.parametrize("n", [1, 2, 5, 16, 17, 50])
def test_linear_scan_matches_a_step_by_step_loop_forward_and_gradients(n):
    g = torch.Generator().manual_seed(n)
    a = torch.rand(n, 3, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(n, 3, generator=g, dtype=torch.float64).requires_grad_()
    c0 = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    up = torch.randn(n, 3, generator=g, dtype=torch.float64)
    got, want = linear_scan(a, b, c0), scan_by_steps(a, b, c0)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for x, y in zip(
        torch.autograd.grad((got * up).sum(), (a, b, c0)),
        torch.autograd.grad((want * up).sum(), (a, b, c0)),
        strict=True,
    ):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def authors_by_hand(synth, xs, c_prev, e_prev, sequence, zoneout_eval=0.0):
    """The authors' synthesizer one scalar at a time in plain Python floats.

    Per scalar x: e = w_enc x + b_enc; the gates read [e, e_before]; c = f z + (1 - f) c_prev
    (pytorch-qrnn's ForgetMult: f weighs the new value), h = o c, y = v . h + b_dec.
    ``scan``: e_before and c_prev are the previous scalar's; ``element``: each scalar's own.
    """
    u = synth.hidden
    we, be = synth.encoder.weight[:, 0].tolist(), synth.encoder.bias.tolist()
    wg, bg = synth.gates.weight.tolist(), synth.gates.bias.tolist()
    v, bd = synth.decoder.weight[0].tolist(), synth.decoder.bias.item()
    ys, cs, es = [], [], []
    for n, x in enumerate(xs):
        e = [we[i] * x + be[i] for i in range(u)]
        before = es[-1] if sequence == "scan" and es else e_prev[0 if sequence == "scan" else n]
        prev = cs[-1] if sequence == "scan" and cs else c_prev[0 if sequence == "scan" else n]
        inp = e + before
        pre = [
            sum(w * i for w, i in zip(row, inp, strict=True)) + b
            for row, b in zip(wg, bg, strict=True)
        ]
        z = [math.tanh(p) for p in pre[:u]]
        f = [sigmoid(p) * (1 - zoneout_eval) for p in pre[u : 2 * u]]
        o = [sigmoid(p) for p in pre[2 * u :]]
        c = [f[i] * z[i] + (1 - f[i]) * prev[i] for i in range(u)]
        ys.append(sum(v[i] * o[i] * c[i] for i in range(u)) + bd)
        cs.append(c)
        es.append(e)
    return ys, cs, es


@pytest.mark.parametrize("sequence", ["scan", "element"])
def test_authors_synthesizer_by_hand(sequence):
    """Two rows of three scalars, a carry from a previous call, window 2, eval-mode zoneout."""
    torch.manual_seed(5)
    synth = AuthorsSynthesizer(
        2, window=2, zoneout=0.25, input_noise=0.0, sequence=sequence
    ).double()
    nn.init.normal_(synth.gates.bias)
    synth.eval()
    s = torch.tensor([[0.5, -1.0, 2.0], [0.25, 3.0, -0.5]], dtype=torch.float64)
    rows = 1 if sequence == "scan" else 6
    c_prev, e_prev = torch.randn(rows, 2).double(), torch.randn(rows, 2).double()
    y, (c, e) = synth(s, (c_prev, e_prev))
    ys, cs, es = authors_by_hand(
        synth, s.flatten().tolist(), c_prev.tolist(), e_prev.tolist(), sequence, 0.25
    )
    torch.testing.assert_close(
        y, torch.tensor(ys, dtype=torch.float64).view(2, 3), rtol=1e-12, atol=1e-12
    )
    if sequence == "scan":  # the carry is the last scalar's (c, encoded input)
        cs, es = cs[-1:], es[-1:]
    torch.testing.assert_close(c, torch.tensor(cs, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(e, torch.tensor(es, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_authors_scan_reads_the_scalars_in_order_and_element_does_not():
    torch.manual_seed(6)
    s = torch.randn(2, 4)
    for sequence in ("scan", "element"):
        synth = AuthorsSynthesizer(4, input_noise=0.0, sequence=sequence).eval()
        y, _ = synth(s, None)
        s2 = s.clone()
        s2[0, 1] += 1.0  # the second scalar of the flattened state
        changed = (synth(s2, None)[0] != y).flatten()
        if sequence == "scan":  # it and every scalar after it
            assert not changed[0] and changed[1:].all()
        else:
            assert changed.sum() == 1 and changed[1]


def test_authors_synthesizer_parameters_and_initialisation():
    torch.manual_seed(7)
    synth = AuthorsSynthesizer(50)
    shapes = {name: tuple(p.shape) for name, p in synth.named_parameters()}
    assert shapes == {
        "encoder.weight": (50, 1),
        "encoder.bias": (50,),
        "gates.weight": (150, 100),  # window 2: the current and the previous encoded scalar
        "gates.bias": (150,),
        "decoder.weight": (1, 50),
        "decoder.bias": (1,),
    }
    for w in (synth.encoder.weight, synth.decoder.weight):
        assert w.abs().max() <= 0.1 and w.abs().min() > 0 and w.std() > 0.04
    assert synth.encoder.bias.abs().sum() == 0 and synth.decoder.bias.abs().sum() == 0
    assert synth.gates.weight.abs().max() <= 0.1  # PyTorch's Linear: 1 / sqrt(100)
    y, _ = synth(torch.randn(3, 4), None)
    assert y.abs().min() > 0  # not zero-initialised: it predicts from the first call
    zero = AuthorsSynthesizer(50, init="zero")
    assert zero(torch.randn(3, 4), None)[0].abs().sum() == 0
    toolkit = ToolkitElementwiseSynthesizer(init="uniform")  # the toolkit's, with the authors' init
    assert 0 < toolkit.v.abs().max() <= 0.1 and toolkit.b_out.item() == 0
    assert ToolkitElementwiseSynthesizer().v.abs().sum() == 0


def test_authors_zoneout_keeps_a_units_value_with_probability_p():
    """In training, zoneout sets f to 0 for a fraction p of the (scalar, unit) pairs, which
    then keep their previous c exactly; nothing is rescaled."""
    synth = AuthorsSynthesizer(
        50, window=1, zoneout=0.3, input_noise=0.0, sequence="element",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    c_prev = torch.randn(400, 50)
    _, c = synth(torch.randn(20, 20), c_prev)
    kept = (c == c_prev).float().mean().item()
    assert 0.27 < kept < 0.33
