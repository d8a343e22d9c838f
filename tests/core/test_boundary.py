"""The synthetic-gradient boundary (``core/boundary.py``) is exactly what the method says it
is: an oracle reproduces full BPTT, the regression target is autograd's gradient plus the
injection, and its options (reduction, split target, advance, joined state) by hand."""

import pytest
import torch
from torch import nn

from altgrad_triton.core.boundary import SyntheticBoundary
from altgrad_triton.core.carry import join_state
from altgrad_triton.core.model import lm_loss
from altgrad_triton.core.synthesizers import (
    ConditionedSynthesizer,
    LinearSynthesizer,
    Synthesizer,
    ToolkitElementwiseSynthesizer,
)
from tests.helpers import small_model

V, B, T1, T2 = 13, 3, 5, 4


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
            synth, scale = (
                ToolkitElementwiseSynthesizer(hidden=5, dropout=0.0, input_noise=0.0),
                1.0,
            )
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
    synth = ToolkitElementwiseSynthesizer(hidden=4, dropout=0.0, input_noise=0.0)
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


class FixedPrediction(Synthesizer):
    """Predicts the same tensor whatever the state: a parameter, so its gradient is the
    regression loss's gradient with respect to the prediction itself."""

    def __init__(self, value):
        super().__init__()
        self.value = nn.Parameter(value.clone())

    def forward(self, s, carry):
        return self.value.expand_as(s), carry


def fitted_gradient(mode, **options):
    """s -> final = 2 s, loss = <a, final>: the real target is 2a; the synthesizer predicts
    p = [0.5, -1] everywhere, so the injected part of the target is scale * 2 p."""
    synth = FixedPrediction(torch.tensor([[0.5, -1.0]], dtype=torch.float64))
    boundary = SyntheticBoundary(synth, torch.optim.SGD(synth.parameters(), lr=0.0), 0.1, **options)
    (leaf,) = boundary.start((torch.zeros(1, 2, dtype=torch.float64),), mode)
    final = 2 * leaf
    boundary.backward((torch.tensor([[1.0, 2.0]], dtype=torch.float64) * final).sum(), final, mode)
    boundary.fit()
    return synth.value.grad[0].tolist()


def test_regression_reduction_mean_or_sum_by_hand():
    # real mode, target 2a = [2, 4]: d/dp of mean (p - t)^2 is 2 (p - t) / 2, of the sum 2 (p - t)
    assert fitted_gradient("real") == pytest.approx([-1.5, -5.0])
    assert fitted_gradient("real", reduction="sum") == pytest.approx([-3.0, -10.0])


def test_split_target_fits_the_real_and_injected_parts_separately_by_hand():
    # synthetic mode: real part g = [2, 4], injected part j = 0.1 * 2 * p = [0.1, -0.2]
    joined = fitted_gradient("synthetic", reduction="sum")  # 2 (p - (g + j))
    assert joined == pytest.approx([-3.2, -9.6])
    split = fitted_gradient("synthetic", reduction="sum", split_target=True)
    assert split == pytest.approx([-3.0 + 0.8, -10.0 - 1.6])  # 2 (p - g) + 2 (p - j)
    # real mode has one backward pass: nothing to split
    assert fitted_gradient("real", reduction="sum", split_target=True) == pytest.approx(
        [-3.0, -10.0]
    )


class CountingSynthesizer(Synthesizer):
    """Its carry counts the calls; its prediction is the count it was called with (each
    call's is kept in ``predicted``)."""

    def __init__(self):
        super().__init__()
        self.predicted: list[float] = []

    def forward(self, s, carry):
        count = torch.zeros(()) if carry is None else carry
        self.predicted.append(float(count))
        return torch.full_like(s, float(count)), count + 1


@pytest.mark.parametrize(
    "advance, reads, injected, last",
    [("once", [0, 1, 2], [1, 2], 3), ("every_call", [0, 2, 4], [1, 3], 5)],
)
def test_synthesizer_state_advances_once_or_at_every_call_by_hand(advance, reads, injected, last):
    """Segments: synthetic, synthetic, real. 'once': the carry moves once per boundary and
    the call on s_{k+1} is dropped; 'every_call': that call moves it too."""
    synthesizer = CountingSynthesizer()
    boundary = SyntheticBoundary(synthesizer, None, 1.0, advance=advance)
    seen, sent = [], []
    for mode in ("synthetic", "synthetic", "real"):
        (leaf,) = boundary.start((torch.zeros(1, 2),), mode)
        seen.append(synthesizer.predicted[-1])  # start's call: g_hat(s_k)
        final = leaf * 1.0
        boundary.backward(final.sum() * 0, final, mode)
        if mode == "synthetic":  # final = leaf: the injected gradient reaches s_k as is
            sent.append(leaf.grad[0, 0].item())
        boundary.fit()
    assert seen == reads and sent == injected and boundary.carry.item() == last


def test_joined_state_leaves_out_the_tensors_not_named():
    state = (torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 5))
    boundary = SyntheticBoundary(LinearSynthesizer(8), None, 1.0, joined=(0, 2))
    seen = []
    boundary.synthesizer.register_forward_hook(lambda m, i, out: seen.append(i[0].shape))
    leaf = boundary.start(state, "synthetic")
    assert [t.requires_grad for t in leaf] == [True, False, True]
    assert seen == [(2, 8)]  # g_hat(s_k) saw tensors 0 and 2 joined: 3 + 5 per row
    nn.init.normal_(boundary.synthesizer.out.weight)
    final = tuple(t * 2 for t in leaf)
    boundary.backward(final[0].sum() * 0, final, "synthetic")
    assert leaf[1].grad is None and leaf[0].grad.abs().sum() > 0
    # g_hat(s_k) was predicted by the zero-initialised map: the loss is the target's mean square
    target = torch.cat([leaf[0].grad, leaf[2].grad], dim=1)
    torch.testing.assert_close(boundary.fit().loss, target.pow(2).mean())
