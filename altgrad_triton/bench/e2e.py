"""End to end: tokens/s of slices of training (a Trainer on random tokens), for the
``e2e`` family and ``--train-slice``."""

from __future__ import annotations

import dataclasses
import io
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError, one_line
from ..run.values import training_shape
from .families import Shapes
from .measure import Budget, Env, Row, free_memory

WT2_VOCAB = 33278
"""WikiText-2's vocabulary size (AWD-LSTM tokenisation, <eos> included)."""
CPU_VOCAB = 500
"""Vocabulary of the tiny CPU end-to-end runs (keeps the CPU command to seconds)."""
WT2_TRAIN_TOKENS = 2_088_628
"""WikiText-2's training tokens: an epoch's segments at the paper's shapes (the kernel
check's cost as a share of an epoch)."""

REPO = Path(__file__).resolve().parents[2]
QRNN_RECIPE = REPO / "recipes" / "wt2.toml"
LSTM_RECIPE = REPO / "recipes" / "wt2-lstm.toml"


def random_corpus(vocab_size: int, train_tokens: int, seed: int = 0):
    """A closed-vocabulary corpus of uniformly random token ids (no text needed)."""
    from ..data import Corpus, Vocabulary

    g = torch.Generator().manual_seed(seed)
    vocab = Vocabulary([f"w{i}" for i in range(vocab_size)])
    return Corpus(
        name="random", level="word", vocab=vocab,
        train=torch.randint(0, vocab_size, (train_tokens,), generator=g),
        valid=torch.randint(0, vocab_size, (4096,), generator=g),
        test=torch.randint(0, vocab_size, (4096,), generator=g),
        unk_counts={"valid": 0, "test": 0}, closed_vocabulary=True,
        source=f"{train_tokens} random tokens (altgrad-bench)",
    )  # fmt: skip


CPU_TINY_OVERRIDES = [
    "model.emb_size=16",
    "model.hidden_size=24",
    "model.layers=2",
    "bptt.length=8",
    "data.batch_size=4",
    "synthetic.hidden=4",
]


@dataclass
class E2EResult:
    tokens: int
    segments: int
    seconds: float
    warm_seconds: float
    mode: str
    loss: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


class TrainSlice:
    """A Trainer on random tokens, for timing slices of training (no evaluation, no files)."""

    def __init__(
        self,
        env: Env,
        recipe_path: Path,
        overrides: Sequence[str],
        backend: str,
        dtype: str,
        run_dir: Path,
        segments: int,
        mode: str = "synthetic",
        vocab_size: int | None = None,
    ):
        from rich.console import Console

        from ..config import recipe as recipes
        from ..run.train import Trainer

        if not Path(recipe_path).exists():
            raise UserError(f"{recipe_path}: recipe not found (use --qrnn-recipe/--lstm-recipe)")
        over = list(overrides)
        on_cpu = env.device.type != "cuda"
        if on_cpu:
            over = CPU_TINY_OVERRIDES + over
        if vocab_size is None:
            vocab_size = CPU_VOCAB if on_cpu else WT2_VOCAB
        over += [
            f"run.backend={backend}",
            f"run.dtype={dtype}",
            f"run.device={env.device.type}",
            f"run.out_dir={run_dir}",
            "run.log_every=1000000",
            "run.max_batches=1",
        ]
        self.recipe = recipes.load(recipe_path, over)
        self.shape = shape = training_shape(self.recipe)
        per_segment = int(shape.bptt * 1.3) + 30
        corpus = random_corpus(vocab_size, shape.batch_size * (segments * per_segment + 8))
        self.console = Console(file=io.StringIO())
        # the stored tuning winners are the command's to apply (or not: --no-stored-winners)
        self.trainer = Trainer(
            self.recipe, run_dir / "run", console=self.console, corpus=corpus, tuned_configs=False
        )
        plan = self.trainer.parts.plan(1)
        if self.trainer.parts.boundary is not None and mode == "synthetic":
            plan = dataclasses.replace(plan, mode="synthetic")
        self.plan = plan
        self.env = env
        self.vocab_size = vocab_size

    def run(self, segments: int) -> tuple[int, int, float, float]:
        """Train ``segments`` segments; (tokens, segments, seconds, mean loss)."""
        t = self.trainer
        t.parts.segments = dataclasses.replace(t.parts.segments, max_segments=segments)
        self.env.sync()
        t0 = time.perf_counter()
        sums = t.train_epoch(self.plan)
        self.env.sync()
        seconds = time.perf_counter() - t0
        return sums.tokens, sums.segment, seconds, sums.loss / max(sums.tokens, 1)

    def close(self) -> None:
        del self.trainer
        free_memory(self.env)


def e2e_run(
    env: Env,
    recipe_path: Path,
    overrides: Sequence[str],
    backend: str,
    dtype: str,
    warm: int,
    measure: int,
    mode: str,
) -> E2EResult:
    with tempfile.TemporaryDirectory(prefix="altgrad-bench-") as tmp:
        s = TrainSlice(
            env, recipe_path, overrides, backend, dtype, Path(tmp), max(warm, measure), mode
        )
        try:
            _, _, warm_s, _ = s.run(warm)
            tokens, segments, seconds, loss = s.run(measure)
            return E2EResult(tokens, segments, seconds, warm_s, s.plan.mode, loss)
        finally:
            s.close()


