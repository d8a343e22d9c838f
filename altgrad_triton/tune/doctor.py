"""The device self-test: every kernel family, in each dtype training may run it in, at a
recipe's shapes on the present device, compared with its PyTorch reference as the kernel
guard compares it (``kernels.guard.compare``), and timed against it.

Why a command of its own: the guard checks a family the first time a run launches it, and
falls back quietly; a person setting up a GPU wants to see every family pass or fail, at
once, with its error and its speed, before a long run and before a benchmark.

A case calls a family's public function with inputs of the recipe's shapes that require
grad as training's do, so the forward and every gradient are checked. Without a GPU the
cases run only under Triton's interpreter (``TRITON_INTERPRET=1``), at small shapes.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Callable
from typing import Any

import torch

from .. import kernels
from ..errors import one_line
from ..kernels import guard
from ..run.shapes import RecipeShapes

DTYPES = (torch.float32, torch.bfloat16)
"""The storage dtypes a run trains in (``run.dtype``); every family is checked in both."""

SMALL = RecipeShapes(cell="lstm", batch=3, bptt=5, hidden=(24,), dtype=torch.float32,
                     state_size=48, synth_hidden=4, vocab=50)  # fmt: skip
"""The shapes of a check under the interpreter (seconds, not hours, per family)."""


@dataclasses.dataclass
class Case:
    """One family at one shape and dtype: ``make(device)`` returns (fn, args, kwargs)."""

    family: str
    shape: str
    dtype: torch.dtype
    make: Callable[[torch.device], tuple[Callable, tuple, dict]]


@dataclasses.dataclass
class Outcome:
    """What the self-test found for one case."""

    family: str
    shape: str
    dtype: str
    passed: bool
    max_error: float | None = None
    tolerance: float | None = None
    worst: str = ""
    error: str = ""
    triton_ms: float | None = None
    reference_ms: float | None = None

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fallback"

    def to_dict(self) -> dict[str, Any]:
        """As JSON takes it (an infinite error, a NaN's, as null)."""
        out = dataclasses.asdict(self) | {"verdict": self.verdict}
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v
                for k, v in out.items()}  # fmt: skip


def _leaf(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, scale: float = 1.0,
          grad: bool = True) -> torch.Tensor:  # fmt: skip
    t = (torch.randn(shape, device=device) * scale).to(dtype)
    return t.requires_grad_(grad)


def _lstm(steps: int, batch: int, hidden: int, dtype: torch.dtype) -> Case:
    def make(d: torch.device):
        gx = _leaf((steps, batch, 4 * hidden), dtype, d)
        w = _leaf((4 * hidden, hidden), dtype, d, hidden**-0.5)
        h0, c0 = _leaf((batch, hidden), dtype, d, 0.5), _leaf((batch, hidden), torch.float32, d)
        return kernels.lstm.lstm_segment, (gx, w, h0, c0), {}

    return Case("lstm", f"T={steps} B={batch} H={hidden}", dtype, make)


def _fo_pool(steps: int, batch: int, hidden: int, dtype: torch.dtype, gates: int) -> Case:
    def make(d: torch.device):
        g = _leaf((steps, batch, gates * hidden), dtype, d, 2.0)
        c0 = _leaf((batch, hidden), torch.float32, d)
        return kernels.fo_pooling.fo_pool, (g, c0), {"output_gate": gates == 3}

    return Case("fo_pool", f"T={steps} B={batch} H={hidden}", dtype, make)


