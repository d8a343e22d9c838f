"""The probe (``probe.py``) on the copy task, the positive control: a truncation short of the
pattern, where a synthetic gradient is known to help at times (``horizon.py``).

A trained copy model (``horizon.train``) reads a fresh stream of episodes at the level it
ended at (N, R), from a zero state; segment j is ``truncation`` steps, its loss the training
one (cross-entropy summed over the scored steps, mean over columns). The run's linear or MLP
synthesizer (sg runs) is probed in eval mode, in gradient units. The report has the shape
of ``probe_run.probe_run``'s, so ``altgrad-probe``'s tables print it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..core.carry import State
from ..probe.on_run import default_boundaries, probe_record
from ..probe.truncation import (
    SegmentLoss,
    SynthesizerPredictor,
    horizons_up_to,
    layer_groups,
    probe_stream,
)
from .horizon import VOCAB, CopyStream, Trained

COPY_BOUNDARIES = 16
"""Boundaries probed by default: more than on text, since a copy segment may hold no
scored step (its loss, and the gradient truncation discards from it, are then zero)."""

STREAM_SEED_OFFSET = 1_000_003
"""The probe's stream is drawn from seed + this: episodes the run did not train on."""


def copy_segment_loss(
    trained: Trained, stream: tuple[torch.Tensor, ...], truncation: int, dtype: torch.dtype
) -> SegmentLoss:
    """Segment j of ``stream`` (inputs, targets, mask [steps, B]) with the training loss."""
    inputs, targets, mask = stream
    model = trained.model

    def segment(j: int, state: State) -> tuple[torch.Tensor, State]:
        rows = slice(j * truncation, (j + 1) * truncation)
        x = F.one_hot(inputs[rows], VOCAB).to(dtype)
        hs, final = model.lstm(x, state)
        logits = model.head(hs)
        ce = F.cross_entropy(logits.reshape(-1, VOCAB), targets[rows].reshape(-1), reduction="none")
        return (ce.view_as(mask[rows]) * mask[rows]).sum() / mask.shape[1], final

    return segment


def probe_copy(
    trained: Trained,
    *,
    segments: int = 64,
    boundaries: list[int] | None = None,
    max_horizon: int = 8,
    float64: bool = True,
) -> dict[str, Any]:
    """Probe a trained copy model on ``segments`` fresh segments at its last level."""
    row, model = trained.row, trained.model.eval()
    dtype = torch.float64 if float64 else torch.float32
    model.to(dtype)
    gen = torch.Generator().manual_seed(row["seed"] + STREAM_SEED_OFFSET)
    stream = CopyStream(row["batch_size"], gen, row["n"], row["r"])
    tokens = stream.next(segments * row["truncation"])
    horizons = horizons_up_to(max_horizon)
    boundaries = boundaries or default_boundaries(segments, max_horizon, COPY_BOUNDARIES)
    predictors = {}
    if trained.boundary is not None:
        synth = trained.boundary.synthesizer.to(dtype).eval()
        predictors[row["synthesizer"]] = SynthesizerPredictor(synth, trained.boundary.target_scale)
    probes = probe_stream(
        copy_segment_loss(trained, tokens, row["truncation"], dtype),
        tuple(t.to(dtype) for t in model.init_state(row["batch_size"])),
        segments,
        boundaries,
        horizons,
        layer_groups(model),
        predictors,
    )
    return probe_record(
        probes, horizons, boundaries, predictors,
        run=f"{row['task']} {row['method']} T={row['truncation']} seed {row['seed']}",
        checkpoint="end of run",
        epoch=None,
        level={"n": row["n"], "r": row["r"], "solved": row["solved"]},
        split="fresh episodes",
        bptt=row["truncation"],
        batch_size=row["batch_size"],
        segments=segments,
        dtype=str(dtype).removeprefix("torch."),
        mode="eval",
    )  # fmt: skip
