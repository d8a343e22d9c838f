"""The training loop: truncated BPTT with synthetic gradients at the boundaries.

    for epoch: plan = TrainingPlan(epoch) -> (lr, mode, restart)
      for segment (AWD-LSTM random length, lr scaled by len/bptt):
        segment_step: boundary.start; model; CE + AR/TAR; boundary.backward; fit; clip; step
      evaluate; metrics line; the truncation probe ([probe]); checkpoint best/last
      (atomic); NT-ASGD's switch
    test with the best checkpoint

What the loop runs is built elsewhere (``build.py``: recipe -> components), one segment is
``tbptt.segment_step`` (which the copy-task horizon shares), evaluation is
``evaluation.evaluate``, the metrics line and its file are ``metrics.MetricsLog``, and
checkpoints with the run's state are ``checkpoint.Checkpointer``, NT-ASGD's trigger and
averaged weights are ``asgd.py``. The loop never branches on the kernel backend (the
cells do), and the plan is a pure function of the epoch, so ``--resume`` continues
exactly, even from an interrupted epoch: the checkpoint holds the position inside the
epoch and every RNG state.

Under torchrun (``distributed.py``) every rank runs this same loop on its share of the
batch columns: the model is wrapped in DistributedDataParallel, the per-segment numbers
and the evaluation sums are reduced over ranks, rank 0 alone writes files and prints, and a
checkpoint gathers every rank's carried state and RNG state.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import torch

from .. import data
from ..config.names import char_level
from ..config.recipe import Recipe, to_toml, unused_keys
from ..core import asgd
from ..core.model import autocast, lm_loss, next_tokens_context
from ..core.schedule import EpochPlan
from ..core.tbptt import segment_step
from ..errors import UserError
from ..files import write_text_atomic
from ..kernels.guard import guarding
from ..probe.per_epoch import EpochProbe, summary_line
from ..progress import EpochProgress, make_console, silent_console, summary_table
from . import board, kernel_check
from . import distributed as ddp
from . import folder as rundir
from .build import build, describe, set_hyperparameters
from .checkpoint import checks
from .checkpoint.checkpointer import Checkpointer
from .checkpoint.contents import RunState, start_averaging
from .evaluation import evaluate
from .metrics import EpochSums, MetricsLog, epoch_row, run_results, summary_rows


class TrainingStopped(UserError):
    """The run stopped on purpose (Ctrl-C, SIGTERM, SIGHUP) or on a non-finite loss; the
    message says which checkpoint was kept."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, and what a scheduler (SLURM, Kubernetes, torchrun's agent) or a closed terminal
sends before it kills: each stops the run after its segment with ``last`` saved, and the run
exits with 128 + the signal's number (130, 143, 129), as a shell reports a signal."""


