"""How far back can a truncated RNN learn? Copy / repeat-copy with a curriculum (DNI, 2016).

The experiment of Jaderberg et al.'s Table 1, CPU-sized. A small LSTM reads a continuous
stream of copy (or repeat-copy) episodes (:func:`altgrad_triton.data.copy_task_batch`)
cut into segments of ``truncation`` steps; its state is carried from segment to segment
and from episode to episode and never reset, so a pattern longer than the truncation can
only be recalled if credit crosses a segment boundary. That is what synthetic gradients
are for:

* ``bptt``: plain truncated BPTT, the gradient stops at every boundary;
* ``sg``: the same, plus DNI synthetic gradients at every boundary
  (:class:`~altgrad_triton.boundary.SyntheticBoundary` in synthetic mode throughout).

A curriculum starts at N = 1 (R = 1) and moves to the next level whenever the average
error over the recall outputs of the last ``window`` stream steps falls below
``threshold`` bits per output (the DNI paper used 0.15). Copy grows N; repeat-copy grows
R and N in turn: (1,1) -> (2,1) -> (2,2) -> (3,2) -> (3,3) ... Every run gets the same
number of stream steps (``budget`` per batch column, whatever the truncation), and the
result is the largest recall length N*R whose level was passed (0: not even N=1).

Loss: the cross-entropy summed over a segment's scored steps, averaged over batch
columns (a sum over time, so the synthesizer bootstraps a sum of future losses, as in
TD learning). Error reported in bits per scored output; accuracy per output as well.
Episodes already in the stream when the level changes keep their old (N, R); the window
that decides the next level starts after the change.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..config.recipe import SyntheticConfig, field_problems, opt
from ..core.boundary import SyntheticBoundary
from ..core.cells import LSTM
from ..core.tbptt import segment_step
from ..data.copy_task import COPY_VOCABULARY, copy_task_batch
from ..errors import UserError
from ..files import read_jsonl
from ..run.build import make_boundary, make_synthesizer
from ..run.metrics import bits

TASKS = ("copy", "repeat-copy")
METHODS = ("bptt", "sg")
VOCAB = len(COPY_VOCABULARY)


@dataclass(frozen=True, kw_only=True)
class HorizonConfig:
    """One run of the horizon experiment (every knob; the CLI exposes most of them)."""

    task: Literal["copy", "repeat-copy"] = opt("copy", "the task")
    method: Literal["bptt", "sg"] = opt("bptt", "real gradients only, or synthetic ones too")
    truncation: int = opt(4, "segment length T", ge=1)
    seed: int = opt(0, "random seed")
    hidden: int = opt(64, "LSTM units", ge=1)
    batch_size: int = opt(32, "batch columns", ge=1)
    lr: float = opt(3e-3, "Adam's learning rate", gt=0)
    clip: float = opt(1.0, "gradient-norm clip", ge=0)
    budget: int = opt(20_000, "stream steps per batch column", ge=1)
    threshold: float = opt(0.15, "bits per output that pass a level", gt=0)
    window: int = opt(400, "stream steps averaged before a level can pass", ge=1)
    synthesizer: Literal["linear", "mlp"] = opt("linear", "the synthesizer")
    synth_hidden: int = opt(128, "the MLP synthesizer's units", ge=1)
    scale: float = opt(0.3, "synthetic-gradient scale (1.0 diverged: docs/results.md)", ge=0)
    synth_lr: float = opt(1e-4, "the synthesizer's learning rate", gt=0)

    def check(self) -> None:
        """The recipe's rules (types, choices, bounds) on every field, as one line."""
        problems = field_problems(self)
        if problems:
            raise UserError("horizon: " + "; ".join(problems))


# ---------------------------------------------------------------------------- curriculum


@dataclass
class Curriculum:
    """Level bookkeeping: (N, R) now, and whether the recent error passes the level.

    ``observe(steps, bits_sum, outputs)`` records one segment (stream steps, summed bits over
    its scored outputs, number of scored outputs) and returns True when the level advanced:
    at least ``window`` steps seen since the last change and the mean bits per output over
    the last ``window`` steps below ``threshold``.
    """

    task: str = "copy"
    threshold: float = 0.15
    window: int = 400
    n: int = 1
    r: int = 1
    solved: int = 0  # largest N*R whose level was passed
    history: list[tuple[int, int, int]] = field(default_factory=list)  # (step, n, r) at passes
    _recent: deque = field(default_factory=deque)
    _steps: int = 0  # stream steps since the last change
    _clock: int = 0  # stream steps in all

    def level_error(self) -> float | None:
        """Mean bits per output over the window (None before any output is scored)."""
        outputs = sum(o for _, _, o in self._recent)
        return sum(b for _, b, _ in self._recent) / outputs if outputs else None

    def observe(self, steps: int, bits_sum: float, outputs: int) -> bool:
        self._clock += steps
        self._steps += steps
        self._recent.append((steps, bits_sum, outputs))
        while (
            self._recent and sum(s for s, _, _ in self._recent) - self._recent[0][0] >= self.window
        ):
            self._recent.popleft()
        err = self.level_error()
        if self._steps < self.window or err is None or err >= self.threshold:
            return False
        self.solved = self.n * self.r
        self.history.append((self._clock, self.n, self.r))
        if self.task == "repeat-copy" and self.r < self.n:
            self.r += 1
        else:
            self.n += 1
        self._recent.clear()
        self._steps = 0
        return True


