"""The parts of a run that are not the loop: each is a hook the trainer calls at fixed points,
so that the loop reads top to bottom (``train.py``) and a new part of a run is a new hook,
not a new branch in the loop.

The points, in the order a run meets them::

    attach(trainer)           built, before anything trains (refuse a run the hook cannot serve)
    opened(trainer)           the run starts or resumes; closed(trainer) when it ends, however
      after_segment(trainer, segment)      every training segment
      after_epoch(trainer, plan, row)      the epoch's metrics line written, before checkpoints
      after_best(trainer, val)             validation judged and ``best`` saved, before ``last``
      finished(trainer) -> bool            asked before each epoch: has the run reached its end?
    resumed(trainer)          a checkpoint was restored: drop what it does not cover

Here: NT-ASGD and fine-tuning (``NtAsgd``). TensorBoard is ``board.TensorBoard``; the
truncation probe per epoch lives with the probe (``probe.per_epoch.EpochProbe``), handed to
the trainer by ``altgrad-train``: the run never imports the wings above it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config.recipe import Recipe
from ..core import asgd
from ..errors import UserError
from .build import Components
from .checkpoint import checks
from .checkpoint.checkpointer import Checkpointer
from .checkpoint.contents import RunState, start_averaging
from .distributed import DistContext


class Trainer(Protocol):
    """What a hook sees of the trainer that calls it (``train.Trainer``)."""

    recipe: Recipe
    run_dir: Path
    dist: DistContext
    console: Any
    parts: Components
    run_state: RunState


@dataclass(frozen=True)
class SegmentDone:
    """One trained segment, as the hooks see it."""

    index: int  # segments of the epoch done, this one included
    seq_len: int
    lr: float
    ce: float  # mean cross-entropy over ranks
    sg: list[float]  # SG loss, cos, norm ratio (empty without a synthesizer)


class RunHook:
    """A part of a run, called at the loop's fixed points (module docstring); every point
    does nothing unless a hook overrides it. ``serves`` names the recipe key a hook from
    outside ``run/`` carries out (the trainer refuses a recipe that asks for it without it)."""

    serves = ""

    def attach(self, trainer: Trainer) -> None: ...

    def opened(self, trainer: Trainer) -> None: ...

    def closed(self, trainer: Trainer) -> None: ...

    def after_segment(self, trainer: Trainer, segment: SegmentDone) -> None: ...

    def after_epoch(self, trainer: Trainer, plan: Any, row: dict) -> None: ...

    def after_best(self, trainer: Trainer, val: float) -> None: ...

    def finished(self, trainer: Trainer) -> bool:
        return False

    def resumed(self, trainer: Trainer) -> None: ...


class Hooks:
    """The hooks of one run, called in order at each point."""

    def __init__(self, hooks: Sequence[RunHook], asks: dict[str, str]):
        """``asks``: recipe key -> the hook from outside ``run/`` that carries it out; a
        recipe that asks for one the run was not given is refused (not silently ignored)."""
        for key in set(asks) - {h.serves for h in hooks}:
            raise UserError(f"{key}: needs the hook that carries it out: hooks=[{asks[key]}]")
        self.hooks = list(hooks)

    def call(self, point: str, trainer: Trainer, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, point)(trainer, *args)

    def finished(self, trainer: Trainer) -> bool:
        return any(hook.finished(trainer) for hook in self.hooks)

    @contextlib.contextmanager
    def open(self, trainer: Trainer) -> Iterator[None]:
        """``opened`` now, ``closed`` however the block ends."""
        try:
            self.call("opened", trainer)
            yield
        finally:
            self.call("closed", trainer)


@dataclass
class NtAsgd(RunHook):
    """AWD-LSTM's NT-ASGD: with ``switch`` (``optim.name = "nt-asgd"``), averaged SGD from the
    epoch where validation stops improving (``asgd.nonmonotonic`` over ``nonmono`` epochs).
    A fine-tuning (``parent``: a run whose best weights it starts from) averages from its first
    epoch and ends at that same criterion, as AWD-LSTM's finetune.py."""

    switch: bool
    nonmono: int
    parent: Path | None

    def opened(self, trainer: Trainer) -> None:
        if self.parent is not None and trainer.run_state.averaging_since is None:  # fresh
            self.start_from_parent(trainer)

    def after_best(self, trainer: Trainer, val: float) -> None:
        """After the best checkpoint's save: a switch before it would save averages that
        have not taken a step yet."""
        run = trainer.run_state
        if not self.switch or not asgd.nonmonotonic(run.val_losses, self.nonmono):
            return
        if self.parent is not None:  # averaging since its start: AWD's finetune.py stops
            what = "fine-tuning done"
        elif run.averaging_since is None:
            start_averaging(trainer.parts, run, run.epoch - 1)
            what = "switching to averaged SGD"
        else:
            return
        trainer.console.print(
            f"epoch {run.epoch - 1}: validation loss {val:.4f} is worse than the best before "
            f"the last {self.nonmono} epoch(s): {what} (NT-ASGD)",
            markup=False,
        )

    def finished(self, trainer: Trainer) -> bool:
        return self.parent is not None and asgd.nonmonotonic(
            trainer.run_state.val_losses, self.nonmono
        )

    def start_from_parent(self, trainer: Trainer) -> None:
        """The parent run's best weights, averaged SGD from the first epoch."""
        parts = trainer.parts
        ckpt = Checkpointer(self.parent).load_parent(trainer.recipe, parts.corpus.vocab)
        checks.load_weights(parts.model, ckpt.weights, ckpt.where or self.parent)
        start_averaging(parts, trainer.run_state, 0)
        made = ckpt.meta.get("metrics") or {}
        trainer.console.print(
            f"fine-tuning {self.parent}'s best checkpoint (epoch {made.get('epoch', '?')}, "
            f"val ppl {made.get('val_ppl', float('nan')):.2f}) with averaged SGD from the "
            "first epoch",
            markup=False,
        )