def epoch_segments(rows: int, recipe: Recipe, epoch: int) -> list[data.Segment]:
    """The ``(start, length)`` segments of ``epoch`` over a split of ``rows`` steps.

    AWD-LSTM's random lengths come from a generator seeded by the seed and the epoch (the
    same on every rank). ``run.max_batches`` takes the next window of consecutive segments
    each epoch, so that capped runs still see the whole split over their epochs.
    """
    r = recipe
    gen = torch.Generator().manual_seed(r.run.seed * 100_003 + epoch)
    segments = data.segment_lengths(rows, r.bptt.length, r.bptt.random_length, gen)
    k = r.run.max_batches
    if k and k < len(segments):
        first = (epoch - 1) % (len(segments) // k) * k
        segments = segments[first : first + k]
    return segments


def steps_before(rows: int, recipe: Recipe, epoch: int) -> int:
    """The training segments of the epochs before ``epoch``: the global step (TensorBoard's
    axis) that ``epoch`` starts after. Recomputed from the plan, so a resumed run has it."""
    return sum(len(epoch_segments(rows, recipe, e)) for e in range(1, epoch))


def segment_lr(plan_lr: float, seq_len: int, recipe: Recipe) -> float:
    """A segment's learning rate: the epoch's, scaled by len/bptt for random lengths."""
    r = recipe
    return plan_lr * seq_len / r.bptt.length if r.bptt.random_length else plan_lr


class Trainer:
    """Trains what a recipe describes; see the module docstring.

    ``tuned_configs=False`` leaves altgrad-tune's stored kernel configs alone (for callers
    that manage them, such as altgrad-bench); ``corpus`` replaces the recipe's.
    """

    def __init__(
        self,
        recipe: Recipe,
        run_dir: Path,
        *,
        console: Any = None,
        corpus: data.Corpus | None = None,
        dist: ddp.DistContext | None = None,
        tuned_configs: bool = True,
    ):
        self.recipe, self.run_dir = recipe, Path(run_dir)
        self.dist = dist if dist is not None else ddp.from_process_group()
        # only rank 0 prints (progress, summaries); the others write to nowhere
        self.console = (console or make_console()) if self.dist.is_main else silent_console()
        self.parts = build(
            recipe, self.dist, console=self.console, corpus=corpus, tuned_configs=tuned_configs
        )
        self.run_state = RunState()
        self.checkpoints = Checkpointer(self.run_dir, self.dist)
        vocab_size = len(self.parts.corpus.vocab)
        self.log = MetricsLog(self.run_dir, self.console, self.dist.is_main, vocab_size)
        rows = self.parts.train_data.shape[0]
        self.probe = EpochProbe(recipe, self.run_dir, rows, self.dist.is_main, self.dist.enabled)
        # asked to stop (this process: ``request_stop``), and agreed to stop (every rank,
        # after the segment just trained): kept apart because a signal may land between a
        # segment's agreement and the look at it, and torchrun's agent signals the ranks
        # one after the other. Acting on the request there would let one rank save alone
        # while the other trains on (each then waits in a collective until the timeout);
        # taking the agreed stop for a request would make the rank's own signal a second
        # request, which aborts without saving.
        self._stop_requested, self._stop_signal = False, signal.SIGINT
        self._stop_agreed = False
        self.board: board.Board | None = None
        self._step_base = 0  # global segments before the epoch under way (TensorBoard)
        if recipe.run.tensorboard and self.dist.is_main:
            board.require()  # a missing package fails before the data is loaded
        self.console.print(describe(self.parts, recipe, self.dist), markup=False)
        for note in unused_keys(recipe):
            self.console.print(note, markup=False)

    # ------------------------------------------------------------------ the run
    def fit(self) -> dict[str, Any]:
        """Train from the run's next epoch to ``run.epochs``, then test the best checkpoint."""
        # the kernel families consult the run's guard while it trains (kernel_check.py)
        with self._write_failures_explained(), self._board_open(), guarding(self.parts.guard):
            if self.dist.is_main:
                write_text_atomic(self.run_dir / "recipe.toml", to_toml(self.recipe))
            if self.recipe.run.parent and self.run_state.averaging_since is None:  # a fresh one
                self.start_from_parent(Path(self.recipe.run.parent))
            previous = {
                s: signal.signal(s, lambda n, _: self.request_stop(n)) for s in STOP_SIGNALS
            }
            try:
                while self.run_state.epoch <= self.recipe.run.epochs and not self.fine_tuned():
                    self.run_epoch(self.parts.plan(self.run_state.epoch))
            finally:
                for number, handler in previous.items():
                    signal.signal(number, handler)
            return self.finish()

    def run_epoch(self, plan: EpochPlan) -> None:
        """Train one epoch, validate, write its metrics line, checkpoint best and last; stop
        there if Ctrl-C came during the validation or the checkpoint."""
        run, p, device = self.run_state, self.parts, self.parts.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sums = self.train_epoch(plan)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        with asgd.averaged_weights(p.model, p.optimizer):  # NT-ASGD: the mean is judged
            val = self.evaluate(p.corpus.valid, self.recipe.data.eval_batch_size)
        row = epoch_row(plan, sums, val, char_level(p.corpus.name))
        kernels = kernel_check.run_records(p.guard, self.dist)  # every rank: a collective
        row.update(kernel_check.metrics_fields(kernels))  # which kernels ran on Triton
        if peak is not None:  # of this epoch's training (since a resume, if it resumed)
            row["peak_mem_gib"] = peak / 2**30
        row["best"] = improved = val < run.best_val
        self.log.record(row)  # the line first: a run stopped before the checkpoint redoes it
        if self.probe.due(plan.epoch):
            probed = self.probe.measure(p, plan.epoch, plan.mode)
            self.console.print(summary_line(probed), markup=False)
        if self.board is not None:
            self.board.epoch(self._step_base, row)
        run.epoch += 1
        run.val_losses.append(val)  # before the saves: either checkpoint resumes exactly
        if improved:
            run.best_val = val
            self.save("best", row)
        self.after_validation(val)
        self.save("last", row)
        # every rank agrees (one flag reduction), as after a segment
        _, stop = ddp.mean_and_any(
            [torch.zeros((), device=device)], self._stop_requested, self.dist
        )
        if stop:
            raise self._stopped(f"after epoch {plan.epoch}")

    # ------------------------------------------------------------------ NT-ASGD
    def after_validation(self, val: float) -> None:
        """With ``optim.name = "nt-asgd"``, switch to averaged SGD once validation (``val``,
        the latest of ``run_state.val_losses``) has stopped improving
        (``asgd.nonmonotonic``), as AWD-LSTM does. After the best checkpoint's save: a
        switch there would save averages that have not taken a step yet."""
        run, o = self.run_state, self.recipe.optim
        if o.name != "nt-asgd" or not asgd.nonmonotonic(run.val_losses, o.nonmono):
            return
        if self.recipe.run.parent:  # averaging since its start: AWD's finetune.py stops
            what = "fine-tuning done"
        elif run.averaging_since is None:
            self.start_averaging(run.epoch - 1)
            what = "switching to averaged SGD"
        else:
            return
        self.console.print(
            f"epoch {run.epoch - 1}: validation loss {val:.4f} is worse than the best before "
            f"the last {o.nonmono} epoch(s): {what} (NT-ASGD)",
            markup=False,
        )

    def start_averaging(self, after_epoch: int) -> None:
        """From now on averaged SGD: the model is judged and saved with the averages."""
        start_averaging(self.parts, self.run_state, after_epoch)

    def fine_tuned(self) -> bool:
        """A fine-tuning run (``run.parent``) ends at the same criterion that switches
        NT-ASGD, applied to its own (averaged) epochs: AWD-LSTM's finetune.py."""
        o = self.recipe.optim
        return bool(self.recipe.run.parent) and asgd.nonmonotonic(
            self.run_state.val_losses, o.nonmono
        )

    def start_from_parent(self, parent: Path) -> None:
        """Fine-tuning: the parent run's best weights, averaged SGD from the first epoch."""
        ckpt = Checkpointer(parent).load_parent(self.recipe, self.parts.corpus.vocab)
        checks.load_weights(self.parts.model, ckpt.weights, ckpt.where or parent)
        self.start_averaging(0)
        made = ckpt.meta.get("metrics") or {}
        self.console.print(
            f"fine-tuning {parent}'s best checkpoint (epoch {made.get('epoch', '?')}, val ppl "
            f"{made.get('val_ppl', float('nan')):.2f}) with averaged SGD from the first epoch",
            markup=False,
        )

    def train_epoch(self, plan: EpochPlan) -> EpochSums:
        """Train the segments of ``plan.epoch``, from where an interrupted epoch stopped."""
        p, run = self.parts, self.run_state
        segments = epoch_segments(p.train_data.shape[0], self.recipe, plan.epoch)
        p.model.train()
        if run.carried is None:  # a fresh epoch (not resumed mid-way)
            run.carried = p.model.init_state(p.train_data.shape[1], p.device)
            run.sums = EpochSums()
            if p.boundary is not None:
                p.boundary.reset()
        sums, title = run.sums, f"epoch {plan.epoch} [{plan.mode}]"
        # the bar's speed is this process's (a resumed epoch's sums hold earlier processes')
        before = (sums.tokens, sums.seconds)
        with EpochProgress(
            self.console, title, len(segments), self.recipe.run.log_every, start=sums.segment
        ) as bar:
            for start, seq_len in segments[sums.segment :]:
                t0 = time.perf_counter()
                ce, sg = self.train_segment(start, seq_len, plan)
                tokens = seq_len * p.train_data.shape[1] * self.dist.world_size
                sums.add(tokens, ce, time.perf_counter() - t0, sg)
                speed = (sums.tokens - before[0]) / max(sums.seconds - before[1], 1e-9)
                bar.update(sums.segment, sums.mean_loss(), speed)
                if self.board is not None and sums.segment % self.recipe.run.log_every == 0:
                    lr = segment_lr(plan.lr, seq_len, self.recipe)
                    self.board.segment(self._step_base + sums.segment, ce, lr, sg)
                if self._stop_agreed:
                    self._save_and_stop(plan)
        run.carried = None
        self._step_base += len(segments)  # now this epoch's last segment
        return sums

    def train_segment(self, start: int, seq_len: int, plan: EpochPlan) -> tuple[float, list[float]]:
        """Train the segment at row ``start``; its mean cross-entropy and, if a synthesizer
        was fitted, its SG loss, cos and norm ratio (all means over ranks)."""
        p, r = self.parts, self.recipe
        inputs, targets = data.get_segment(p.train_data, start, seq_len)
        set_hyperparameters(p.optimizer, lr=segment_lr(plan.lr, seq_len, r))

        def forward(state):
            with autocast(p.device, r.run.dtype):
                out = p.net(inputs, state)  # the model, or its DDP wrapper
                loss, ce = lm_loss(out, targets, r.optim.ar_alpha, r.optim.tar_beta)
            if self.dist.enabled:  # this rank's share of the global mean; DDP sums gradients
                loss = loss / self.dist.world_size
            return loss, out.state, ce

        step = segment_step(
            forward,
            self.run_state.carried,
            p.optimizer,
            boundary=p.boundary,
            mode=plan.mode,
            context=self._context(start),
            next_context=self._context(start + seq_len),
            clip=r.optim.clip,
        )
        self.run_state.carried = step.state
        s = step.stats
        values = [step.output.detach().float()]
        values += [] if s is None else [s.loss.float(), s.cos.float(), s.norm_ratio.float()]
        # one host transfer; it also carries the Ctrl-C flag, so every rank stops (and
        # saves) after the same segment, and a non-finite loss on any rank stops them all
        (ce, *sg), self._stop_agreed = ddp.mean_and_any(values, self._stop_requested, self.dist)
        if not math.isfinite(ce):
            self._stop_non_finite(ce, plan)
        return ce, sg

    def _context(self, row: int) -> torch.Tensor | None:
        """The cDNI context at ``row`` (``next_tokens_context``), None unless the recipe asks."""
        n = self.recipe.synthetic.context_tokens
        if self.parts.boundary is None or n == 0:
            return None
        return next_tokens_context(self.parts.train_data, self.parts.model.embedding.weight, row, n)

    def evaluate(self, tokens: torch.Tensor, batch_size: int) -> float:
        """Mean cross-entropy per token over ``tokens`` (``evaluation.evaluate``)."""
        r = self.recipe
        return evaluate(
            self.parts.model,
            tokens,
            batch_size,
            r.bptt.length,
            device=self.parts.device,
            dtype=r.run.dtype,
            max_segments=r.run.max_eval_batches,
            dist=self.dist,
        )

    def finish(self) -> dict[str, Any]:
        """Test the best checkpoint; write results.json and print the summary table.

        With several ranks rank 0 reads the checkpoint and broadcasts the weights, and every
        rank returns rank 0's results.
        """
        p = self.parts
        if self.dist.is_main:
            p.model.load_state_dict(self.checkpoints.load("best").weights)
        ddp.broadcast_module(p.model, self.dist)
        test = self.evaluate(p.corpus.test, self.recipe.data.test_batch_size)
        kernels = kernel_check.run_records(p.guard, self.dist)  # every rank: a collective
        if not self.dist.is_main:
            return ddp.broadcast_object(None, self.dist)
        chars = char_level(p.corpus.name)
        results = run_results(self.run_state.best_val, test, self.log.rows(), chars)
        results.update(kernel_check.results_fields(kernels))
        write_text_atomic(self.run_dir / "results.json", json.dumps(results, indent=2))
        title = f"{self.recipe.run.name}: {self.run_dir}"
        rows = summary_rows(results) + kernel_check.summary_rows(results)
        self.console.print(summary_table(title, rows))
        return ddp.broadcast_object(results, self.dist)

    # ------------------------------------------------------------------ stopping
    def request_stop(self, signum: int = signal.SIGINT) -> None:
        """Stop after the current segment and save (Ctrl-C, or ``signum`` of STOP_SIGNALS);
        asked twice (this process: a stop that another rank asked for does not count),
        abort at once. The request travels with the next segment's agreement (or the
        epoch's), so that every rank stops after the same segment. Under torchrun a SIGTERM
        may also mean that another rank failed: the segment's collective then fails, or
        ``ddp.exit_after_grace`` ends it."""
        if self._stop_requested:
            raise KeyboardInterrupt
        self._stop_requested, self._stop_signal = True, signum
        if signum == signal.SIGINT:
            said = "stopping after this segment (Ctrl-C again to abort without saving)"
        else:
            said = f"{signal.Signals(signum).name}: stopping after this segment to save"
        self.console.print(said, markup=False)
        if signum == signal.SIGTERM and self.dist.enabled:
            ddp.exit_after_grace(self.dist, f"Continue with: {self._resume_hint()}")

    def _save_and_stop(self, plan: EpochPlan) -> NoReturn:
        self.save("last")
        raise self._stopped(f"at epoch {plan.epoch}, segment {self.run_state.sums.segment}")

    def _stopped(self, where: str) -> TrainingStopped:
        number = self._stop_signal
        by = "" if number == signal.SIGINT else f" by {signal.Signals(number).name}"
        return TrainingStopped(
            f"interrupted{by} {where}; saved. Continue with: {self._resume_hint()}",
            exit_code=128 + number,
            label="stopped",
        )

    def _resume_hint(self) -> str:
        return f"{self._command()} --resume {self.run_dir}"

    def _command(self) -> str:
        """How this run's trainer starts, for the messages that say how to go on."""
        return "torchrun ... -m altgrad_triton.cli.train" if self.dist.enabled else "altgrad-train"

    @contextlib.contextmanager
    def _board_open(self) -> Iterator[None]:
        """With ``run.tensorboard`` (rank 0), ``self.board`` open while the run trains,
        continuing after the segment the run resumes from (``board.Board``)."""
        run = self.run_state
        if not (self.recipe.run.tensorboard and self.dist.is_main):
            yield
            return
        self._step_base = steps_before(self.parts.train_data.shape[0], self.recipe, run.epoch)
        done = run.sums.segment if run.carried is not None else 0  # inside an epoch
        self.board = board.Board(self.run_dir, self._step_base + done + 1)
        try:
            yield
        finally:
            self.board.close()
            self.board = None

    @contextlib.contextmanager
    def _write_failures_explained(self) -> Iterator[None]:
        """A failed write (a full disk, a mount turned read-only) as one line: what failed,
        which checkpoints were kept (a failed save leaves the previous one), how to go on."""
        try:
            yield
        except OSError as e:
            raise rundir.write_failure(e, self.run_dir, self._command()) from None

    def _stop_non_finite(self, ce: float, plan: EpochPlan) -> NoReturn:
        best = self.checkpoints.find("best")
        raise TrainingStopped(
            f"non-finite loss ({ce}) at epoch {plan.epoch}, segment "
            f"{self.run_state.sums.segment + 1}; "
            + (f"best checkpoint kept in {best}" if best else "no checkpoint yet"),
            exit_code=1,
        )

    # ------------------------------------------------------------------ checkpoints
    def save(self, tag: str, metrics: dict | None = None) -> None:
        """Checkpoint ``tag``; every rank calls it (it gathers), rank 0 alone writes."""
        self.checkpoints.save(tag, self.parts, self.recipe, self.run_state, self.log, metrics)

    def restore(self, tag: str = "last") -> None:
        """Continue from checkpoint ``tag`` (``Checkpointer.restore``: weights, optimizers,
        RNG and the in-epoch position), and drop the metrics and probe lines it does not
        cover."""
        self.checkpoints.restore(tag, self.parts, self.recipe, self.run_state, self.log)
        with self._write_failures_explained():
            self.log.trim(self.run_state.epoch)
            self.probe.trim(self.run_state.epoch)
        run = self.run_state
        where = f"epoch {run.epoch}"
        if run.carried is not None:  # stopped inside the epoch
            where += f", after segment {run.sums.segment}"
        self.console.print(
            f"resuming from checkpoint {tag} ({self.checkpoints.find(tag)}) at {where}",
            markup=False,
        )
