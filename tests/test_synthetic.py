"""The synthetic-gradient boundary is exactly what the method says it is."""

import math

import pytest
import torch
from altgrad_triton.kernels import linear_scan
from torch import nn

from altgrad_triton.core.boundary import SyntheticBoundary
from altgrad_triton.core.carry import join_state
from altgrad_triton.core.model import RNNLanguageModel, lm_loss
from altgrad_triton.core.synthesizers import (
    AuthorsSynthesizer,
    ConditionedSynthesizer,
    LinearSynthesizer,
    Synthesizer,
    ToolkitElementwiseSynthesizer,
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
    base = ToolkitElementwiseSynthesizer(hidden=4, dropout=0.0, input_noise=0.0)
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


def test_the_models_recurrent_states_leave_out_the_qrnn_window_input():
    qrnn = small_model("qrnn")  # 2 layers, window 2 on the first: (c, x_last), (c,)
    assert qrnn.recurrent_state_indices() == (0, 2)
    assert small_model("lstm").recurrent_state_indices() == (0, 1, 2, 3)
