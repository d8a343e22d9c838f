"""What truncation throws away, and what a synthesizer recovers of it (issue #23).

Walk a token stream segment by segment, carrying the state as training does (segment j
runs from s_j to s_{j+1}). At a boundary k the probe measures:

* the **true future gradient** g_M = d(L_k + ... + L_{k+M-1}) / ds_k, by running the next
  M segments from s_k as one graph and backpropagating their summed losses to s_k (each
  L a segment's own loss, the objective TBPTT sums), for every horizon M asked;
* **what truncation discards** of segment k-1's parameter gradient: the gradient that
  g_M brings into the parameters through s_k (``autograd.grad(s_k, params, g_M)``),
  against the within-segment gradient dL_{k-1}/dtheta that TBPTT keeps, per layer: norms,
  their ratio and cosine;
* **what a synthesizer recovers**: g_hat(s_k) (in gradient units) against g_M, and the
  parameter gradient g_hat injects against the one g_M would bring.

The core takes a ``SegmentLoss`` (segment index, state -> loss, final state) and
``Predictor``s (boundary, joined state -> g_hat), so any RNN and any synthesizer fit; the
language-model adapters are :func:`lm_segment_loss` and :class:`SynthesizerPredictor`.
A predictor is called at every boundary in order (a recurrent synthesizer's carry then
advances once per boundary, as in real-mode training), and read at the probed ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import data
from ..core.carry import Carry, State, join_state
from ..core.model import RNNLanguageModel, SegmentObjective

SegmentLoss = Callable[[int, State], tuple[torch.Tensor, State]]
"""``segment_loss(j, s_j) -> (L_j, s_{j+1})``: segment j's loss and final state, in a graph."""

Predictor = Callable[[int, torch.Tensor], torch.Tensor]
"""``predict(k, s_k joined [B, D]) -> g_hat [B, D]`` in the units of dL/ds."""


def horizons_up_to(bound: int) -> tuple[int, ...]:
    """1, 2, 4, 8, ... up to ``bound``, and ``bound`` itself."""
    if bound < 1:
        raise ValueError(f"max horizon must be >= 1, got {bound}")
    out, m = [], 1
    while m < bound:
        out.append(m)
        m *= 2
    return (*out, bound)


def layer_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The model's trainable parameters grouped per layer: ``layers.<i>`` for a stacked
    layer, else the first part of the name (``embedding``, ``decoder``, ``lstm``, ...)."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "layers" else parts[0]
        groups.setdefault(key, []).append(p)
    return groups


@dataclass
class LayerShare:
    """One layer's within-segment gradient against the part truncation discards."""

    within_norm: float
    discarded_norm: float
    ratio: float | None  # discarded / within (None when within is zero: a segment unscored)
    cos: float  # cos(within, discarded)


@dataclass
class SynthScore:
    """A synthesizer's g_hat(s_k) against the true future gradient g_M."""

    cos: float  # mean over batch rows of cos(g_hat, g_M)
    cos_batch: float  # cos over the whole batch, flattened
    norm_ratio: float | None  # |g_hat| / |g_M| over the whole batch (None when g_M is zero)
    param_cos: float  # cos of the parameter gradients they bring through s_k (all layers)


@dataclass
class HorizonProbe:
    """Boundary k, horizon M."""

    horizon: int
    grad_norm: float  # |g_M| over the whole batch and every state tensor
    cos_to_longest: float  # cos(g_M, g_{M_max}): how much the farther segments still change
    layers: dict[str, LayerShare] = field(default_factory=dict)  # + "all"
    synthesizers: dict[str, SynthScore] = field(default_factory=dict)


@dataclass
class BoundaryProbe:
    boundary: int
    within_loss: float  # L_{k-1}
    horizons: list[HorizonProbe]


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos of two flattened tensors; 0 when either is zero (never NaN)."""
    a, b = a.flatten(), b.flatten()
    denom = a.norm() * b.norm()
    return float(a @ b / denom) if denom > 0 else 0.0


def _ratio(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """|a| / |b|; None when b is zero (JSON has no infinity)."""
    nb = float(b.norm())
    return float(a.norm()) / nb if nb > 0 else None


def _grads(
    outputs: Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    grad_outputs: Sequence[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """d outputs / d inputs (weighted by ``grad_outputs``), zeros where nothing flows; the
    graph is kept for the next call. Outputs that do not require grad are skipped."""
    pairs = [
        (o, None if grad_outputs is None else g)
        for o, g in zip(outputs, grad_outputs or [None] * len(outputs), strict=True)
        if o.requires_grad
    ]
    if not pairs:
        return [torch.zeros_like(x) for x in inputs]
    outs, gouts = zip(*pairs, strict=True)
    got = torch.autograd.grad(
        outs,
        inputs,
        None if grad_outputs is None else gouts,
        retain_graph=True,
        allow_unused=True,
    )
    return [torch.zeros_like(x) if g is None else g for g, x in zip(got, inputs, strict=True)]


def _flat(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads]) if grads else torch.zeros(0)


def _row_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of cos(a_row, b_row) (0 for a zero row), as the trainer's sg_cos."""
    return float(F.cosine_similarity(a, b, dim=1, eps=1e-30).mean())


