"""What a run reports: the per-epoch sums, the metrics line, ``metrics.jsonl``, the checks for a
diverging synthesizer and a runaway loss, and the results at the end.

``metrics.jsonl`` gets one JSON line per finished epoch, flushed as it is written (a run
stopped at any moment leaves every finished epoch's line, perhaps a torn last one that
readers skip). The line is written before the epoch's checkpoint, so a run stopped between
the two redoes the epoch; ``MetricsLog.trim`` drops the line it wrote when it resumes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import append_line, read_jsonl, trim_epoch_lines
from .folder import RunFolder

if TYPE_CHECKING:
    from ..core.schedule import EpochPlan

LN2 = math.log(2.0)


def perplexity(loss: float) -> float:
    """exp(mean cross-entropy in nats), capped so that a diverged run prints a number."""
    return math.exp(min(loss, 50.0))


def bits(loss: float) -> float:
    """A mean cross-entropy in nats as bits (per character, for character-level corpora)."""
    return loss / LN2


@dataclass
class EpochSums:
    """Running sums of one epoch; checkpointed so an interrupted epoch resumes exactly."""

    segment: int = 0
    tokens: int = 0
    loss: float = 0.0  # cross-entropy x tokens
    seconds: float = 0.0
    sg: dict[str, float] = field(
        default_factory=lambda: {"loss": 0.0, "cos": 0.0, "norm_ratio": 0.0, "n": 0}
    )

    def add(self, tokens: int, ce: float, seconds: float, sg: list[float]) -> None:
        """One segment: its token count, mean cross-entropy, time and (with a synthesizer
        fitted there) its SG loss, cos and norm ratio."""
        self.segment += 1
        self.tokens += tokens
        self.loss += ce * tokens
        self.seconds += seconds
        if sg:
            for key, value in zip(("loss", "cos", "norm_ratio"), sg, strict=True):
                self.sg[key] += value
            self.sg["n"] += 1

    def mean_loss(self) -> float:
        return self.loss / max(self.tokens, 1)

    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def sg_mean(self, key: str) -> float | None:
        """The mean of an SG statistic over the segments that fitted the synthesizer."""
        n = self.sg["n"]
        return self.sg[key] / n if n else None


def epoch_row(plan: EpochPlan, sums: EpochSums, val_loss: float, char_level: bool) -> dict:
    """The metrics line of a finished epoch (``best`` is added by the caller)."""
    train_loss = sums.mean_loss()
    row = {
        "epoch": plan.epoch,
        "lr": plan.lr,
        "mode": plan.mode,
        "restart": plan.restart,
        "train_loss": train_loss,
        "train_ppl": perplexity(train_loss),
        "val_loss": val_loss,
        "val_ppl": perplexity(val_loss),
        "tokens_per_s": sums.tokens_per_s(),
        "seconds": sums.seconds,
        "sg_loss": sums.sg_mean("loss"),
        "sg_cos": sums.sg_mean("cos"),
        "sg_norm_ratio": sums.sg_mean("norm_ratio"),
    }
    if char_level:  # bits per character, the usual char-level unit
        row["train_bpc"], row["val_bpc"] = bits(train_loss), bits(val_loss)
    return row


# ---------------------------------------------------------------------------- divergence

DIVERGENCE_GROWTH = 100.0
"""Growth of the synthesizer's loss over its lowest epoch that ``divergence_warning`` flags."""

OVERSHOOT_RATIO = 5.0
"""``sg_norm_ratio`` (|g_hat| / |target|) of a synthetic epoch that ``divergence_warning``
flags: injected gradients that many times the size of what they predict are mostly noise."""


def divergence_warning(
    lowest_loss: float | None,
    loss: float | None,
    cos: float | None,
    norm_ratio: float | None = None,
) -> str | None:
    """A one-line warning after a synthetic epoch whose synthesizer looks like it diverges.

    In synthetic mode the synthesizer's target contains its own prediction at the next
    boundary (times ``scale``); with too large a scale the two chase each other. Seen: the
    regression loss grew by orders of magnitude in one epoch (scale 1), or a few times an
    epoch for several epochs while the predictions grew to 4-10x the size of their targets
    (scale 0.3); either way the model got worse. So: the loss against the lowest of the
    run's earlier epochs (``lowest_loss``), and ``norm_ratio`` against ``OVERSHOOT_RATIO``.
    """
    nan = float("nan")
    detail = f"sg_cos {cos if cos is not None else nan:.2f}"
    if lowest_loss is not None and loss is not None and lowest_loss > 0:
        growth = loss / lowest_loss
        if growth >= DIVERGENCE_GROWTH:
            return (
                f"warning: the synthesizer's loss is {growth:,.0f}x its lowest epoch's "
                f"({lowest_loss:.2g} -> {loss:.2g}, {detail}): bootstrapped synthetic "
                "gradients may be diverging; a smaller synthetic.scale damps them"
            )
    if norm_ratio is not None and norm_ratio >= OVERSHOOT_RATIO:
        return (
            f"warning: the synthetic gradients were {norm_ratio:.1f}x the size of their "
            f"targets this epoch ({detail}): mostly noise; a smaller synthetic.scale or "
            "synthetic.lr damps them"
        )
    return None


