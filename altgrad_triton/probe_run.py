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

import statistics
from dataclasses import asdict
from typing import Any

import torch

from . import data
from .build import build_synthesizer
from .errors import UserError
from .inference import LoadedRun
from .probe import (
    BoundaryProbe,
    SynthesizerPredictor,
    horizons_up_to,
    layer_groups,
    lm_segment_loss,
    probe_stream,
)

DEFAULT_BOUNDARIES = 4
"""Boundaries probed when none are named: evenly spaced over the stream."""


def stream_tokens(run: LoadedRun, split: str) -> torch.Tensor:
    """The split's ids in the columns the run used: ``data.batch_size`` for train (the
    trajectory the synthesizer was fitted on), ``data.eval_batch_size`` otherwise."""
    d = run.recipe.data
    columns = d.batch_size if split == "train" else d.eval_batch_size
    ids = run.split(split)
    data.check_batch_size(len(ids), columns, "batch size")
    return data.batchify(ids, columns).to(run.device)


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
    r = run.recipe
    if not r.synthetic.enabled or weights is None:
        return None, None
    boundary, _ = build_synthesizer(r, run.model, run.device, 0)
    synth = boundary.synthesizer
    synth.load_state_dict(weights)
    synth.to(next(run.model.parameters()).dtype).eval()
    context = None
    if r.synthetic.context_tokens:
        from .train import next_tokens_context

        def context(k: int) -> torch.Tensor:
            emb = run.model.embedding.weight
            return next_tokens_context(tokens, emb, k * r.bptt.length, r.synthetic.context_tokens)

    return SynthesizerPredictor(synth, boundary.target_scale, context), boundary.joined


def probe_run(
    run: LoadedRun,
    synth_weights: dict[str, torch.Tensor] | None,
    *,
    split: str = "train",
    boundaries: list[int] | None = None,
    max_horizon: int = 8,
    float64: bool = False,
) -> dict[str, Any]:
    """Probe ``run`` on ``split``; the report (settings, every boundary, means per M)."""
    if float64:
        if run.device.type != "cpu":
            raise UserError("float64: runs on the CPU; use --device cpu")
        run.model.double()
    tokens = stream_tokens(run, split)
    bptt = run.recipe.bptt.length
    segments = (tokens.shape[0] - 1) // bptt
    horizons = horizons_up_to(max_horizon)
    boundaries = boundaries or default_boundaries(segments, max_horizon)
    bad = [k for k in boundaries if k < 1 or k + max_horizon > segments]
    if bad:
        raise UserError(
            f"boundaries: {bad} out of range; with {segments} segments of {bptt} rows and "
            f"--max-horizon {max_horizon} a boundary must be from 1 to {segments - max_horizon}"
        )
    predictor, joined = run_synthesizer(run, synth_weights, tokens)
    predictors = {} if predictor is None else {run.recipe.synthetic.synthesizer: predictor}
    o = run.recipe.optim
    probes = probe_stream(
        lm_segment_loss(run.model, tokens, bptt, o.ar_alpha, o.tar_beta),
        tuple(
            t.to(next(run.model.parameters()).dtype)
            for t in run.model.init_state(tokens.shape[1], run.device)
        ),
        segments,
        boundaries,
        horizons,
        layer_groups(run.model),
        predictors,
        joined,
    )
    return probe_record(
        probes, horizons, boundaries, predictors,
        run=str(run.run_dir),
        checkpoint=run.checkpoint,
        epoch=(run.meta.get("metrics") or {}).get("epoch"),
        split=split,
        bptt=bptt,
        batch_size=tokens.shape[1],
        segments=segments,
        dtype="float64" if float64 else "float32",
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
