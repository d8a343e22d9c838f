"""The training loop: truncated BPTT with synthetic gradients at the boundaries.

    for epoch: plan = TrainingPlan(epoch) -> (lr, mode, restart)
      for segment (AWD-LSTM random length, lr scaled by len/bptt):
        segment_step: boundary.start; model; CE + AR/TAR; boundary.backward; fit; clip; step
      evaluate; metrics line; checkpoint best and last (atomic)
    test with the best checkpoint

Everything else a run does is built elsewhere and called at fixed points: the components
and the plain settings the loop reads (``build.py``: the one reader of a recipe), the
segments of an epoch and one segment's loss (``segments.py``), one segment step
(``core.tbptt.segment_step``, shared with the copy-task horizon), evaluation
(``evaluation.evaluate``), the metrics line (``metrics.MetricsLog``), checkpoints with the
run's state (``checkpoint.Checkpointer``), stopping on a signal, a non-finite loss or a failed
write (``stopping.py``), and the hooks (``hooks.py``): NT-ASGD and fine-tuning, TensorBoard,
the truncation probe per epoch. The loop never branches on the kernel backend (the cells
do), and the plan is a pure function of the epoch, so ``--resume`` continues exactly, even
from an interrupted epoch: the checkpoint holds the position inside the epoch and every RNG
state.

Under torchrun (``distributed.py``) every rank runs this same loop on its share of the
batch columns: the model is wrapped in DistributedDataParallel, the per-segment numbers
and the evaluation sums are reduced over ranks, rank 0 alone writes files and prints, and a
checkpoint gathers every rank's carried state and RNG state.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .. import data
from ..config.names import char_level
from ..config.recipe import Recipe, to_toml, unused_keys
from ..core import asgd
from ..core.schedule import EpochPlan
from ..core.tbptt import segment_step
from ..files import write_text_atomic
from ..kernels.guard import guarding
from ..progress import EpochProgress, make_console, silent_console, summary_table
from . import distributed as ddp
from . import kernel_check
from .board import TensorBoard
from .build import build, describe, set_hyperparameters
from .checkpoint.checkpointer import Checkpointer
from .checkpoint.contents import RunState
from .folder import RunFolder
from .hooks import Hooks, NtAsgd, RunHook, SegmentDone
from .metrics import EpochSums, MetricsLog, epoch_row, run_results, summary_rows
from .stopping import STOP_SIGNALS, StopRequests, TrainingStopped

__all__ = ["STOP_SIGNALS", "Trainer", "TrainingStopped"]


class Trainer:
    """Trains what a recipe describes (module docstring). ``hooks``: parts of the run from
    outside ``run/`` (``probe.per_epoch.EpochProbe``); ``tuned_configs=False`` leaves stored
    kernel configs alone (altgrad-bench); ``corpus`` replaces the recipe's."""

    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        *,
        console: Any = None,
        corpus: data.Corpus | None = None,
        dist: ddp.DistContext | None = None,
        tuned_configs: bool = True,
        hooks: Sequence[RunHook] = (),
    ):
        self.recipe, self.run_dir = recipe, Path(run_dir)
        self.dist = dist if dist is not None else ddp.from_process_group()
        # only rank 0 prints (progress, summaries); the others write to nowhere
        self.console = (console or make_console()) if self.dist.is_main else silent_console()
        self.parts = build(
            recipe, self.dist, console=self.console, corpus=corpus, tuned_configs=tuned_configs
        )
        self.settings = s = self.parts.settings
        self.run_state, self.checkpoints = RunState(), Checkpointer(self.run_dir, self.dist)
        vocab = len(self.parts.corpus.vocab)
        self.log = MetricsLog(self.run_dir, self.console, self.dist.is_main, vocab)
        self.stops = StopRequests(self.run_dir, self.dist, self.console)
        board = [TensorBoard(s.log_every)] if s.tensorboard and self.dist.is_main else []
        self.hooks = Hooks([NtAsgd(s.nt_asgd, s.nonmono, s.parent), *board, *hooks], s.asks)
        self.hooks.call("attach", self)
        for line in (describe(self.parts, recipe, self.dist), *unused_keys(recipe)):
            self.console.print(line, markup=False)

    def fit(self) -> dict[str, Any]:
        """Train from the run's next epoch to the last, then test the best checkpoint."""
        # the kernel families consult the run's guard while it trains (kernel_check.py)
        with self.stops.write_failures_explained(), guarding(self.parts.guard):
            if self.dist.is_main:
                write_text_atomic(RunFolder(self.run_dir).recipe, to_toml(self.recipe))
            with self.hooks.open(self), self.stops.on_signals():
                while self.run_state.epoch <= self.settings.epochs:
                    if self.hooks.finished(self):
                        break
                    self.run_epoch(self.parts.plan(self.run_state.epoch))
            return self.finish()

    def run_epoch(self, plan: EpochPlan) -> None:
        """Train an epoch, validate, log, checkpoint best and last; stop there if asked."""
        run, p, device = self.run_state, self.parts, self.parts.device
        with peak_memory(device) as peak:
            sums = self.train_epoch(plan)
        with asgd.averaged_weights(p.model, p.optimizer):  # NT-ASGD: the mean is judged
            val = p.evaluate(p.corpus.valid, self.settings.eval_batch_size, self.dist)
        kernels = kernel_check.run_records(p.guard, self.dist)  # every rank: a collective
        row = epoch_record(plan, sums, val, char_level(p.corpus.name), kernels, peak)
        row["best"] = improved = val < run.best_val
        self.log.record(row)  # the line first: a run stopped before the checkpoint redoes it
        self.hooks.call("after_epoch", self, plan, row)
        run.epoch += 1
        run.val_losses.append(val)  # before the saves: either checkpoint resumes exactly
        if improved:
            run.best_val = val
            self.save("best", row)
        self.hooks.call("after_best", self, val)
        self.save("last", row)
        if self.stops.agree(device):  # every rank: stop here if any was asked to
            raise self.stops.stopped(f"after epoch {plan.epoch}")

    def train_epoch(self, plan: EpochPlan) -> EpochSums:
        """Train the segments of ``plan.epoch``, from where an interrupted epoch stopped."""
        p, run = self.parts, self.run_state
        segments = p.segments.epoch(p.train_data.shape[0], plan.epoch)
        p.model.train()
        if run.carried is None:  # a fresh epoch (not resumed mid-way)
            run.carried, run.sums = p.model.init_state(p.train_data.shape[1], p.device), EpochSums()
            if p.boundary is not None:
                p.boundary.reset()
        sums, title = run.sums, f"epoch {plan.epoch} [{plan.mode}]"
        # the bar's speed is this process's (a resumed epoch's sums hold earlier processes')
        before, every = (sums.tokens, sums.seconds), self.settings.log_every
        with EpochProgress(self.console, title, len(segments), every, start=sums.segment) as bar:
            for start, seq_len in segments[sums.segment :]:
                t0 = time.perf_counter()
                ce, sg = self.train_segment(start, seq_len, plan)
                tokens = seq_len * p.train_data.shape[1] * self.dist.world_size
                sums.add(tokens, ce, time.perf_counter() - t0, sg)
                speed = (sums.tokens - before[0]) / max(sums.seconds - before[1], 1e-9)
                bar.update(sums.segment, sums.mean_loss(), speed)
                done = SegmentDone(sums.segment, seq_len, p.segments.lr(plan.lr, seq_len), ce, sg)
                self.hooks.call("after_segment", self, done)
                if self.stops.agreed:
                    self.save("last")
                    raise self.stops.stopped(f"at epoch {plan.epoch}, segment {sums.segment}")
        run.carried = None
        return sums

    def train_segment(self, start: int, seq_len: int, plan: EpochPlan) -> tuple[float, list[float]]:
        """Train the segment at row ``start``; its mean cross-entropy and, if a synthesizer
        was fitted, its SG loss, cos and norm ratio (all means over ranks)."""
        p = self.parts
        inputs, targets = data.get_segment(p.train_data, start, seq_len)
        set_hyperparameters(p.optimizer, lr=p.segments.lr(plan.lr, seq_len))
        step = segment_step(
            p.objective.for_step(p.net, inputs, targets, p.device),
            self.run_state.carried,
            p.optimizer,
            boundary=p.boundary,
            mode=plan.mode,
            context=p.context_at(start, self.settings.context_tokens),
            next_context=p.context_at(start + seq_len, self.settings.context_tokens),
            clip=self.settings.clip,
        )
        self.run_state.carried = step.state
        values = [step.output.detach().float(), *step.sg_numbers()]
        # one host transfer; it also carries the Ctrl-C flag, so every rank stops (and
        # saves) after the same segment, and a non-finite loss on any rank stops them all
        (ce, *sg), self.stops.agreed = ddp.mean_and_any(values, self.stops.requested, self.dist)
        if not math.isfinite(ce):
            where = f"epoch {plan.epoch}, segment {self.run_state.sums.segment + 1}"
            raise self.stops.non_finite(ce, where, self.checkpoints.find("best"))
        return ce, sg

    def finish(self) -> dict[str, Any]:
        """Test the best checkpoint (rank 0's, broadcast); write results.json; summarize."""
        p, results = self.parts, None
        if self.dist.is_main:
            p.model.load_state_dict(self.checkpoints.load("best").weights)
        ddp.broadcast_module(p.model, self.dist)
        test = p.evaluate(p.corpus.test, self.settings.test_batch_size, self.dist)
        kernels = kernel_check.run_records(p.guard, self.dist)  # every rank: a collective
        if self.dist.is_main:
            best, chars = self.run_state.best_val, char_level(p.corpus.name)
            results = write_results(self.run_dir, best, test, self.log.rows(), chars, kernels)
            table = summary_rows(results) + kernel_check.summary_rows(results)
            self.console.print(summary_table(f"{self.settings.name}: {self.run_dir}", table))
        return ddp.broadcast_object(results, self.dist)

    def save(self, tag: str, metrics: dict | None = None) -> None:
        """Checkpoint ``tag``; every rank calls it (it gathers), rank 0 alone writes."""
        self.checkpoints.save(tag, self.parts, self.recipe, self.run_state, self.log, metrics)

    def restore(self, tag: str = "last") -> None:
        """Continue from checkpoint ``tag``, dropping the records it does not cover."""
        self.checkpoints.restore(tag, self.parts, self.recipe, self.run_state, self.log)
        with self.stops.write_failures_explained():
            self.log.trim(self.run_state.epoch)
            self.hooks.call("resumed", self)
        found, where = self.checkpoints.find(tag), self.run_state.position()
        self.console.print(f"resuming from checkpoint {tag} ({found}) at {where}", markup=False)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[list[int]]:
    """The peak of CUDA memory allocated inside the block, appended to the list it yields
    (empty off CUDA)."""
    peak: list[int] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield peak
    if device.type == "cuda":
        peak.append(torch.cuda.max_memory_allocated(device))


def epoch_record(
    plan: EpochPlan, sums: EpochSums, val: float, chars: bool, kernels: Any, peak: list[int]
) -> dict[str, Any]:
    """An epoch's metrics line (``best`` is added by the caller): its numbers, which kernels
    ran on Triton and, on CUDA, the peak memory of its training (since a resume, if it
    resumed)."""
    row = epoch_row(plan, sums, val, chars)
    row.update(kernel_check.metrics_fields(kernels))
    if peak:
        row["peak_mem_gib"] = peak[0] / 2**30
    return row


def write_results(
    run_dir: Path, best_val: float, test: float, rows: list[dict], chars: bool, kernels: Any
) -> dict[str, Any]:
    """``results.json``: the best validation and the test loss, and the kernels' record."""
    results = run_results(best_val, test, rows, chars)
    results.update(kernel_check.results_fields(kernels))
    write_text_atomic(RunFolder(run_dir).results, json.dumps(results, indent=2))
    return results