# ---------------------------------------------------------------------------- the stream


class CopyStream:
    """A never-ending stream of copy episodes per batch column, cut into segments.

    ``next(T)`` returns time-major ``inputs, targets, mask`` of T steps. Episodes are drawn
    with the stream's current ``(n, r)`` when the buffer runs short; all columns hold
    episodes of the same length, in step, but episode and segment boundaries do not align.
    """

    def __init__(self, batch_size: int, generator: torch.Generator, n: int = 1, r: int = 1):
        self.batch_size, self.generator, self.n, self.r = batch_size, generator, n, r
        empty = torch.empty(0, batch_size, dtype=torch.long)
        self._buf = (empty, empty.clone(), empty.clone().bool())

    def next(self, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        while self._buf[0].shape[0] < steps:
            ep = copy_task_batch(self.n, self.batch_size, self.generator, repeats=self.r)
            self._buf = tuple(torch.cat([a, b]) for a, b in zip(self._buf, ep, strict=True))
        out = tuple(t[:steps] for t in self._buf)
        self._buf = tuple(t[steps:] for t in self._buf)
        return out


# ---------------------------------------------------------------------------- the model


class CopyModel(nn.Module):
    """One-hot input -> one LSTM layer (altgrad_triton.cells.LSTM) -> logits over 5 tokens."""

    def __init__(self, hidden: int, backend: str = "torch"):
        super().__init__()
        self.lstm = LSTM(VOCAB, hidden, backend=backend)
        self.head = nn.Linear(hidden, VOCAB)

    def init_state(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        return self.lstm.init_state(batch_size)

    def forward(self, tokens: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        hs, final = self.lstm(F.one_hot(tokens, VOCAB).float(), state)
        return self.head(hs), final


# ---------------------------------------------------------------------------- one run


def synthetic_boundary(cfg: HorizonConfig) -> SyntheticBoundary:
    """The ``sg`` method's synthesizer on the LSTM's joined (h, c), as recipe settings, built
    by the trainer's builders: no dropout, one hidden layer for the MLP, the torch backend."""
    settings = SyntheticConfig(
        enabled=True,
        synthesizer=cfg.synthesizer,
        hidden=cfg.synth_hidden,
        layers=1,
        dropout=0.0,
        scale=cfg.scale,
        lr=cfg.synth_lr,
    )
    synth = make_synthesizer(settings, 2 * cfg.hidden, "torch")
    return make_boundary(settings, synth, cfg.batch_size * cfg.truncation, "torch")


@dataclass
class Tally:
    """What a run reports besides the curriculum: accuracy since the last pass, sg_cos."""

    correct: int = 0
    outputs: int = 0
    last_acc: float = math.nan  # over the level passed last
    sg_cos: list[float] = field(default_factory=list)

    def level_passed(self) -> None:
        self.last_acc = self.correct / max(self.outputs, 1)
        self.correct = self.outputs = 0

    def final_acc(self) -> float:
        return self.correct / self.outputs if self.outputs else self.last_acc


def run(cfg: HorizonConfig, *, log: Callable[[str], None] | None = None) -> dict:
    """Train one (task, method, truncation, seed) to its budget; return its result row."""
    return train(cfg, log=log).row


@dataclass
class Trained:
    """A finished run: its result row, and what the probe (``probe_copy.py``) reads."""

    row: dict
    model: CopyModel
    boundary: SyntheticBoundary | None


def train(cfg: HorizonConfig, *, log: Callable[[str], None] | None = None) -> Trained:
    """``run``, keeping the trained model and synthesizer."""
    cfg.check()
    torch.manual_seed(cfg.seed)
    model = CopyModel(cfg.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    boundary = synthetic_boundary(cfg) if cfg.method == "sg" else None
    cur = Curriculum(task=cfg.task, threshold=cfg.threshold, window=cfg.window)
    stream = CopyStream(cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    state, tally, last_err = model.init_state(cfg.batch_size), Tally(), math.nan
    t0, steps, seg = time.perf_counter(), 0, 0
    while steps + cfg.truncation <= cfg.budget:
        inputs, targets, mask = stream.next(cfg.truncation)

        def forward(s, inputs=inputs, targets=targets, mask=mask):
            logits, final = model(inputs, s)
            ce = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1), reduction="none")
            ce = ce.view_as(mask) * mask  # summed over the scored steps, mean over columns
            return ce.sum() / cfg.batch_size, final, (logits, ce)

        step = segment_step(forward, state, opt, boundary=boundary, mode="synthetic", clip=cfg.clip)
        state, (logits, ce) = step.state, step.output
        if step.stats is not None and mask.any():
            tally.sg_cos.append(float(step.stats.cos))
        steps, seg = steps + cfg.truncation, seg + 1
        outputs = int(mask.sum())
        with torch.no_grad():
            tally.correct += int(((logits.argmax(-1) == targets) & mask).sum())
        tally.outputs += outputs
        if cur.observe(cfg.truncation, bits(float(ce.detach().sum())), outputs):
            stream.n, stream.r = cur.n, cur.r
            tally.level_passed()
            if log:
                log(
                    f"  {cfg.task} {cfg.method} T={cfg.truncation} seed {cfg.seed}: step "
                    f"{steps}: passed N*R={cur.solved}, now N={cur.n} R={cur.r}"
                )
        err = cur.level_error()
        last_err = err if err is not None else last_err
    row = {
        **asdict(cfg),
        "solved": cur.solved,
        "n": cur.n,
        "r": cur.r,
        "levels_passed": len(cur.history),
        "history": cur.history,
        "final_bits": last_err,
        "final_acc": tally.final_acc(),
        "sg_cos": statistics.fmean(tally.sg_cos) if tally.sg_cos else None,
        "steps": steps,
        "segments": seg,
        "seconds": time.perf_counter() - t0,
    }
    return Trained(row, model, boundary)


def plan(
    tasks: Iterable[str],
    truncations: Iterable[int],
    methods: Iterable[str],
    seeds: Iterable[int],
    **overrides,
) -> list[HorizonConfig]:
    """Every (task, truncation, method, seed) combination, in that nesting order."""
    return [
        HorizonConfig(task=t, truncation=k, method=m, seed=s, **overrides)
        for t in tasks
        for k in truncations
        for m in methods
        for s in seeds
    ]


IDENTITY = ("task", "method", "truncation", "seed")
"""The fields that tell apart the runs of one results file; the others are its settings."""


def key(row: dict) -> tuple:
    """What identifies a run in a results file (for skipping finished ones)."""
    return tuple(row[name] for name in IDENTITY)


def check_same_settings(rows: list[dict], cfg: HorizonConfig, where: str | Path) -> None:
    """Refuse to add runs to a results file made with other settings: ``key`` skips runs by
    (task, method, truncation, seed) only, and ``table`` averages whatever the file holds."""
    for row in rows:
        for name, value in asdict(cfg).items():
            if name in IDENTITY or name not in row or row[name] == value:
                continue
            raise UserError(
                f"{where} holds runs made with {name}={row[name]!r}, not {value!r}; "
                "give these settings another --out"
            )


def read_rows(path) -> list[dict]:
    """The result rows in ``path`` (none if it does not exist; a torn last line skipped)."""
    return read_jsonl(path, missing_ok=True)


# ---------------------------------------------------------------------------- the table


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:g}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def table(rows: list[dict]) -> str:
    """Markdown: per task, one row per truncation, one column per method.

    Cells: mean ± standard deviation over seeds of the largest recall length N*R passed
    (the value itself with one seed), then the seeds' count and per-run numbers.
    """
    out = []
    for task in TASKS:
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        methods = [m for m in METHODS if any(r["method"] == m for r in task_rows)]
        truncs = sorted({r["truncation"] for r in task_rows})
        budget = sorted({r["budget"] for r in task_rows})
        label = "N" if task == "copy" else "N·R"
        out.append(
            f"**{task}**: largest {label} passed (< {task_rows[0]['threshold']:g} bits per "
            f"output), budget {', '.join(map(str, budget))} stream steps per column"
        )
        out.append("")
        head = ["truncation T"] + [f"{m} {label}" for m in methods]
        head += [f"{m} runs" for m in methods]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for k in truncs:
            cells, raw = [str(k)], []
            for m in methods:
                vals = [r["solved"] for r in task_rows if r["truncation"] == k and r["method"] == m]
                cells.append(_cell(vals))
                raw.append(" ".join(str(v) for v in vals) + f" (n={len(vals)})")
            out.append("| " + " | ".join(cells + raw) + " |")
        out.append("")
    return "\n".join(out)
