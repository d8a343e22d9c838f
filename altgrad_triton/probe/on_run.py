"""The probe (``probe.py``) on a trained language-model run: its model, synthesizer and data.

The model runs in eval mode: no dropout, so the gradients measured are those of one
deterministic function (the masks of a training step would make every number a draw of
its own), and the synthesizer without input noise or dropout, its mean prediction. The
loss is the trainer's (cross-entropy + AR/TAR), segments are ``bptt.length`` rows each
(fixed, not AWD's random lengths) from the first row of the split, the state starts at
zero there and is carried as training carries it. ``float64`` runs the model and the
synthesizer in double precision (on the CPU) so that small gradients are not rounding.
"""

from __future__ import annotations

import contextlib
import statistics
from dataclasses import asdict
from typing import Any

import torch

from ..config.recipe import Recipe
from ..core.model import RNNLanguageModel
from ..errors import UserError
from ..progress import ProgressOption, StepProgress, open_progress
from ..run.build import build_synthesizer
from ..run.inference import LoadedRun
from ..run.values import run_values
from .fit import fit_on_run
from .run_stream import boundary_predictor, stream_tokens
from .truncation import (
    BoundaryProbe,
    Predictor,
    SynthesizerPredictor,
    horizons_up_to,
    layer_groups,
    lm_segment_loss,
    probe_stream,
)

DEFAULT_BOUNDARIES = 4
"""Boundaries probed when none are named: evenly spaced over the stream."""

PROGRESS_LINES = 10
"""Plain-text progress lines over one probe when stdout is not a terminal."""


def default_boundaries(segments: int, max_horizon: int, n: int = DEFAULT_BOUNDARIES) -> list[int]:
    """``n`` boundaries evenly spaced in 1 .. segments - max_horizon."""
    last = segments - max_horizon
    if last < 1:
        raise UserError(
            f"max-horizon: {max_horizon} leaves no boundary in a stream of {segments} "
            f"segments; use at most {segments - 1}"
        )
    n = min(n, last)
    return sorted({1 + round(i * (last - 1) / max(n - 1, 1)) for i in range(n)})


def run_synthesizer(
    run: LoadedRun, weights: dict[str, torch.Tensor] | None, tokens: torch.Tensor
) -> tuple[SynthesizerPredictor | None, tuple[int, ...] | None]:
    """The run's synthesizer, its saved weights loaded, as a predictor (None for a run
    without one), and the state tensors it sees (None: all)."""
    if run.values.synthesizer is None or weights is None:
        return None, None
    boundary, _ = build_synthesizer(run.recipe, run.model, run.device, 0)
    boundary.synthesizer.load_state_dict(weights)
    boundary.synthesizer.to(next(run.model.parameters()).dtype).eval()
    return boundary_predictor(boundary, run.model, run.recipe, tokens), boundary.joined


def probe_run(
    run: LoadedRun,
    synth_weights: dict[str, torch.Tensor] | None,
    *,
    split: str = "train",
    boundaries: list[int] | None = None,
    max_horizon: int = 8,
    float64: bool = False,
    fit: list[Any] | None = None,
    fit_segments: int | None = None,
    fit_settings: list[str] | None = None,
    console: Any = None,
) -> dict[str, Any]:
    """Probe ``run`` on ``split``; the report (settings, every boundary, means per M).

    ``fit``: ``probe_fit.FitKind``s fitted fresh on the run's train trajectory first
    (``fit_segments`` segments, None: one pass; ``fit_settings``: synthetic ``KEY=VALUE``
    for all of them), scored beside the run's own synthesizer. Progress (the fit's and the
    probe's: the default boundaries span the whole split, minutes for a paper-size model)
    on ``console`` if given."""
    if float64:
        if run.device.type != "cpu":
            raise UserError("float64: runs on the CPU; use --device cpu")
        run.model.double()
    tokens = stream_tokens(run, split)
    predictor, joined = run_synthesizer(run, synth_weights, tokens)
    predictors = {} if predictor is None else {run.values.synthesizer: predictor}
    joined_by, fit_record = {}, None
    if fit:
        fitted, fit_record = fit_on_run(run, fit, fit_segments, tokens, console, fit_settings or ())
        for name, (fitted_predictor, fitted_joined) in fitted.items():
            predictors[name], joined_by[name] = fitted_predictor, fitted_joined
    record = probe_lm(
        run.model, run.recipe, tokens, predictors, joined, boundaries, max_horizon, "boundaries",
        joined_by=joined_by, progress=console, title=f"probing the {split} split",
    )  # fmt: skip
    return {
        "run": str(run.run_dir),
        "checkpoint": run.checkpoint,
        "epoch": run.epoch,
        "made": run.made,
        "split": split,
        "dtype": "float64" if float64 else "float32",
        **({"fit": fit_record} if fit_record else {}),
        **record,
    }