def _layer_shares(
    groups: dict[str, list[nn.Parameter]],
    within: dict[str, list[torch.Tensor]],
    discarded: dict[str, list[torch.Tensor]],
) -> dict[str, LayerShare]:
    out = {}
    for name in [*groups, "all"]:
        w = _flat(within[name]) if name != "all" else _flat(sum(within.values(), []))
        d = _flat(discarded[name]) if name != "all" else _flat(sum(discarded.values(), []))
        out[name] = LayerShare(float(w.norm()), float(d.norm()), _ratio(d, w), cosine(w, d))
    return out


def _per_group(
    groups: dict[str, list[nn.Parameter]], flat: list[torch.Tensor]
) -> dict[str, list[torch.Tensor]]:
    """Gradients of every parameter in ``groups`` order, split back per group."""
    out, i = {}, 0
    for name, params in groups.items():
        out[name] = flat[i : i + len(params)]
        i += len(params)
    return out


def future_gradients(
    segment_loss: SegmentLoss, s_k: State, k: int, horizons: Sequence[int]
) -> dict[int, list[torch.Tensor]]:
    """The true future gradient g_M = d(L_k + ... + L_{k+M-1}) / ds_k for each M in
    ``horizons``, per state tensor: the next max(horizons) segments run from s_k as one
    graph, whose summed losses are backpropagated to s_k."""
    leaf = tuple(t.detach().requires_grad_() for t in s_k)
    losses, state = [], leaf
    for j in range(k, k + max(horizons)):
        loss, state = segment_loss(j, state)
        losses.append(loss)
    return {m: _grads([sum(losses[:m])], leaf) for m in horizons}


def probe_boundary(
    segment_loss: SegmentLoss,
    s_prev: State,
    k: int,
    horizons: Sequence[int],
    groups: dict[str, list[nn.Parameter]],
    predictions: dict[str, torch.Tensor],
    picked: dict[str, list[int]],
) -> tuple[BoundaryProbe, State]:
    """Measure boundary ``k`` from ``s_prev`` = s_{k-1}; also return s_k (detached).

    ``predictions``: each synthesizer's g_hat(s_k) [B, D] over the state tensors
    ``picked[name]`` (:func:`_picked`), in gradient units."""
    params = [p for ps in groups.values() for p in ps]
    loss_prev, s_k = segment_loss(k - 1, tuple(t.detach() for t in s_prev))
    within = _per_group(groups, _grads([loss_prev], params))
    true = future_gradients(segment_loss, s_k, k, horizons)
    longest = _flat(true[max(horizons)])
    injected = {}
    for name, g in predictions.items():
        s_joined = join_state(tuple(s_k[i] for i in picked[name]))
        injected[name] = _flat(_grads([s_joined], params, [g.to(s_joined.dtype)]))
    rows = []
    for m in horizons:
        g_flat = _flat(true[m])
        discarded = _per_group(groups, _grads(s_k, params, true[m]))
        row = HorizonProbe(
            m,
            float(g_flat.norm()),
            cosine(g_flat, longest),
            _layer_shares(groups, within, discarded),
        )
        d_all = _flat(sum(discarded.values(), []))
        for name, g_hat in predictions.items():
            g_join = join_state(tuple(true[m][i] for i in picked[name]))
            g_hat = g_hat.to(g_join.dtype)
            row.synthesizers[name] = SynthScore(
                _row_cosine(g_hat, g_join),
                cosine(g_hat, g_join),
                _ratio(g_hat, g_join),
                cosine(injected[name], d_all),
            )
        rows.append(row)
    probe = BoundaryProbe(k, float(loss_prev.detach()), rows)
    return probe, tuple(t.detach() for t in s_k)


def _picked(
    name: str,
    size: int,
    joined: Sequence[int] | None,
    joined_by: dict[str, Sequence[int] | None] | None,
) -> list[int]:
    """The state tensors predictor ``name`` sees: ``joined_by[name]`` if named there, else
    ``joined``; None means all ``size`` of them."""
    own = joined_by[name] if joined_by and name in joined_by else joined
    return list(range(size)) if own is None else list(own)