RUNAWAY_FACTOR = 10.0
"""How many times a uniform guess's perplexity (the vocabulary size) a validation perplexity
may reach before ``runaway_warning`` flags it."""


def runaway_warning(val_loss: float, vocab_size: int) -> str | None:
    """A one-line warning for a finite validation loss that has run away.

    A model that guesses uniformly scores ln(V) nats, which an initialised model starts
    near and every trained one beats; ``RUNAWAY_FACTOR`` times that perplexity means the
    weights have blown up (too high a learning rate, clipping off). A non-finite loss
    stops the run instead (``train.py``); this catches a finite one (ppl 1e21) that would
    otherwise pass as a number in the epoch line.
    """
    uniform = math.log(vocab_size)
    if not math.isfinite(val_loss) or val_loss <= uniform + math.log(RUNAWAY_FACTOR):
        return None
    return (
        f"warning: validation perplexity {perplexity(val_loss):.3g} (loss {val_loss:.1f}) is "
        f"over {RUNAWAY_FACTOR:g}x a uniform guess's ({vocab_size:,}): the run is diverging; "
        "a smaller optim.lr, or optim.clip > 0, keeps the weights in check"
    )


# ---------------------------------------------------------------------------- the log


class MetricsLog:
    """The epoch lines of one run: appended to ``metrics.jsonl``, printed, and watched for a
    diverging synthesizer (against the lowest SG loss of the run's earlier epochs, which it
    keeps and a checkpoint saves: ``state_dict``) and, given ``vocab_size``, for a runaway
    validation loss.

    ``writes=False`` (ranks > 0 under torchrun) keeps the bookkeeping and writes nothing.
    """

    def __init__(
        self, run_dir: Path, console: Any, writes: bool = True, vocab_size: int | None = None
    ):
        self.path = RunFolder(run_dir).metrics
        self.console, self.writes, self.vocab_size = console, writes, vocab_size
        self.lowest_sg_loss: float | None = None

    def record(self, row: dict) -> None:
        """Check, append and print one finished epoch's line."""
        warning = None
        if row["mode"] == "synthetic":
            warning = divergence_warning(
                self.lowest_sg_loss, row["sg_loss"], row["sg_cos"], row["sg_norm_ratio"]
            )
        loss = row["sg_loss"]
        if loss is not None and (self.lowest_sg_loss is None or loss < self.lowest_sg_loss):
            self.lowest_sg_loss = loss
        if self.writes:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_line(self.path, json.dumps(row))
        self.console.print(epoch_line(row), markup=False)
        runaway = self.vocab_size and runaway_warning(row["val_loss"], self.vocab_size)
        for line in (warning, runaway):
            if line:
                self.console.print(line, markup=False)

    def trim(self, next_epoch: int) -> None:
        """Drop the lines of epochs a checkpoint has not finished (``epoch >= next_epoch``):
        written by a run stopped after an epoch's line but before its checkpoint, they come
        again. The file is rewritten whole, which also drops a torn last line."""
        if self.writes:
            trim_epoch_lines(self.path, next_epoch)

    def rows(self) -> list[dict]:
        return read_jsonl(self.path)

    def state_dict(self) -> dict[str, Any]:
        return {"lowest_sg_loss": self.lowest_sg_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lowest_sg_loss = state.get("lowest_sg_loss")  # older checkpoints lack it


def epoch_line(row: dict) -> str:
    """The console line of a finished epoch."""
    line = (
        f"epoch {row['epoch']} [{row['mode']}] lr {row['lr']:.2e} train ppl "
        f"{row['train_ppl']:.1f} val ppl {row['val_ppl']:.1f} {row['tokens_per_s']:,.0f} tok/s"
    )
    if row.get("peak_mem_gib") is not None:
        line += f" peak {row['peak_mem_gib']:.2f} GiB"
    return line if row["sg_cos"] is None else f"{line} sg_cos {row['sg_cos']:.3f}"


# ---------------------------------------------------------------------------- the end


def run_results(best_val: float, test: float, rows: list[dict], char_level: bool) -> dict:
    """``results.json``: the best validation and the test loss (of the best checkpoint)."""
    results = {
        "best_val_loss": best_val,
        "best_val_ppl": perplexity(best_val),
        "test_loss": test,
        "test_ppl": perplexity(test),
        "epochs": len(rows),
        "seconds": sum(r["seconds"] for r in rows),
    }
    if char_level:
        results["best_val_bpc"], results["test_bpc"] = bits(best_val), bits(test)
    return results


def summary_rows(results: dict) -> list[tuple[str, str]]:
    """The rows of the end-of-run summary table."""
    return [
        ("best val ppl", f"{results['best_val_ppl']:.2f}"),
        ("test ppl", f"{results['test_ppl']:.2f}"),
        ("epochs", str(results["epochs"])),
        ("train time", f"{results['seconds']:.0f} s"),
    ]
