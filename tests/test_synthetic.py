"""The synthetic-gradient boundary is exactly what the method says it is."""

import pytest
import torch
from torch import nn

from altgrad_triton.model import RNNLanguageModel, lm_loss
from altgrad_triton.synthetic import (
    ConditionedSynthesizer,
    ElementwiseSynthesizer,
    LinearSynthesizer,
    Synthesizer,
    SyntheticBoundary,
    join_state,
)

V, B, T1, T2 = 13, 3, 5, 4


def small_model(cell):
    torch.manual_seed(1)
    model = RNNLanguageModel(
        V, cell=cell, emb_size=6, hidden_size=7, layers=2, window=2, backend="torch"
    )
    return model.double()


def data():
    g = torch.Generator().manual_seed(2)
    toks = torch.randint(0, V, (T1 + T2 + 1, B), generator=g)
    return (toks[:T1], toks[1 : T1 + 1]), (toks[T1 : T1 + T2], toks[T1 + 1 : T1 + T2 + 1])


def loss_of(model, out, targets):
    return lm_loss(out, targets, ar_alpha=2.0, tar_beta=1.0)[0]


def grads(model):
    return [
        p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()
    ]


class Oracle(Synthesizer):
    """Returns a fixed gradient whatever the state: the true dL2/ds2 in the test."""

    def __init__(self, g):
        super().__init__()
        self.g = g

    def forward(self, s, carry):
        return self.g.to(s.dtype), carry


@pytest.mark.parametrize("cell, target_scale", [("lstm", 1.0), ("qrnn", 1.0), ("lstm", 700.0)])
def test_oracle_synthetic_gradient_reproduces_full_bptt(cell, target_scale):
    """target_scale only changes the synthesizer's units: an oracle in those units
    (target_scale x the true gradient) injects exactly the true gradient."""
    model = small_model(cell)
    (x1, y1), (x2, y2) = data()
    s0 = tuple(t.double() for t in model.init_state(B))

    out1 = model(x1, s0)
    out2 = model(x2, out1.state)
    (loss_of(model, out1, y1) + loss_of(model, out2, y2)).backward()
    full = grads(model)
    model.zero_grad()

    s2 = tuple(t.detach().requires_grad_(True) for t in out1.state)
    l2 = loss_of(model, model(x2, s2), y2)
    g2 = join_state(torch.autograd.grad(l2, s2)).double()
    model.zero_grad()

    boundary = SyntheticBoundary(
        Oracle(g2 * target_scale), None, scale=1.0, target_scale=target_scale
    )
    leaf = boundary.start(s0, "synthetic")
    out1 = model(x1, leaf)
    boundary.backward(loss_of(model, out1, y1), out1.state, "synthetic")
    boundary.fit()
    sg = grads(model)
    model.zero_grad()
    out2 = model(x2, tuple(t.detach() for t in out1.state))
    loss_of(model, out2, y2).backward()
    real = grads(model)

    for f, a, b in zip(full, sg, real, strict=True):
        torch.testing.assert_close(a + b, f, rtol=1e-10, atol=1e-12)
    # and the injection mattered: without it the sum differs
    assert any((a - f).abs().max() > 1e-6 for f, a in zip(full, real, strict=True))


@pytest.mark.parametrize("mode", ["synthetic", "real"])
def test_regression_target_is_autograd_gradient_of_loss_plus_injection(mode):
    model = small_model("lstm")
    (x1, y1), _ = data()
    s0 = tuple(torch.randn_like(t).double() for t in model.init_state(B))
    synth = LinearSynthesizer(join_state(s0).shape[1]).double()
    nn.init.normal_(synth.out.weight, std=0.3)
    nn.init.normal_(synth.out.bias, std=0.3)
    scale = 0.5
    boundary = SyntheticBoundary(synth, None, scale=scale)

    leaf = boundary.start(s0, mode)
    pred = synth(join_state(s0), None)[0].detach()  # what start() keeps, fitted below
    out = model(x1, leaf)
    loss = loss_of(model, out, y1)
    s_next = join_state(out.state)
    total = loss + (
        scale * (synth(s_next.detach(), None)[0].detach() * s_next).sum()
        if mode == "synthetic"
        else 0
    )
    expected = join_state(torch.autograd.grad(total, leaf, retain_graph=True))
    boundary.backward(loss, out.state, mode)
    target = join_state(tuple(t.grad for t in leaf))
    torch.testing.assert_close(target, expected, rtol=1e-10, atol=1e-14)
    stats = boundary.fit()
    torch.testing.assert_close(
        stats.loss.double(), (pred - target).pow(2).mean(), rtol=1e-6, atol=0
    )


