"""One segment of truncated backpropagation through time, with synthetic gradients or without.

    state = boundary.start(state, mode)          # leaf; g_hat(s_k) kept
    loss, final = forward(state)                 # the caller's model and loss
    boundary.backward(loss, final, mode)         # one pass; + scale*<g_hat(s_k+1), s_k+1>
    stats = boundary.fit()                       # the synthesizer's regression step
    clip; optimizer step; next state = final, detached

The language-model trainer (``train.py``) and the copy-task horizon experiment
(``horizon.py``) both run their segments through :func:`segment_step`; they differ only in
what ``forward`` computes. Without a boundary it is plain TBPTT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .boundary import SGStats, SyntheticBoundary
from .carry import State

Forward = Callable[[State], tuple[torch.Tensor, State, Any]]
"""``forward(state) -> (loss, final state, anything else the caller wants back)``."""


@dataclass
class SegmentResult:
    state: State  # the final state, detached: where the next segment starts
    stats: SGStats | None  # the synthesizer's fit at this boundary (None if none ran)
    output: Any  # the third thing ``forward`` returned

    def sg_numbers(self) -> list[torch.Tensor]:
        """The synthesizer's loss, cos and norm ratio as float tensors; none if it did not
        fit (the numbers a metrics line averages)."""
        s = self.stats
        return [] if s is None else [s.loss.float(), s.cos.float(), s.norm_ratio.float()]


def segment_step(
    forward: Forward,
    state: State,
    optimizer: torch.optim.Optimizer,
    *,
    boundary: SyntheticBoundary | None = None,
    mode: str = "real",
    context: torch.Tensor | None = None,
    next_context: torch.Tensor | None = None,
    clip: float = 0.0,
) -> SegmentResult:
    """Train one segment from ``state`` and step ``optimizer``.

    ``mode``: "real" or "synthetic" (see ``SyntheticBoundary``); ``context`` and
    ``next_context``: a conditioned synthesizer's contexts of this segment's boundary and
    the next one. ``clip`` > 0 clips the gradient norm of the optimizer's parameters.
    """
    if boundary is not None:
        state = boundary.start(state, mode, context)
    optimizer.zero_grad(set_to_none=True)
    loss, final, output = forward(state)
    stats = None
    if boundary is not None:
        boundary.backward(loss, final, mode, next_context)
        stats = boundary.fit()
    else:
        loss.backward()
    if clip > 0:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    return SegmentResult(tuple(t.detach() for t in final), stats, output)
