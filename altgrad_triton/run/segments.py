"""How a run cuts its training split into segments, and what one segment costs.

Both are handed out by the builders (``build.py``), so that the loop, the board's step axis and
resume read ``bptt`` from one place, and the trainer never looks into a recipe.

* ``SegmentPlan``: the ``(start, length)`` segments of an epoch: AWD-LSTM's random lengths
  drawn from a generator seeded by the run's seed and the epoch (the same on every rank and
  after a resume), a window of ``max_segments`` consecutive ones when the run is capped, and
  each segment's learning rate (scaled by length / bptt for random lengths).
* ``SegmentObjective`` (``core.model``): one segment's forward pass and loss, the same for
  training, evaluation and the probe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import data
from ..core.model import SegmentObjective

__all__ = ["SegmentObjective", "SegmentPlan"]


@dataclass(frozen=True)
class SegmentPlan:
    """The training segments of each epoch; a pure function of the epoch."""

    length: int  # bptt.length
    random_length: bool  # bptt.random_length: AWD-LSTM's lengths around ``length``
    max_segments: int  # run.max_batches: 0 = the whole split each epoch
    seed: int  # run.seed

    def epoch(self, rows: int, epoch: int) -> list[data.Segment]:
        """The ``(start, length)`` segments of ``epoch`` over a split of ``rows`` steps.
        A capped run takes the next window each epoch, so it still sees the whole split."""
        gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        segments = data.segment_lengths(rows, self.length, self.random_length, gen)
        k = self.max_segments
        if k and k < len(segments):
            first = (epoch - 1) % (len(segments) // k) * k
            segments = segments[first : first + k]
        return segments

    def steps_before(self, rows: int, epoch: int) -> int:
        """The training segments of the epochs before ``epoch`` (TensorBoard's step axis),
        recomputed from the plan, so that a resumed run has it."""
        return sum(len(self.epoch(rows, e)) for e in range(1, epoch))

    def lr(self, epoch_lr: float, seq_len: int) -> float:
        """A segment's learning rate: the epoch's, scaled by len/bptt for random lengths."""
        return epoch_lr * seq_len / self.length if self.random_length else epoch_lr
