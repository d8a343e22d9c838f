"""The truncation probe (``probe/truncation.py``): its true future gradient against full BPTT,
the discarded parameter gradient, synthesizer scores (oracle, zero), float64 throughout."""

import math

import pytest
import torch
import torch.nn.functional as F

from altgrad_triton.core.carry import join_state
from altgrad_triton.core.model import RNNLanguageModel
from altgrad_triton.probe.truncation import (
    future_gradients,
    horizons_up_to,
    layer_groups,
    lm_segment_loss,
    probe_stream,
)

VOCAB, L, B = 11, 4, 3  # vocabulary, segment length, batch columns


def tiny_model(cell: str) -> RNNLanguageModel:
    torch.manual_seed(0)
    model = RNNLanguageModel(
        VOCAB,
        cell=cell,
        emb_size=6,
        hidden_size=5,
        layers=2,
        window=2 if cell == "qrnn" else 1,
        backend="torch",
    )
    return model.double().eval()


def stream(segments: int) -> torch.Tensor:
    return torch.randint(
        0, VOCAB, (segments * L + 1, B), generator=torch.Generator().manual_seed(1)
    )


def zero_state(model):
    return tuple(t.double() for t in model.init_state(B))


def unrolled_state(model, tokens, k):
    """s_k from one forward call over the first k segments' rows (no carrying)."""
    with torch.no_grad():
        return model(tokens[: k * L], zero_state(model)).state


def unrolled_future_loss(model, tokens, k, m, state):
    """L_k + ... + L_{k+m-1} from ``state`` as one forward call: m times the mean CE over
    its rows (segments of equal length, each loss a mean over its own rows)."""
    out = model(tokens[k * L : (k + m) * L], state)
    targets = tokens[k * L + 1 : (k + m) * L + 1]
    return m * F.cross_entropy(out.logits.reshape(-1, VOCAB), targets.reshape(-1))


def bptt_state_gradient(model, tokens, k, m):
    """Full BPTT's gradient of the next m segments' losses w.r.t. s_k, per state tensor."""
    leaf = tuple(t.detach().requires_grad_() for t in unrolled_state(model, tokens, k))
    loss = unrolled_future_loss(model, tokens, k, m, leaf)
    got = torch.autograd.grad(loss, leaf, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(got, leaf, strict=True)]


def test_horizons_double_up_to_the_bound():
    assert horizons_up_to(8) == (1, 2, 4, 8)
    assert horizons_up_to(5) == (1, 2, 4, 5)
    assert horizons_up_to(1) == (1,)


@pytest.mark.parametrize("cell", ["lstm", "qrnn"])
def test_true_future_gradient_equals_full_bptt_on_the_unrolled_sequence(cell):
    model, tokens = tiny_model(cell), stream(7)
    k, horizons = 2, (1, 2, 3)
    s_k = unrolled_state(model, tokens, k)
    got = future_gradients(lm_segment_loss(model, tokens, L), s_k, k, horizons)
    for m in horizons:
        want = bptt_state_gradient(model, tokens, k, m)
        assert any(float(w.abs().max()) > 1e-6 for w in want)  # a gradient, not zeros
        for g, w in zip(got[m], want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-14)
    # the walk (segment by segment from s_0) reaches the same s_k and the same norms
    (probe,) = probe_stream(
        lm_segment_loss(model, tokens, L), zero_state(model), 7, [k], horizons, layer_groups(model)
    )
    for row in probe.horizons:
        want = torch.cat([w.flatten() for w in bptt_state_gradient(model, tokens, k, row.horizon)])
        assert row.grad_norm == pytest.approx(float(want.norm()), rel=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "qrnn"])
def test_discarded_gradient_is_what_full_bptt_adds_to_the_segment_before(cell):
    """full BPTT over segments k-1 .. k+m-1 = within(k-1) + discarded + the later segments'
    own gradients (from a detached s_k): the probe's discarded part is the remainder."""
    model, tokens = tiny_model(cell), stream(6)
    k, m = 2, 2
    params = [p for ps in layer_groups(model).values() for p in ps]

    def grad(loss):
        got = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).flatten()
                          for g, p in zip(got, params, strict=True)])  # fmt: skip

    s_prev = unrolled_state(model, tokens, k - 1)
    # segments k-1 .. k+m-1 as one call from s_{k-1}: full BPTT over them
    out = model(tokens[(k - 1) * L : (k + m) * L], s_prev)
    targets = tokens[(k - 1) * L + 1 : (k + m) * L + 1]
    ce = F.cross_entropy(out.logits.reshape(-1, VOCAB), targets.reshape(-1), reduction="none")
    ce = ce.view(1 + m, L * B).mean(1)  # one mean per segment
    full = grad(ce.sum())
    within = grad(ce[0])
    s_k = unrolled_state(model, tokens, k)
    own = grad(unrolled_future_loss(model, tokens, k, m, s_k))
    expected = full - within - own
    (probe,) = probe_stream(
        lm_segment_loss(model, tokens, L), zero_state(model), 6, [k], (m,), layer_groups(model)
    )
    share = probe.horizons[0].layers["all"]
    assert share.within_norm == pytest.approx(float(within.norm()), rel=1e-9)
    assert share.discarded_norm == pytest.approx(float(expected.norm()), rel=1e-8)
    assert share.discarded_norm > 1e-8
    cos = float(within @ expected / (within.norm() * expected.norm()))
    assert share.cos == pytest.approx(cos, abs=1e-8)