def e2e_rows(env: Env, args, shapes: Shapes, budget: Budget) -> list[Row]:
    from ..config import recipe as recipes

    warm, measure = shapes.e2e_warm, shapes.e2e_measure
    rows: list[Row] = []
    for label, path, dtypes in shapes.e2e_models:
        backends = ["triton", "torch"] if env.gpu else ["torch"]
        if env.gpu and training_shape(recipes.load(path)).cell == "lstm":
            backends.append("cudnn")  # what a user would pick instead of our LSTM kernel
        for dt in dtypes:
            group: list[Row] = []
            for backend in backends:
                vocab = WT2_VOCAB if env.device.type == "cuda" else CPU_VOCAB
                shape = f"{label} (random tokens, vocab {vocab})"
                if not budget.ok():
                    budget.skip(f"e2e {label} {dt} {backend}")
                    continue
                row = Row("e2e", shape, dt, "train", backend, unit="tokens/s")
                try:
                    res = e2e_run(
                        env, path, args.e2e_override, backend, dt, warm, measure, args.e2e_mode
                    )
                except UserError:
                    raise
                except Exception as e:  # noqa: BLE001
                    row.note = f"n/a: {one_line(e, 120)}"
                    free_memory(env)
                else:
                    row.ms = res.seconds / res.segments * 1e3
                    row.metric = res.tokens_per_s
                    row.note = (
                        f"{res.segments} segments ({res.tokens} tokens) after {warm} "
                        f"warm-up ({res.warm_seconds:.1f} s), mode {res.mode}, "
                        f"loss {res.loss:.2f}"
                    )
                group.append(row)
            ours = next((r for r in group if r.provider == "triton" and r.metric), None)
            for r in group:
                if ours and r.metric:
                    r.ratio = ours.metric / r.metric
            rows += group
            if env.gpu and budget.ok():
                rows.append(check_cost_row(env, args, label, path, dt, warm))
    return rows


def check_cost(env: Env, recipe_path: Path, overrides: Sequence[str], backend: str, dtype: str,
               warm: int, mode: str) -> tuple[float, float, int]:  # fmt: skip
    """What the kernel guard adds to a run: (seconds of a segment with every family's first
    check, of the same segment without, segments in a WikiText-2 epoch). Measured after a
    warm-up that compiled and autotuned every kernel, as the check reuses them; the
    classes evaluation launches are checked at the first validation, not counted here."""
    from ..kernels.guard import guarding
    from ..run.kernel_check import make_guard

    with tempfile.TemporaryDirectory(prefix="altgrad-bench-") as tmp:
        s = TrainSlice(env, recipe_path, overrides, backend, dtype, Path(tmp), warm + 1, mode)
        try:
            s.run(warm)
            _, _, plain, _ = s.run(1)
            with guarding(make_guard("auto", True, s.console)):
                _, _, checked, _ = s.run(1)
            segments = WT2_TRAIN_TOKENS // (s.shape.batch_size * s.shape.bptt)
            return checked, plain, segments
        finally:
            s.close()


def check_cost_row(env: Env, args, label: str, path: Path, dtype: str, warm: int) -> Row:
    """One row: the kernel check's seconds, and their share of a WikiText-2 epoch."""
    row = Row("e2e", f"{label} (random tokens)", dtype, "kernel check", "triton", unit="% epoch")
    try:
        checked, plain, segments = check_cost(
            env, path, args.e2e_override, "triton", dtype, warm, args.e2e_mode
        )
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001
        row.note = f"n/a: {one_line(e, 120)}"
        free_memory(env)
        return row
    row.ms = (checked - plain) * 1e3
    row.metric = 100 * (checked - plain) / (segments * plain)
    row.note = (f"first segment checked {checked:.3f} s vs {plain:.3f} s unchecked; "
                f"{segments} segments per WikiText-2 epoch")  # fmt: skip
    return row


def train_slice(env: Env, args, console) -> Row:
    """Train the QRNN recipe for about ``args.train_slice`` seconds; print tokens/s as it goes."""
    seconds = args.train_slice
    chunk = 8 if env.gpu else 2
    backend = args.slice_backend if env.gpu else "torch"  # CPU: the reference path only
    dtype = args.slice_dtype if env.gpu else "float32"
    with tempfile.TemporaryDirectory(prefix="altgrad-slice-") as tmp:
        s = TrainSlice(
            env,
            args.qrnn_recipe,
            args.e2e_override,
            backend,
            dtype,
            Path(tmp),
            chunk,
            args.e2e_mode,
        )
        try:
            _, _, warm_s, _ = s.run(2)
            console.print(
                f"slice: warm-up 2 segments in {warm_s:.1f} s (compile/autotune), "
                f"mode {s.plan.mode}, backend {backend}, dtype {dtype}",
                markup=False,
            )
            tokens = segs = 0
            spent = 0.0
            while spent < seconds:
                n_tok, n_seg, dt, loss = s.run(chunk)
                tokens, segs, spent = tokens + n_tok, segs + n_seg, spent + dt
                mem = (
                    f", peak {torch.cuda.max_memory_allocated(env.device) / 2**30:.2f} GiB"
                    if env.device.type == "cuda"
                    else ""
                )
                console.print(
                    f"slice: {spent:6.1f} s  {segs} segments  {n_tok / dt:,.0f} tok/s "
                    f"(this chunk)  loss {loss:.3f}{mem}",
                    markup=False,
                )
        finally:
            s.close()
    on_cpu = env.device.type != "cuda"
    model = "tiny qrnn" if on_cpu else "wt2 qrnn"
    vocab = CPU_VOCAB if on_cpu else WT2_VOCAB
    return Row(
        "e2e-slice",
        f"{model} (random tokens, vocab {vocab})",
        dtype,
        "train",
        backend,
        ms=spent / max(segs, 1) * 1e3,
        metric=tokens / max(spent, 1e-9),
        unit="tokens/s",
        note=f"{segs} segments in {spent:.1f} s after 2 warm-up, mode {s.plan.mode}",
    )
