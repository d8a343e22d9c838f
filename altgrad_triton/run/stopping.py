"""How a run stops other than at its end: on a signal (Ctrl-C, a scheduler's SIGTERM, a
closed terminal), on a non-finite loss, on a write that fails. Each stops with ``last`` saved
where it can, and says in one line what was kept and the command that continues.

A stop is asked for by this process (``request``) and agreed by every rank (``agreed``,
reduced with the segment's numbers): kept apart because a signal may land between a segment's
agreement and the look at it, and torchrun's agent signals the ranks one after the other.
Acting on the request there would let one rank save alone while the other trains on (each
then waits in a collective until the timeout); taking the agreed stop for a request would
make the rank's own signal a second request, which aborts without saving.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from . import distributed as ddp
from .folder import write_failure

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, and what a scheduler (SLURM, Kubernetes, torchrun's agent) or a closed terminal
sends before it kills: each stops the run after its segment with ``last`` saved, and the run
exits with 128 + the signal's number (130, 143, 129), as a shell reports a signal."""


class TrainingStopped(UserError):
    """The run stopped on purpose (Ctrl-C, SIGTERM, SIGHUP) or on a non-finite loss; the
    message says which checkpoint was kept."""


class StopRequests:
    """One run's stop protocol (module docstring): the request, the agreement, the words."""

    def __init__(self, run_dir: Path, dist: ddp.DistContext, console: Any):
        self.run_dir, self.dist, self.console = run_dir, dist, console
        self.requested, self.signal, self.agreed = False, signal.SIGINT, False

    @contextlib.contextmanager
    def on_signals(self) -> Iterator[None]:
        """Each of STOP_SIGNALS asks for a stop while the run trains."""
        previous = {s: signal.signal(s, lambda n, _: self.request(n)) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def request(self, signum: int = signal.SIGINT) -> None:
        """Stop after the current segment and save (Ctrl-C, or ``signum`` of STOP_SIGNALS);
        asked twice (this process: a stop that another rank asked for does not count),
        abort at once. The request travels with the next segment's agreement (or the
        epoch's), so that every rank stops after the same segment. Under torchrun a SIGTERM
        may also mean that another rank failed: the segment's collective then fails, or
        ``ddp.exit_after_grace`` ends it."""
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signal = True, signum
        if signum == signal.SIGINT:
            said = "stopping after this segment (Ctrl-C again to abort without saving)"
        else:
            said = f"{signal.Signals(signum).name}: stopping after this segment to save"
        self.console.print(said, markup=False)
        if signum == signal.SIGTERM and self.dist.enabled:
            ddp.exit_after_grace(self.dist, f"Continue with: {self.resume_hint()}")

    def agree(self, device: torch.device) -> bool:
        """Whether any rank asked for a stop (one flag reduction, as after a segment)."""
        _, stop = ddp.mean_and_any([torch.zeros((), device=device)], self.requested, self.dist)
        return stop

    def stopped(self, where: str) -> TrainingStopped:
        """The error that ends a run stopped on request, ``last`` saved ``where``."""
        by = "" if self.signal == signal.SIGINT else f" by {signal.Signals(self.signal).name}"
        return TrainingStopped(
            f"interrupted{by} {where}; saved. Continue with: {self.resume_hint()}",
            exit_code=128 + self.signal,
            label="stopped",
        )

    @staticmethod
    def non_finite(ce: float, where: str, best: Path | None) -> TrainingStopped:
        """The error that ends a run whose loss is no longer finite."""
        kept = f"best checkpoint kept in {best}" if best else "no checkpoint yet"
        return TrainingStopped(f"non-finite loss ({ce}) at {where}; {kept}", exit_code=1)

    @contextlib.contextmanager
    def write_failures_explained(self) -> Iterator[None]:
        """A failed write (a full disk, a mount turned read-only) as one line: what failed,
        which checkpoints were kept (a failed save leaves the previous one), how to go on."""
        try:
            yield
        except OSError as e:
            raise write_failure(e, self.run_dir, self.command()) from None

    def resume_hint(self) -> str:
        return f"{self.command()} --resume {self.run_dir}"

    def command(self) -> str:
        """How this run's trainer starts, for the messages that say how to go on."""
        return "torchrun ... -m altgrad_triton.cli.train" if self.dist.enabled else "altgrad-train"