@pytest.mark.parametrize("cell", ["lstm", "qrnn"])
def test_an_oracle_scores_cosine_one_and_a_zero_synthesizer_zero_without_nan(cell):
    model, tokens = tiny_model(cell), stream(8)
    horizons, calls = (1, 2, 4), []

    def oracle(k, s):
        calls.append(k)
        return join_state(tuple(bptt_state_gradient(model, tokens, k, max(horizons))))

    probes = probe_stream(
        lm_segment_loss(model, tokens, L),
        zero_state(model),
        8,
        [2, 4],
        horizons,
        layer_groups(model),
        {"oracle": oracle, "zero": lambda k, s: torch.zeros_like(s)},
    )
    assert calls == [1, 2, 3, 4]  # every boundary in order, as a recurrent carry needs
    for probe in probes:
        best = probe.horizons[-1].synthesizers["oracle"]
        assert best.cos == pytest.approx(1.0, abs=1e-9)
        assert best.cos_batch == pytest.approx(1.0, abs=1e-9)
        assert best.norm_ratio == pytest.approx(1.0, rel=1e-9)
        assert best.param_cos == pytest.approx(1.0, abs=1e-9)
        for row in probe.horizons:
            zero = row.synthesizers["zero"]
            assert (zero.cos, zero.cos_batch, zero.norm_ratio, zero.param_cos) == (0, 0, 0, 0)
            for share in row.layers.values():
                assert all(math.isfinite(v) for v in vars(share).values())


def test_each_predictor_sees_and_is_scored_on_its_own_joined_state_tensors():
    """An oracle over all state tensors and one over a QRNN's recurrent states only (what
    the authors' kind sees) both score 1: each is given, and compared on, its own tensors."""
    model, tokens = tiny_model("qrnn"), stream(6)
    recurrent = model.recurrent_state_indices()
    assert len(recurrent) < len(zero_state(model))
    seen = {}

    def oracle(name, picked):
        def predict(k, s):
            seen.setdefault(name, s.shape[1])
            g = bptt_state_gradient(model, tokens, k, 2)
            return join_state(tuple(g if picked is None else [g[i] for i in picked]))

        return predict

    (probe,) = probe_stream(
        lm_segment_loss(model, tokens, L), zero_state(model), 6, [3], (1, 2),
        layer_groups(model),
        {"all": oracle("all", None), "recurrent": oracle("recurrent", recurrent)},
        None,
        {"recurrent": recurrent},
    )  # fmt: skip
    sizes = [t[0].numel() for t in zero_state(model)]
    assert seen == {"all": sum(sizes), "recurrent": sum(sizes[i] for i in recurrent)}
    for name in ("all", "recurrent"):
        score = probe.horizons[-1].synthesizers[name]
        assert score.cos == pytest.approx(1.0, abs=1e-9), name
        assert score.norm_ratio == pytest.approx(1.0, rel=1e-9), name
    # what flows in through the carried last input is beyond the recurrent-only oracle
    scores = probe.horizons[-1].synthesizers
    assert scores["all"].param_cos == pytest.approx(1.0, abs=1e-9)
    assert 0.5 < scores["recurrent"].param_cos < 1 - 1e-6


def test_a_boundary_past_the_stream_is_refused():
    model, tokens = tiny_model("lstm"), stream(4)
    with pytest.raises(ValueError, match=r"boundaries \[3\] out of range"):
        probe_stream(
            lm_segment_loss(model, tokens, L), zero_state(model), 4, [3], (1, 2),
            layer_groups(model),
        )  # fmt: skip


@pytest.mark.parametrize("cell", ["lstm", "qrnn"])
def test_float64_stays_float64_through_the_cells_and_the_fused_head(cell):
    """The cell state and the loss were rounded to fp32 (``.float()``), which made a float64
    probe exact only to 1e-6."""
    model, tokens = tiny_model(cell), stream(2)
    out = model(tokens[:L], zero_state(model))
    assert all(t.dtype == torch.float64 for t in out.state)
    assert out.cross_entropy(tokens[1 : L + 1]).dtype == torch.float64