@pytest.mark.parametrize("kind", ["zero-init-linear", "zero-init-elementwise", "scale-0"])
def test_synthetic_step_equals_real_step_when_injection_is_zero(kind):
    (x1, y1), _ = data()
    results = []
    for mode in ("real", "synthetic"):
        model = small_model("qrnn").float()
        state = model.init_state(B)
        d = join_state(state).shape[1]
        if kind == "zero-init-elementwise":
            synth, scale = ElementwiseSynthesizer(hidden=5, dropout=0.0, input_noise=0.0), 1.0
        else:
            synth, scale = LinearSynthesizer(d), (1.0 if kind == "zero-init-linear" else 0.0)
            if kind == "scale-0":
                nn.init.normal_(synth.out.weight)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        boundary = SyntheticBoundary(synth, torch.optim.Adam(synth.parameters()), scale)
        leaf = boundary.start(state, mode)
        out = model(x1, leaf)
        boundary.backward(loss_of(model, out, y1), out.state, mode)
        boundary.fit()
        opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_synthesizer_learns_a_fixed_linear_map():
    torch.manual_seed(3)
    d = 6
    synth = LinearSynthesizer(d)
    a = torch.randn(d, d)
    boundary = SyntheticBoundary(synth, torch.optim.Adam(synth.parameters(), lr=0.05), 1.0)
    cos = []
    for _ in range(300):
        s = torch.randn(8, d)
        leaf = boundary.start((s,), "real")
        (leaf[0] @ a.t() * leaf[0]).sum().mul(0.5).backward()  # grad = (A + A^T)/2 s
        cos.append(float(boundary.fit().cos))
    assert cos[0] == 0.0  # zero-initialised: predicts nothing yet
    assert sum(cos[-20:]) / 20 > 0.95


def test_elementwise_carry_advances_per_boundary_and_resets():
    synth = ElementwiseSynthesizer(hidden=4, dropout=0.0, input_noise=0.0)
    nn.init.normal_(synth.v)
    boundary = SyntheticBoundary(synth, None, scale=1.0)
    s = (torch.randn(2, 3),)
    boundary.start(s, "real")
    boundary.fit()
    first = boundary.carry.clone()
    boundary.start(s, "real")
    boundary.fit()
    assert not torch.equal(first, boundary.carry)  # carried: second step sees the first
    boundary.reset()
    assert boundary.carry is None


@pytest.mark.parametrize("cell", ["qrnn", "gru", "lstm"])
def test_elementwise_cells_predict_per_scalar(cell):
    synth = ElementwiseSynthesizer(cell=cell, hidden=5, dropout=0.0, input_noise=0.0).eval()
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


def test_any_rnn_module_with_tuple_state_and_batch_dim_1():
    """Library use: torch.nn.LSTM's (h, c) state has the batch on dim 1."""
    torch.manual_seed(0)
    rnn = nn.LSTM(3, 5, num_layers=2)
    h = (torch.zeros(2, 4, 5), torch.zeros(2, 4, 5))
    synth = LinearSynthesizer(2 * 2 * 5)
    boundary = SyntheticBoundary(
        synth, torch.optim.Adam(synth.parameters(), lr=1e-2), 0.1, batch_dim=1
    )
    for _ in range(3):
        h = boundary.start(h, "synthetic")
        out, h = rnn(torch.randn(7, 4, 3), h)
        boundary.backward(out.pow(2).mean(), h, "synthetic")
        stats = boundary.fit()
    assert torch.isfinite(stats.loss) and stats.norm_ratio > 0


def conditioned_linear(d, c):
    return ConditionedSynthesizer(LinearSynthesizer(d), c, d)


def test_conditioned_synthesizer_starts_as_its_base():
    base = ElementwiseSynthesizer(hidden=4, dropout=0.0, input_noise=0.0)
    nn.init.normal_(base.v)
    s, c = torch.randn(3, 5), torch.randn(3, 7)
    synth = ConditionedSynthesizer(base, 7, 5)
    torch.testing.assert_close(synth(s, None, c)[0], base(s, None)[0])


def test_conditioned_target_and_injection_use_each_boundarys_context():
    """g_hat(s_k, c_k) is kept at start; backward injects g_hat(s_{k+1}, c_{k+1})."""
    model = small_model("lstm")
    (x1, y1), _ = data()
    s0 = tuple(torch.randn_like(t).double() for t in model.init_state(B))
    d = join_state(s0).shape[1]
    synth = conditioned_linear(d, 4).double()
    for p in synth.parameters():
        nn.init.normal_(p, std=0.3)
    c0, c1 = torch.randn(B, 4).double(), torch.randn(B, 4).double()
    boundary = SyntheticBoundary(synth, None, scale=0.5)
    leaf = boundary.start(s0, "synthetic", c0)
    out = model(x1, leaf)
    loss = loss_of(model, out, y1)
    s_next = join_state(out.state)
    g_next = synth(s_next.detach(), None, c1)[0].detach()
    expected = join_state(
        torch.autograd.grad(loss + 0.5 * (g_next * s_next).sum(), leaf, retain_graph=True)
    )
    boundary.backward(loss, out.state, "synthetic", c1)
    target = join_state(tuple(t.grad for t in leaf))
    torch.testing.assert_close(target, expected, rtol=1e-10, atol=1e-14)
    # the prediction start() kept, and fit() regresses, is g_hat(s_k, c_k)
    pred = synth(join_state(s0), None, c0)[0].detach()
    loss = boundary.fit().loss.double()
    torch.testing.assert_close(loss, (pred - target).pow(2).mean(), rtol=1e-6, atol=0)


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