def _sg_loss(rows: int, n: int, dtype: torch.dtype) -> Case:
    def make(d: torch.device):
        pred = _leaf((rows, n // rows), dtype, d)
        target = _leaf((rows, n // rows), dtype, d, grad=False)
        return kernels.sg_loss.sg_mse_loss_with_stats, (pred, target), {}

    return Case("sg_loss", f"N={n}", dtype, make)


def _elementwise(n: int, units: int, dtype: torch.dtype) -> Case:
    def make(d: torch.device):
        args = (_leaf((n,), dtype, d), _leaf((n, units), dtype, d, 0.5),
                _leaf((3, units), dtype, d), _leaf((3, units), dtype, d, 0.1),
                _leaf((units,), dtype, d, 0.1), _leaf((1,), dtype, d),
                torch.rand((n, units), device=d).round().to(dtype))  # fmt: skip
        return kernels.elementwise.elementwise_qrnn_synth, args, {}

    return Case("elementwise", f"N={n} U={units}", dtype, make)


def _authors_scan(n: int, units: int, dtype: torch.dtype) -> Case:
    def make(d: torch.device):
        gates = _leaf((n, 3 * units), dtype, d, 2.0)
        c0 = _leaf((units,), dtype, d, 0.5)
        keep = torch.rand((n, units), device=d).round().to(dtype)
        return kernels.authors_synth.authors_scan, (gates, c0, keep), {}

    return Case("authors_scan", f"N={n} U={units}", dtype, make)


def _linear_ce(rows: int, dim: int, vocab: int, dtype: torch.dtype) -> Case:
    def make(d: torch.device):
        h = _leaf((rows, dim), dtype, d)
        w = _leaf((vocab, dim), dtype, d, dim**-0.5)
        b = _leaf((vocab,), dtype, d, 0.1)
        targets = torch.randint(0, vocab, (rows,), device=d)
        return kernels.linear_ce.linear_cross_entropy, (h, w, b, targets), {}

    return Case("linear_ce", f"N={rows} D={dim} V={vocab}", dtype, make)


def cases(shapes: RecipeShapes, dtypes: tuple[torch.dtype, ...] = DTYPES) -> list[Case]:
    """Every family in every dtype: the recurrent families at each distinct layer size of
    the recipe (training's batch and segment length), the synthesizer's families and the
    SG loss at its joined state, the LM head at one chunk of a segment's rows."""
    n, units = shapes.state_elements, shapes.synth_hidden
    rows = shapes.batch * shapes.bptt
    vocab = shapes.vocab or 10_000
    chunk = min(rows, kernels.linear_ce.chunk_rows_for(vocab, "cuda"))
    gates = 3 if shapes.output_gate else 2
    out: list[Case] = []
    for dtype in dtypes:
        for h in dict.fromkeys(shapes.hidden):
            out.append(_lstm(shapes.bptt, shapes.batch, h, dtype))
            out.append(_fo_pool(shapes.bptt, shapes.batch, h, dtype, gates))
        out.append(_elementwise(n, units, dtype))
        out.append(_authors_scan(n, units, dtype))
        out.append(_sg_loss(shapes.batch, n, dtype))
        out.append(_linear_ce(chunk, shapes.hidden[-1], vocab, dtype))
    return out


def _median_ms(run: Callable[[], Any], device: torch.device, repeats: int) -> float:
    return statistics.median(guard.timed(device, run)[1] * 1e3 for _ in range(repeats))


def _timed_pair(fn: Callable, args: tuple, kwargs: dict, device: torch.device,
                repeats: int) -> tuple[float, float]:  # fmt: skip
    """Median ms of a forward and backward on Triton and on the reference, both warm (in
    the storage dtype: what a run would spend)."""

    def step(backend: str) -> Callable[[], None]:
        def run() -> None:
            outs = guard.flat_outputs(fn(*args, **kwargs, backend=backend))
            loss = sum(o.float().sum() for o in outs if o.requires_grad)
            if isinstance(loss, torch.Tensor):
                loss.backward()

        return run

    return (_median_ms(step("triton"), device, repeats),
            _median_ms(step("torch"), device, repeats))  # fmt: skip


def check(case: Case, device: torch.device, repeats: int = 5) -> Outcome:
    """Run ``case`` on Triton and on the reference; a failure is an outcome, not a raise."""
    fn, args, kwargs = case.make(device)
    label = dict(family=case.family, shape=case.shape, dtype=str(case.dtype).split(".")[-1])
    try:
        result = guard.compare(fn, args, kwargs, family=case.family)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as e:  # a compile error, OutOfResources, a failed launch
        return Outcome(**label, passed=False, error=one_line(e))
    outcome = Outcome(**label, passed=result.passed, max_error=result.max_error,
                      tolerance=result.tolerance, worst=result.worst)  # fmt: skip
    if result.passed and repeats:
        outcome.triton_ms, outcome.reference_ms = _timed_pair(fn, args, kwargs, device, repeats)
    return outcome
