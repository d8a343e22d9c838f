"""The split-K scratch of the LSTM steps: the fp32 partial product of every K slice and the
int32 ticket counters of the last-arriver sums, sized for every config a launch may run.

A launch makes its own partials and borrows the stream's shared ticket counters
(``_common.ticket_counters``) unless it is given a workspace of its own
(:func:`lstm_workspace`), as the GPU race tests do: the counters are zero between
launches, so one workspace serves every step, and any number of segments, in turn.

Apart from the launchers because its sizing depends only on the configs (the K slices and
tiles a meta makes), not on how the steps are scheduled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import tuning
from .._common import ticket_counters
from .configs import (
    _as_meta,
    _block_b,
    _lstm_bwd_step_tuned,
    _lstm_fwd_step_tuned,
    _n_slices,
)


@dataclass
class SplitKWorkspace:
    """Scratch of one direction's split-K steps: fp32 partial products and int32 ticket
    counters. The counters are zero between launches (each tile's last arriver resets its
    own), so one workspace serves every step, and any number of segments, in turn."""

    partials: torch.Tensor
    counters: torch.Tensor


def _reduction(direction: str, hidden: int) -> tuple[int, int]:
    """(K of the split reduction, output columns per batch row) of ``direction``."""
    return (hidden, 4 * hidden) if direction == "fwd" else (4 * hidden, hidden)


def _workspace_need(direction: str, batch: int, hidden: int, metas: list[dict]) -> tuple[int, int]:
    k, cols = _reduction(direction, hidden)
    parts = max(_n_slices(k, m) for m in metas) * batch * cols
    tiles = max(tuning.cdiv(batch, m["BLOCK_B"]) * tuning.cdiv(hidden, m["BLOCK_H"]) for m in metas)
    return parts, tiles


def _candidates_for(direction: str, batch: int, device) -> list[dict]:
    """What ``@triton.autotune`` may launch on ``device`` for this batch size (after its
    pruning)."""
    tuned = _lstm_fwd_step_tuned if direction == "fwd" else _lstm_bwd_step_tuned
    metas = tuned.metas(device)
    return [m for m in metas if m["BLOCK_B"] == _block_b(batch)] or metas


def lstm_workspace(
    direction: str, batch: int, hidden: int, device: torch.device | str, meta: dict | None = None
) -> SplitKWorkspace:
    """A workspace of its own (the launchers otherwise share the stream's ticket counters,
    ``_common.ticket_counters``) big enough for ``direction`` ("fwd" or "bwd") at this
    shape, launched with ``meta`` (None: any config the autotuner may pick)."""
    if direction not in ("fwd", "bwd"):
        raise ValueError(f"lstm_workspace: direction must be 'fwd' or 'bwd', got {direction!r}")
    metas = [_as_meta(meta)] if meta is not None else _candidates_for(direction, batch, device)
    parts, tiles = _workspace_need(direction, batch, hidden, metas)
    return SplitKWorkspace(
        torch.empty(parts, device=device, dtype=torch.float32),
        torch.zeros(tiles, device=device, dtype=torch.int32),
    )


def _use_workspace(
    ws: SplitKWorkspace | None, direction: str, batch: int, hidden: int, device, meta
) -> SplitKWorkspace:
    """``ws`` checked, or fresh partials with the stream's shared ticket counters."""
    metas = [meta] if meta is not None else _candidates_for(direction, batch, device)
    parts, tiles = _workspace_need(direction, batch, hidden, metas)
    if ws is None:
        partials = torch.empty(parts, device=device, dtype=torch.float32)
        return SplitKWorkspace(partials, ticket_counters(torch.device(device), tiles))
    if ws.partials.numel() < parts or ws.counters.numel() < tiles:
        raise ValueError(
            f"workspace: too small for {direction} B={batch} H={hidden}: needs {parts} "
            f"partials and {tiles} counters, has {ws.partials.numel()} and "
            f"{ws.counters.numel()} (make it with lstm_workspace)"
        )
    return ws