def check_boundaries(
    boundaries: list[int], segments: int, bptt: int, max_horizon: int, field: str
) -> None:
    """A UserError naming ``field`` unless every boundary k has 1 <= k and its longest
    horizon inside the ``segments`` of ``bptt`` rows."""
    bad = [k for k in boundaries if k < 1 or k + max_horizon > segments]
    if bad:
        raise UserError(
            f"{field}: {bad} out of range; with {segments} segments of {bptt} rows and a "
            f"longest horizon of {max_horizon} a boundary must be from 1 to "
            f"{segments - max_horizon}"
        )


def probe_lm(
    model: RNNLanguageModel,
    recipe: Recipe,
    tokens: torch.Tensor,
    predictors: dict[str, Predictor],
    joined: tuple[int, ...] | None,
    boundaries: list[int] | None,
    max_horizon: int,
    field: str,
    joined_by: dict[str, tuple[int, ...] | None] | None = None,
    progress: ProgressOption | None = False,
    title: str = "probing",
) -> dict[str, Any]:
    """Probe ``model`` (in the mode the caller set) over ``tokens`` [steps, B] with the
    recipe's loss and segments of ``bptt.length`` rows, from a zero state; the record of
    ``probe_record`` with the bptt, batch and segment count. ``field`` names where bad
    ``boundaries`` came from in the error (a flag or a recipe key); ``joined_by``: the
    state tensors of the predictors that see others than ``joined``; ``progress``: a bar
    over the segments up to the last boundary (``progress.ProgressOption``)."""
    v = run_values(recipe)
    bptt = v.bptt
    segments = (tokens.shape[0] - 1) // bptt
    horizons = horizons_up_to(max_horizon)
    boundaries = boundaries or default_boundaries(segments, max_horizon)
    check_boundaries(boundaries, segments, bptt, max_horizon, field)
    dtype = next(model.parameters()).dtype
    last = max(boundaries)
    bar = open_progress(progress, StepProgress, title, last, max(1, last // PROGRESS_LINES))
    with bar or contextlib.nullcontext():
        probes = probe_stream(
            lm_segment_loss(model, tokens, bptt, v.ar_alpha, v.tar_beta),
            tuple(t.to(dtype) for t in model.init_state(tokens.shape[1], tokens.device)),
            segments,
            boundaries,
            horizons,
            layer_groups(model),
            predictors,
            joined,
            joined_by,
            on_segment=None if bar is None else bar.update,
        )
    return probe_record(
        probes, horizons, boundaries, predictors,
        bptt=bptt,
        batch_size=tokens.shape[1],
        segments=segments,
        mode="eval (dropout and synthesizer noise off)",
    )  # fmt: skip


def probe_record(
    probes: list[BoundaryProbe],
    horizons: tuple[int, ...],
    boundaries: list[int],
    predictors: dict,
    **about: Any,
) -> dict[str, Any]:
    """The JSON record of one probe: ``about`` (what was probed: run, split, bptt, dtype,
    ...), then the horizons, boundaries and synthesizers, the means and every boundary."""
    return {
        **about,
        "horizons": list(horizons),
        "boundaries": sorted(set(boundaries)),
        "synthesizers": list(predictors),
        "mean": summarize(probes),
        "per_boundary": [asdict(p) for p in probes],
    }


def summarize(probes: list[BoundaryProbe]) -> dict[str, Any]:
    """Means over the boundaries, per horizon M, of every number of ``HorizonProbe``; a
    layer's ``ratio`` is the ratio of its mean norms (discarded / within), so a boundary
    whose segment had no loss (within zero: the copy task's unscored steps) cannot make
    it infinite."""
    out: dict[str, Any] = {}
    for i, first in enumerate(probes[0].horizons):
        mean = _mean_tree([asdict(p.horizons[i]) for p in probes])
        for share in mean["layers"].values():
            w = share["within_norm"]
            share["ratio"] = share["discarded_norm"] / w if w else None
        out[str(first.horizon)] = mean
    return out


def _mean_tree(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The element-wise mean of dicts of the same shape (nested dicts of floats), over the
    rows where a value is not None (None where none has one)."""
    out: dict[str, Any] = {}
    for key, value in rows[0].items():
        if isinstance(value, dict):
            out[key] = _mean_tree([r[key] for r in rows])
        else:
            values = [float(r[key]) for r in rows if r[key] is not None]
            out[key] = statistics.fmean(values) if values else None
    return out
