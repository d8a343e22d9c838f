"""The truncation probe during training: with ``[probe] every = N`` this hook of the trainer
(``run.hooks``; altgrad-train hands it over) runs altgrad-probe's measure
(``on_run.probe_lm``) after every N-th epoch's validation and appends its record to
RUN_DIR/probe.jsonl, so that one run shows how what truncation
discards, and what its synthesizer recovers of it, change as it trains; ``altgrad-report``
plots it.

The probe must not change the run. It runs the model and the synthesizer in eval mode (no
dropout and no noise, so no random number is drawn), takes its gradients with
``torch.autograd.grad`` (nothing lands in ``.grad``), and gives every module its training
flag back: a run with the probe trains bit for bit as one without (a test checks it). It
measures the weights training steps (under NT-ASGD not the averages, which validation
judges), on this process's training columns, from the split's first row and a zero state.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from torch import nn

from ..config.recipe import Recipe
from ..errors import UserError
from ..files import append_line, trim_epoch_lines
from ..run.build import Components
from ..run.folder import RunFolder
from ..run.hooks import RunHook, Trainer
from ..run.values import probe_values, run_values
from .on_run import check_boundaries, probe_lm
from .run_stream import boundary_predictor
from .truncation import evaluation_mode


class EpochProbe(RunHook):
    """``probe.jsonl`` of one run, as a hook of its trainer: which epochs are probed, the
    measure, the file. Ranks > 0 write nothing. A recipe that asks for the probe under
    torchrun, or names a boundary its training split does not reach, is a UserError before
    training starts."""

    serves = "probe.every"

    def __init__(self, recipe: Recipe, run_dir: Path):
        self.recipe, self.path, self.writes = recipe, RunFolder(run_dir).epoch_probes, True
        self.settings, self.values = probe_values(recipe), run_values(recipe)

    def attach(self, trainer: Trainer) -> None:
        p, bptt = self.settings, self.values.bptt
        self.writes = trainer.dist.is_main
        if not p.every:
            return
        if trainer.dist.enabled:
            raise UserError(
                f"probe.every: the probe runs in one process, not under torchrun; set "
                f"probe.every=0 and probe the checkpoints with altgrad-probe, got {p.every}"
            )
        segments = (trainer.parts.train_data.shape[0] - 1) // bptt
        check_boundaries(list(p.boundaries), segments, bptt, p.max_horizon, "probe.boundaries")

    def after_epoch(self, trainer: Trainer, plan: Any, row: dict) -> None:
        if self.due(plan.epoch):
            probed = self.measure(trainer.parts, plan.epoch, plan.mode)
            trainer.console.print(summary_line(probed), markup=False)

    def resumed(self, trainer: Trainer) -> None:
        """Drop the lines of epochs the checkpoint resumed from has not finished."""
        if self.writes:
            trim_epoch_lines(self.path, trainer.run_state.epoch)

    def due(self, epoch: int) -> bool:
        every = self.settings.every
        return bool(every) and epoch % every == 0

    def measure(self, parts: Components, epoch: int, mode: str) -> dict[str, Any]:
        """Probe the model as it stands after ``epoch``; append and return the record."""
        r, t0 = self.recipe, time.perf_counter()
        tokens, predictors, joined = parts.train_data, {}, None
        modules: list[nn.Module] = [parts.model]
        if parts.boundary is not None:
            b = parts.boundary
            predictors = {self.values.synthesizer: boundary_predictor(b, parts.model, r, tokens)}
            joined, modules = b.joined, [parts.model, b.synthesizer]
        with evaluation_mode(modules):
            record = probe_lm(
                parts.model,
                r,
                tokens,
                predictors,
                joined,
                list(self.settings.boundaries),
                self.settings.max_horizon,
                "probe.boundaries",
            )
        row = {"epoch": epoch, "gradient_mode": mode, "seconds": time.perf_counter() - t0, **record}
        if self.writes:
            append_line(self.path, json.dumps(row))
        return row


def summary_line(row: dict[str, Any]) -> str:
    """The console line of one probe: the discarded share at the longest horizon and each
    synthesizer's cosine with the true future gradient there."""
    m = str(max(row["horizons"]))
    mean = row["mean"][m]
    share = mean["layers"]["all"]
    ratio = "-" if share["ratio"] is None else f"{share['ratio']:.3g}"
    line = (
        f"probe epoch {row['epoch']} (M = {m}, boundaries {row['boundaries']}): "
        f"discarded/within {ratio}, cos {share['cos']:.3f}"
    )
    for name, score in mean["synthesizers"].items():
        line += f"; {name}: cos {score['cos']:.3f}"
    return f"{line} [{row['seconds']:.1f} s]"
