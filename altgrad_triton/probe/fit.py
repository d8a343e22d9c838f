"""Synthesizers fitted fresh on a run's trajectory, to score beside the run's own (#23 item 3).

``altgrad-probe RUN_DIR --fit linear,authors,linear+3`` asks what each kind of synthesizer
*could* recover of the true future gradient on this run, whatever the run trained (a BPTT
run has none). Each kind is built from the run's recipe with a fresh ``[synthetic]``
section naming only that kind (and its context tokens), so it gets the defaults a recipe
naming it gets, the authors' kind its ``AUTHORS_VALUES``; the builders are the trainer's
(``build_synthesizer``: its boundary, own Adam, ``target_scale``, joined state).

The fit: the run's model frozen at the checkpoint (no parameter receives a gradient, in
eval mode as the probe runs it), the train split walked from row 0 and a zero state in
segments of ``bptt.length`` rows, the state carried; each boundary is a real-mode DNI step
(``start(s, "real", context)``, the segment's loss, backward, ``fit()``), so every
synthesizer regresses on the exact one-segment gradient dL_k/ds_k (g_1 of the probe) in
its own ``target_scale`` units. All kinds share one forward and backward per segment: the
model reads ``shared_input`` of their leaves, whose gradient each leaf receives in full.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, get_args, get_type_hints

import torch
from rich.console import Console

from ..config.recipe import Recipe, SyntheticConfig, apply_overrides, from_dict, to_dict
from ..core.boundary import SyntheticBoundary
from ..core.carry import State, join_state
from ..core.model import RNNLanguageModel, next_tokens_context
from ..errors import UserError
from ..progress import EpochProgress, silent_console
from ..run.build import build_synthesizer
from ..run.inference import LoadedRun
from ..run.values import RunValues, run_values
from .run_stream import boundary_predictor, stream_tokens
from .truncation import SynthesizerPredictor, evaluation_mode, lm_segment_loss

KINDS: tuple[str, ...] = get_args(get_type_hints(SyntheticConfig)["synthesizer"])
"""The synthesizer kinds --fit takes (``synthetic.synthesizer``'s values)."""

FIT_LOG_EVERY = 50
"""Plain progress line every this many fit segments (when stdout is not a terminal)."""


@dataclass(frozen=True)
class FitKind:
    """One synthesizer to fit: its kind and its context tokens (cDNI; 0 = state only)."""

    kind: str
    context_tokens: int = 0

    @property
    def label(self) -> str:
        """As --fit writes it: ``linear``, ``linear+3``."""
        return self.kind + (f"+{self.context_tokens}" if self.context_tokens else "")

    @property
    def name(self) -> str:
        """Its name in the probe's tables and JSON: ``fit:linear+3``."""
        return f"fit:{self.label}"


def parse_fit_kinds(text: str) -> list[FitKind]:
    """``linear,mlp,linear+3`` -> its FitKinds; a ValueError naming what is allowed."""
    allowed = f"allowed: {', '.join(KINDS)}, each optionally +N (N next tokens, e.g. linear+3)"
    out: list[FitKind] = []
    for item in (t.strip() for t in text.split(",")):
        kind, plus, n = item.partition("+")
        if kind not in KINDS or (plus and not (n.isdigit() and int(n) >= 1)):
            raise ValueError(f"{item!r} is not a synthesizer kind; {allowed}")
        fit = FitKind(kind, int(n) if plus else 0)
        if fit in out:
            raise ValueError(f"{item!r} is named twice")
        out.append(fit)
    return out


def fit_recipe(recipe: Recipe, fit: FitKind, settings: Sequence[str] = ()) -> Recipe:
    """``recipe`` with a fresh ``[synthetic]`` section for ``fit`` and ``settings``
    (``KEY=VALUE``, synthetic keys), validated as any recipe (a problem is a one-line
    UserError naming --fit or --fit-set)."""
    data = to_dict(recipe)
    data["synthetic"] = {
        "enabled": True,
        "synthesizer": fit.kind,
        "context_tokens": fit.context_tokens,
    }
    try:
        data = apply_overrides(data, [f"synthetic.{s}" for s in settings])
    except UserError as e:
        raise UserError(f"--fit-set: {e}") from None
    try:
        return from_dict(data)
    except UserError as e:
        flag = f"--fit {fit.label} with --fit-set {' '.join(settings)}" if settings else "--fit"
        raise UserError(f"{flag}: {fit.label}: {e}") from None


@dataclass
class Fitted:
    """A synthesizer being fitted: its recipe, its boundary and the SG stats of each step."""

    fit: FitKind
    recipe: Recipe
    boundary: SyntheticBoundary
    losses: list[float] = field(default_factory=list)
    zero_losses: list[float] = field(default_factory=list)  # what g_hat = 0 would score
    cos: list[float] = field(default_factory=list)

    @cached_property
    def values(self) -> RunValues:
        """What its recipe says that the fit acts on (the segment length)."""
        return run_values(self.recipe)

    def context(self, tokens: torch.Tensor, model: RNNLanguageModel, j: int) -> Any:
        """Its cDNI context at boundary j (before segment j), None without one."""
        n = self.fit.context_tokens
        if not n:
            return None
        return next_tokens_context(tokens, model.embedding.weight, j * self.values.bptt, n)

    def record(self, leaves: State) -> None:
        """Step the synthesizer on the gradient in ``leaves`` (its own, from ``start``) and
        keep its SG loss, that of a zero prediction on the same target, and sg_cos."""
        picked = range(len(leaves)) if self.boundary.joined is None else self.boundary.joined
        grads = tuple(
            torch.zeros_like(leaves[i]) if leaves[i].grad is None else leaves[i].grad
            for i in picked
        )
        target = join_state(grads) * self.boundary.target_scale
        stats = self.boundary.fit()
        self.losses.append(float(stats.loss))
        self.zero_losses.append(float(target.float().square().mean()))
        self.cos.append(float(stats.cos))

    def summary(self) -> dict[str, Any]:
        """What the JSON keeps of the fit: its synthetic keys and the SG loss, first and
        final (the mean over the last tenth of the steps, at least one), and the final one
        over a zero prediction's on the same targets (below 1: it learned something)."""
        tail = max(1, len(self.losses) // 10)
        final, zero = (
            statistics.fmean(self.losses[-tail:]),
            statistics.fmean(self.zero_losses[-tail:]),
        )
        return {
            "synthetic": to_dict(self.recipe)["synthetic"],
            "target_scale": self.boundary.target_scale,
            "joined": None if self.boundary.joined is None else list(self.boundary.joined),
            "sg_loss_first": self.losses[0],
            "sg_loss_final": final,
            "sg_loss_final_over_zero": final / zero if zero else None,
            "sg_cos_final": statistics.fmean(self.cos[-tail:]),
            "final_steps": tail,
        }


def build_fitted(
    recipe: Recipe, model: RNNLanguageModel, kinds: list[FitKind], settings: Sequence[str] = ()
) -> list[Fitted]:
    """A fresh synthesizer per kind, as the trainer builds it, in the model's dtype."""
    param = next(model.parameters())
    out = []
    for fit in kinds:
        r = fit_recipe(recipe, fit, settings)
        boundary, _ = build_synthesizer(r, model, param.device, 0)
        boundary.synthesizer.to(param.dtype)
        out.append(Fitted(fit, r, boundary))
    return out


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in eval mode (:func:`probe.evaluation_mode`) with no parameter requiring
    grad; both restored after."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with evaluation_mode([model]):
            yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def shared_input(leaves: list[State]) -> State:
    """One state equal to each of ``leaves`` (the same values, tensor by tensor) through
    which the gradient reaches every leaf in full: the first leaf plus, for each other one,
    ``leaf - leaf.detach()`` (exactly zero, gradient one)."""
    first, *rest = leaves
    out = []
    for i, t in enumerate(first):
        for leaf in rest:
            if leaf[i].requires_grad:
                t = t + (leaf[i] - leaf[i].detach())
        out.append(t)
    return tuple(out)


def fit_segment(
    fitted: list[Fitted],
    model: RNNLanguageModel,
    tokens: torch.Tensor,
    j: int,
    state: State,
    ar_alpha: float,
    tar_beta: float,
) -> tuple[float, State]:
    """One real-mode DNI step of every synthesizer at boundary j: the segment's loss and
    the next state (detached)."""
    segment_loss = lm_segment_loss(model, tokens, fitted[0].values.bptt, ar_alpha, tar_beta)
    leaves = [f.boundary.start(state, "real", f.context(tokens, model, j)) for f in fitted]
    loss, final = segment_loss(j, shared_input(leaves))
    loss.backward()  # real mode: what boundary.backward does, once for all of them
    for f, leaf in zip(fitted, leaves, strict=True):
        f.record(leaf)
    return float(loss.detach()), tuple(t.detach() for t in final)


def fit_synthesizers(
    fitted: list[Fitted],
    model: RNNLanguageModel,
    recipe: Recipe,
    tokens: torch.Tensor,
    segments: int,
    console: Console,
) -> None:
    """Fit every synthesizer of ``fitted`` over the first ``segments`` segments of
    ``tokens`` [steps, B] from a zero state, the model frozen; they end in eval mode."""
    v = run_values(recipe)
    state = tuple(
        t.to(next(model.parameters()).dtype)
        for t in model.init_state(tokens.shape[1], tokens.device)
    )
    title = "fit " + ",".join(f.fit.label for f in fitted)
    per_segment = tokens.shape[1] * v.bptt
    started = time.perf_counter()
    for f in fitted:
        f.boundary.synthesizer.train()
    with frozen(model), EpochProgress(console, title, segments, FIT_LOG_EVERY) as bar:
        for j in range(segments):
            loss, state = fit_segment(fitted, model, tokens, j, state, v.ar_alpha, v.tar_beta)
            rate = (j + 1) * per_segment / (time.perf_counter() - started)
            bar.update(j + 1, loss, rate)
    for f in fitted:
        f.boundary.synthesizer.eval()


def fit_on_run(
    run: LoadedRun,
    kinds: list[FitKind],
    segments: int | None,
    probe_tokens: torch.Tensor,
    console: Console | None = None,
    settings: Sequence[str] = (),
) -> tuple[dict[str, tuple[SynthesizerPredictor, tuple[int, ...] | None]], dict[str, Any]]:
    """Fit ``kinds`` (with the synthetic ``settings``, ``KEY=VALUE``) on ``run``'s train
    split (``segments`` of it; None: one pass) and return each as a predictor over
    ``probe_tokens`` with the state tensors it sees, by name, and the fit's JSON record."""
    tokens = stream_tokens(run, "train")
    bptt = run.values.bptt
    available = (tokens.shape[0] - 1) // bptt
    segments = available if segments is None else segments
    if segments > available:
        raise UserError(
            f"--fit-segments: {segments} is more than one pass over the train split "
            f"({available} segments of {bptt} rows); use at most {available}"
        )
    fitted = build_fitted(run.recipe, run.model, kinds, settings)
    started = time.perf_counter()
    console = console or silent_console()
    fit_synthesizers(fitted, run.model, run.recipe, tokens, segments, console)
    predictors = {
        f.fit.name: (
            boundary_predictor(f.boundary, run.model, f.recipe, probe_tokens),
            f.boundary.joined,
        )
        for f in fitted
    }
    record = {
        "kinds": [f.fit.label for f in fitted],
        "settings": list(settings),
        "split": "train",
        "segments": segments,
        "rows_per_segment": bptt,
        "seconds": time.perf_counter() - started,
        "synthesizers": {f.fit.name: f.summary() for f in fitted},
    }
    return predictors, record
