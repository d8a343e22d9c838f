"""TensorBoard: a run's numbers as event files in RUN_DIR/tensorboard/, to watch live.

Optional (``run.tensorboard = true`` or ``altgrad-train --tensorboard``; the
``tensorboard`` extra). ``metrics.jsonl`` stays the source of truth: this is a view of the
same numbers. Every scalar sits on one axis, the global training segment (1 = the first
segment of epoch 1): ``train/*`` every ``run.log_every`` segments (the segment's loss, its
learning rate, and the synthesizer's loss, cos and norm ratio when it was fitted), and
``epoch/*`` (every number of the epoch's metrics.jsonl line) at the epoch's last segment.

Resume: the writer purges every event after the checkpoint's segment
(``SummaryWriter(purge_step=...)``), so a run stopped after it logged steps that the
checkpoint does not hold writes them once, not twice, when they come again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from .folder import RunFolder
from .hooks import RunHook, SegmentDone, Trainer

FLUSH_SECONDS = 15
"""How often the event file is flushed: how far behind a live view can be."""


def _summary_writer() -> Any:
    """torch's SummaryWriter class; a one-line error when ``tensorboard`` is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError(
            "run.tensorboard: needs the tensorboard package, which is not installed; "
            "pip install 'altgrad-triton[tensorboard]' (or leave run.tensorboard = false)"
        ) from None
    return SummaryWriter


def require() -> None:
    """Fail now (before data is loaded) if the tensorboard package is missing."""
    _summary_writer()


class Board:
    """The event writer of one run: ``segment`` and ``epoch`` add scalars at a global step.

    ``next_step``: the global segment the run continues from (1 for a fresh run); events
    from an earlier process at that step or later are purged.
    """

    def __init__(self, run_dir: Path, next_step: int):
        writer = _summary_writer()
        self.writer = writer(
            str(RunFolder(run_dir).tensorboard), purge_step=next_step, flush_secs=FLUSH_SECONDS
        )

    def segment(self, step: int, loss: float, lr: float, sg: list[float]) -> None:
        """One training segment's numbers; ``sg`` = the synthesizer's loss, cos, norm ratio
        (empty when it was not fitted)."""
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)
        for name, value in zip(("sg_loss", "sg_cos", "sg_norm_ratio"), sg, strict=False):
            self.writer.add_scalar(f"train/{name}", value, step)

    def epoch(self, step: int, row: dict) -> None:
        """A metrics.jsonl line: each number (booleans as 0/1, the mode as
        ``epoch/synthetic`` 0/1); fields without a value this epoch (None) are left out."""
        for key, value in row.items():
            if key == "mode":
                self.writer.add_scalar("epoch/synthetic", float(value == "synthetic"), step)
            elif isinstance(value, bool | int | float):
                self.writer.add_scalar(f"epoch/{key}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class TensorBoard(RunHook):
    """The run's ``Board`` (rank 0), open while it trains: ``train/*`` every ``log_every``
    segments of an epoch, ``epoch/*`` at its last segment, continuing after the segment a
    resumed run starts from. The global step comes from the segment plan."""

    def __init__(self, log_every: int):
        self.log_every, self.board = log_every, None
        self.base = 0  # global segments before the epoch under way

    def attach(self, trainer: Trainer) -> None:
        require()  # a missing package fails before the data is loaded

    def opened(self, trainer: Trainer) -> None:
        run, rows = trainer.run_state, trainer.parts.train_data.shape[0]
        self.base = trainer.parts.segments.steps_before(rows, run.epoch)
        done = run.sums.segment if run.carried is not None else 0  # inside an epoch
        self.board = Board(trainer.run_dir, self.base + done + 1)

    def after_segment(self, trainer: Trainer, segment: SegmentDone) -> None:
        if segment.index % self.log_every == 0:
            self.board.segment(self.base + segment.index, segment.ce, segment.lr, segment.sg)

    def after_epoch(self, trainer: Trainer, plan: Any, row: dict) -> None:
        rows = trainer.parts.train_data.shape[0]
        self.base += len(trainer.parts.segments.epoch(rows, plan.epoch))
        self.board.epoch(self.base, row)  # at the epoch's last segment

    def closed(self, trainer: Trainer) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None
