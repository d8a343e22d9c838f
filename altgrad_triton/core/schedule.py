"""The training plan as a pure function of the epoch: learning rate, gradient mode, restart.

Nothing here holds state, so a resumed run recomputes exactly the plan it would have
followed, and a test can check any epoch of any plan directly.

* ``CosineWarmRestarts``: SGDR on the epoch index. Within a cycle of ``period`` epochs,
  epoch ``t`` (0 at the cycle's first epoch) gets
  ``lr_min + (lr_max - lr_min) / 2 * (1 + cos(pi * t / period))``; the last period repeats.
* ``AlternationPlan``: the gradient mode of each epoch: a starting mode, switched at the start
  of each listed epoch and, if asked, at every warm restart (the paper's contribution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Mode = Literal["real", "synthetic"]


@dataclass(frozen=True)
class CosineWarmRestarts:
    """Cosine annealing with warm restarts over epochs (1-based); constant when periods=()."""

    lr_max: float
    periods: tuple[int, ...] = ()
    lr_min: float = 0.0

    def cycle_of(self, epoch: int) -> tuple[int, int, int]:
        """(cycle index, epoch within cycle from 0, period) for a 1-based epoch."""
        if not self.periods:
            return 0, epoch - 1, 0
        t, cycle = epoch - 1, 0
        while True:
            period = self.periods[min(cycle, len(self.periods) - 1)]
            if t < period:
                return cycle, t, period
            t -= period
            cycle += 1

    def lr(self, epoch: int) -> float:
        _, t, period = self.cycle_of(epoch)
        if not period:
            return self.lr_max
        return self.lr_min + (self.lr_max - self.lr_min) / 2 * (1 + math.cos(math.pi * t / period))

    def is_restart(self, epoch: int) -> bool:
        """True for the first epoch of every cycle after the first."""
        cycle, t, _ = self.cycle_of(epoch)
        return bool(self.periods) and cycle > 0 and t == 0


@dataclass(frozen=True)
class AlternationPlan:
    """Which gradients an epoch trains with."""

    start: Mode = "real"
    switch_epochs: tuple[int, ...] = ()
    switch_at_restarts: bool = False
    enabled: bool = True

    def mode(self, epoch: int, lr_plan: CosineWarmRestarts) -> Mode:
        if not self.enabled:
            return "real"
        switches = sum(
            1
            for e in range(2, epoch + 1)
            if e in self.switch_epochs or (self.switch_at_restarts and lr_plan.is_restart(e))
        )
        flip = {"real": "synthetic", "synthetic": "real"}
        return self.start if switches % 2 == 0 else flip[self.start]


@dataclass(frozen=True)
class EpochPlan:
    epoch: int
    lr: float
    mode: Mode
    restart: bool


@dataclass(frozen=True)
class TrainingPlan:
    """lr schedule + alternation: ``plan(epoch) -> EpochPlan``."""

    lr_plan: CosineWarmRestarts
    alternation: AlternationPlan

    def __call__(self, epoch: int) -> EpochPlan:
        return EpochPlan(
            epoch,
            self.lr_plan.lr(epoch),
            self.alternation.mode(epoch, self.lr_plan),
            self.lr_plan.is_restart(epoch),
        )