def probe_stream(
    segment_loss: SegmentLoss,
    init_state: State,
    segments: int,
    boundaries: Sequence[int],
    horizons: Sequence[int],
    groups: dict[str, list[nn.Parameter]],
    predictors: dict[str, Predictor] | None = None,
    joined: Sequence[int] | None = None,
    joined_by: dict[str, Sequence[int] | None] | None = None,
    on_segment: Callable[[int], object] | None = None,
) -> list[BoundaryProbe]:
    """Probe every boundary in ``boundaries`` of a stream of ``segments`` segments.

    The state is carried from ``init_state`` = s_0 without gradients between probed
    boundaries; every predictor is called at each boundary 1, 2, ... in order, on the state
    tensors ``joined`` names (None: all), or ``joined_by[name]`` for a predictor named
    there (synthesizers of different kinds see different ones). A boundary k needs
    1 <= k and k + max(horizons) <= segments (ValueError otherwise). ``on_segment(k)``
    after boundary k is reached (and probed, if it is one): a caller's progress bar."""
    wanted = sorted(set(boundaries))
    bad = [k for k in wanted if k < 1 or k + max(horizons) > segments]
    if bad:
        raise ValueError(
            f"boundaries {bad} out of range: a boundary k needs 1 <= k <= "
            f"{segments - max(horizons)} ({segments} segments, max horizon {max(horizons)})"
        )
    predictors = predictors or {}
    size = len(init_state)
    sees = {n: _picked(n, size, joined, joined_by) for n in predictors}
    state, out = tuple(init_state), []
    for k in range(1, wanted[-1] + 1):
        if k in wanted:
            s_k = _next_state(segment_loss, k - 1, state)
            preds = {n: p(k, _joined(s_k, sees[n])) for n, p in predictors.items()}
            probe, state = probe_boundary(segment_loss, state, k, horizons, groups, preds, sees)
            out.append(probe)
        else:
            state = _next_state(segment_loss, k - 1, state)
            for n, p in predictors.items():
                p(k, _joined(state, sees[n]))
        if on_segment is not None:
            on_segment(k)
    return out


def _next_state(segment_loss: SegmentLoss, j: int, state: State) -> State:
    with torch.no_grad():
        return tuple(t.detach() for t in segment_loss(j, state)[1])


def _joined(state: State, joined: Sequence[int] | None) -> torch.Tensor:
    return join_state(state if joined is None else tuple(state[i] for i in joined))


# ---------------------------------------------------------------------------- adapters


def lm_segment_loss(
    model: RNNLanguageModel,
    tokens: torch.Tensor,
    bptt: int,
    ar_alpha: float = 0.0,
    tar_beta: float = 0.0,
) -> SegmentLoss:
    """Segment j of ``tokens`` [steps, B]: rows j*bptt .. (j+1)*bptt, with the training loss
    (cross-entropy + AR/TAR, ``SegmentObjective``) that the trainer backpropagates, in fp32."""
    objective = SegmentObjective(ar_alpha, tar_beta, "float32")

    def segment(j: int, state: State) -> tuple[torch.Tensor, State]:
        inputs, targets = data.get_segment(tokens, j * bptt, bptt)
        loss, out, _ = objective(model, inputs, targets, state, tokens.device)
        return loss, out.state

    return segment


class SynthesizerPredictor:
    """A trained synthesizer as a ``Predictor``: its output divided by ``target_scale``
    (gradient units), its carry advanced once per call, no gradients. ``context(k)``: a
    conditioned synthesizer's context at boundary k (None for the others)."""

    def __init__(
        self,
        synthesizer: nn.Module,
        target_scale: float,
        context: Callable[[int], torch.Tensor] | None = None,
    ):
        self.synthesizer, self.target_scale, self.context = synthesizer, target_scale, context
        self.carry: Carry = None

    @torch.no_grad()
    def __call__(self, k: int, s: torch.Tensor) -> torch.Tensor:
        s = s.to(next(self.synthesizer.parameters()).dtype)
        if self.context is None:
            g, self.carry = self.synthesizer(s, self.carry)
        else:
            g, self.carry = self.synthesizer(s, self.carry, self.context(k))
        return g / self.target_scale


@contextmanager
def evaluation_mode(modules: list[nn.Module]) -> Iterator[None]:
    """``modules`` in eval mode, every submodule's training flag given back afterwards."""
    flags = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        for m, training in flags:
            m.training = training
