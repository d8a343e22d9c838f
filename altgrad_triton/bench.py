"""Benchmarks: each kernel family against the baselines a user would pick instead.

For every family, at the paper's shapes, forward, backward and both, side by side in one
process on one GPU:

* ``fo_pool`` (QRNN fo-pooling, B=20 T=200 H=1550 and 400, fp32 and bf16): ours (Triton),
  the PyTorch reference eager and under ``torch.compile``, and the bandwidth bound;
* ``sg_loss`` and ``elementwise`` (the synthetic-gradient loss and the element-wise QRNN
  synthesizer, fp32, on the joined state of the WT2 QRNN / LSTM models): the same
  providers;
* ``lstm``: ours (``cells.LSTM`` on the Triton segment kernels) vs cuDNN ``nn.LSTM`` as the
  project would otherwise run it (bf16 autocast; one layer per row, and the 3-layer stack),
  cuDNN's best case (single layer, fp16, H=1024: where its persistent algorithm can apply)
  and the PyTorch reference;
* ``e2e``: tokens/s of a slice of training of the WT2 QRNN and LSTM recipes on random tokens
  (WT2's vocabulary size), backend triton vs torch, fp32 and bf16.

Timings are ``triton.testing.do_bench`` quantiles (median, p20, p80; L2 flushed before each
repetition). "fwd" is the training forward (autograd recording, what the backward needs is
saved); "bwd" is ``torch.autograd.grad`` on a retained graph; "fwd+bwd" both. Throughput:
GB/s for the memory-bound families -- the kernel's minimal traffic (the byte counts in the
kernel docstrings) divided by the time, the same bytes for every provider -- and its
percentage of a device-to-device copy measured in the same run (the practical ceiling);
TFLOP/s for the LSTM (2 flops per multiply-add of the input and recurrent products, the
backward counted as twice the forward). ``ratio`` = this row's time / ours at the same shape,
dtype and direction (> 1: ours is faster); for the bandwidth ``bound`` row it is the bound's
time / ours (the fraction of the bound that ours reaches).

Without a usable GPU the command times the PyTorch reference paths on tiny shapes only and
says so: those are CPU reference timings, not GPU figures.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as _dt
import gc
import io
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

FAMILIES = ("fo_pool", "sg_loss", "elementwise", "lstm", "e2e")
DIRECTIONS = ("fwd", "bwd", "fwd+bwd")
CSV_COLUMNS = (
    "date", "device", "capability", "torch", "triton", "family", "shape", "dtype",
    "direction", "provider", "ms", "ms_p20", "ms_p80", "metric", "unit", "pct_of_copy",
    "ratio", "note",
)  # fmt: skip
DEFAULT_CSV = Path("docs/benchmarks.csv")
WT2_VOCAB = 33278
"""WikiText-2's vocabulary size (AWD-LSTM tokenisation, <eos> included)."""
CPU_VOCAB = 500
"""Vocabulary of the tiny CPU end-to-end runs (keeps the CPU command to seconds)."""

REPO = Path(__file__).resolve().parents[1]
QRNN_RECIPE = REPO / "recipes" / "wt2.toml"
LSTM_RECIPE = REPO / "recipes" / "wt2-lstm.toml"

QUICK_BUDGET_S = 75.0
"""Default ``--budget`` under ``--quick``: no new measurement starts after it (per-family
shares below; time a family leaves unused goes to the next)."""
BUDGET_SHARES = {"fo_pool": 0.2, "sg_loss": 0.08, "elementwise": 0.08, "lstm": 0.34, "e2e": 0.3}
CPU_BANNER = (
    "CPU REFERENCE TIMINGS, NOT GPU FIGURES: no usable CUDA GPU, so only the "
    "PyTorch reference paths run, on tiny shapes"
)


# ----------------------------------------------------------------------------- environment


@dataclass
class Env:
    device: torch.device
    gpu: bool
    name: str
    capability: str
    torch: str
    triton: str
    date: str
    copy_gbps: float | None = None

    @classmethod
    def detect(cls, force_cpu: bool = False) -> Env:
        import triton

        from .kernels import interpreting

        gpu = torch.cuda.is_available() and not interpreting() and not force_cpu
        date = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
        if gpu:
            index = torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(index)
            return cls(
                torch.device("cuda", index),
                True,
                torch.cuda.get_device_name(index),
                f"{major}.{minor}",
                torch.__version__,
                triton.__version__,
                date,
            )
        return cls(
            torch.device("cpu"), False, "cpu", "", torch.__version__, triton.__version__, date
        )

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


# ----------------------------------------------------------------------------- timing

Timing = tuple[float, float, float]  # median, p20, p80 (ms)


class Timer:
    """do_bench quantiles on a GPU; a plain perf_counter loop on the CPU."""

    def __init__(self, env: Env, warmup_ms: float, rep_ms: float):
        self.env, self.warmup_ms, self.rep_ms = env, warmup_ms, rep_ms

    def __call__(self, fn: Callable[[], Any]) -> Timing:
        if self.env.device.type == "cuda":
            from triton.testing import do_bench

            med, p20, p80 = do_bench(
                fn, warmup=self.warmup_ms, rep=self.rep_ms, quantiles=[0.5, 0.2, 0.8]
            )
            return float(med), float(p20), float(p80)
        fn()
        times: list[float] = []
        end = time.perf_counter() + self.rep_ms / 1e3
        while len(times) < 3 or (time.perf_counter() < end and len(times) < 200):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        q = statistics.quantiles(times, n=10, method="inclusive")  # deciles
        return statistics.median(times), q[1], q[7]


class Budget:
    """Wall-clock budget: each family gets a deadline when it starts (its share of what is
    left, so time a family leaves unused goes to the next); ``ok()`` says whether a new
    measurement may start. ``total_s=None``: no limit."""

    def __init__(self, total_s: float | None, families: Sequence[str]):
        self.total, self.families = total_s, list(families)
        self.start = time.perf_counter()
        self.deadline = math.inf
        self.skipped: list[str] = []
        self._started: set[str] = set()

    def begin(self, family: str) -> None:
        if self.total is None:
            return
        left = [f for f in self.families if f == family or f not in self._started]
        self._started.add(family)
        shares = sum(BUDGET_SHARES.get(f, 0.1) for f in left)
        remaining = max(0.0, self.total - (time.perf_counter() - self.start))
        self.deadline = time.perf_counter() + remaining * BUDGET_SHARES.get(family, 0.1) / shares

    def ok(self) -> bool:
        return time.perf_counter() < self.deadline

    def time_left(self) -> float:
        """Seconds left of the whole budget (inf without one)."""
        if self.total is None:
            return math.inf
        return self.total - (time.perf_counter() - self.start)

    def skip(self, what: str) -> None:
        self.skipped.append(what)


# ----------------------------------------------------------------------------- rows


@dataclass
class Row:
    family: str
    shape: str
    dtype: str
    direction: str
    provider: str
    ms: float | None = None
    p20: float | None = None
    p80: float | None = None
    metric: float | None = None
    unit: str = ""
    pct: float | None = None
    ratio: float | None = None
    note: str = ""

    def csv(self, env: Env) -> list[str]:
        def num(x, digits=6):
            return "" if x is None else f"{x:.{digits}g}"

        return [
            env.date,
            env.name,
            env.capability,
            env.torch,
            env.triton,
            self.family,
            self.shape,
            self.dtype,
            self.direction,
            self.provider,
            num(self.ms),
            num(self.p20),
            num(self.p80),
            num(self.metric),
            self.unit,
            num(self.pct, 4),
            num(self.ratio, 4),
            self.note,
        ]


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > 120:
        first = first[:117] + "..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


# ----------------------------------------------------------------------------- cases

Forward = Callable[[], Sequence[torch.Tensor]]


@dataclass
class Case:
    """One provider at one shape: ``make()`` -> (forward closure returning the outputs to
    differentiate, the tensors to differentiate with respect to)."""

    provider: str
    make: Callable[[], tuple[Forward, list[torch.Tensor]]]
    note: str = ""
    compile: bool = False  # a torch.compile provider: skipped when the budget is spent


@dataclass
class Group:
    """Every provider at one (family, shape, dtype)."""

    family: str
    shape: str
    dtype: str
    cases: list[Case]
    bytes: dict[str, float] | None = None  # direction -> bytes moved (GB/s metric)
    flops: dict[str, float] | None = None  # direction -> flops (TFLOP/s metric)
    directions: tuple[str, ...] = DIRECTIONS


def measure_case(
    case: Case, timer: Timer, env: Env, directions: Sequence[str]
) -> list[Timing | str]:
    """Timings per direction (or an "n/a: ..." string for a direction that failed)."""
    try:
        t0 = time.perf_counter()
        fwd, leaves = case.make()
        outs = list(fwd())
        env.sync()
        first_s = time.perf_counter() - t0
        grads = [torch.randn_like(o) for o in outs]
        if not all(o.requires_grad for o in outs):
            raise RuntimeError("an output does not require grad")
        outs.clear()  # free the first call's graph before timing
    except Exception as e:  # noqa: BLE001 - a failing baseline is reported, not fatal
        return [f"n/a: {_one_line(e)}"] * len(directions)
    if case.compile:
        case.note = (case.note + "; " if case.note else "") + f"first call {first_s:.1f} s"

    def backward(outputs, retain):
        torch.autograd.grad(outputs, leaves, grads, retain_graph=retain, allow_unused=True)

    out: list[Timing | str] = []
    for d in directions:
        try:
            if d == "fwd":
                out.append(timer(lambda: fwd()))
            elif d == "bwd":
                kept = list(fwd())
                out.append(timer(lambda kept=kept: backward(kept, True)))
                del kept
            else:
                out.append(timer(lambda: backward(list(fwd()), False)))
        except Exception as e:  # noqa: BLE001
            out.append(f"n/a: {_one_line(e)}")
            with contextlib.suppress(Exception):
                env.sync()
    return out


def measure_group(
    group: Group, timer: Timer, env: Env, budget: Budget, force: bool = False
) -> list[Row]:
    """Every case of ``group`` in every direction, the bandwidth bound, metrics and ratios.
    A torch.compile case is skipped once the family's budget is spent (unless ``force``)."""
    rows: list[Row] = []
    for case in group.cases:
        if case.compile and not force and not budget.ok():
            for d in group.directions:
                rows.append(
                    Row(
                        group.family,
                        group.shape,
                        group.dtype,
                        d,
                        case.provider,
                        note="n/a: skipped, time budget spent",
                    )
                )
            continue
        results = measure_case(case, timer, env, group.directions)
        for d, res in zip(group.directions, results, strict=True):
            row = Row(group.family, group.shape, group.dtype, d, case.provider, note=case.note)
            if isinstance(res, str):
                row.note = res if not case.note else f"{res}; {case.note}"
            else:
                row.ms, row.p20, row.p80 = res
            rows.append(row)
        _free(env)
    if group.bytes and env.copy_gbps:
        for d in group.directions:
            nbytes = group.bytes.get(d)
            if nbytes:
                rows.append(
                    Row(
                        group.family,
                        group.shape,
                        group.dtype,
                        d,
                        "bound",
                        ms=nbytes / (env.copy_gbps * 1e9) * 1e3,
                        note="minimal bytes at the measured copy bandwidth",
                    )
                )
    _metrics(rows, group, env)
    return rows


def _metrics(rows: list[Row], group: Group, env: Env) -> None:
    ours = {r.direction: r.ms for r in rows if r.provider == "triton" and r.ms}
    for r in rows:
        if r.ms is None:
            continue
        if group.bytes and group.bytes.get(r.direction):
            r.metric, r.unit = group.bytes[r.direction] / (r.ms * 1e-3) / 1e9, "GB/s"
            if env.copy_gbps:
                r.pct = 100.0 * r.metric / env.copy_gbps
        elif group.flops and group.flops.get(r.direction):
            r.metric, r.unit = group.flops[r.direction] / (r.ms * 1e-3) / 1e12, "TFLOP/s"
        if ours.get(r.direction):
            r.ratio = r.ms / ours[r.direction]


def _free(env: Env) -> None:
    gc.collect()
    if env.device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- traffic


def fo_pool_bytes(steps: int, batch: int, hidden: int, size: int) -> dict[str, float]:
    """Minimal traffic of fo-pooling with an output gate (kernels/fo_pool.py's table): the
    forward reads f, z, o, writes h and the fp32 c sequence, plus c0 / c_T per column; the
    backward reads dh, f, z, o, c (fp32), writes df, dz, do, plus c0, dc_T, dc0."""
    el, col = steps * batch * hidden, batch * hidden
    fwd = el * (4 * size + 4) + col * 2 * size
    bwd = el * (7 * size + 4) + col * 3 * size
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def sg_loss_bytes(n: int, size: int = 4) -> dict[str, float]:
    """Forward reads pred and target and writes d loss / d pred; backward scales it."""
    fwd, bwd = 3 * size * n, 2 * size * n
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def elementwise_bytes(n: int, units: int, size: int = 4) -> dict[str, float]:
    """As in training (dropout mask, no gradient into the carry): forward reads x, c_prev,
    mask and writes c, y; backward reads x, c_prev, mask, dy and writes dx."""
    fwd = n * units * 3 * size + n * 2 * size
    bwd = n * units * 2 * size + n * 3 * size
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def lstm_flops(steps: int, batch: int, hidden: int, layers: int = 1) -> dict[str, float]:
    """Input and recurrent products (input size = hidden): 2 * T * B * 4H * (I + H) per layer
    forward; the backward counted as twice that (data and weight gradients)."""
    fwd = layers * 2.0 * steps * batch * 4 * hidden * (2 * hidden)
    return {"fwd": fwd, "bwd": 2 * fwd, "fwd+bwd": 3 * fwd}


def copy_bandwidth(env: Env, timer: Timer) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written), 512 MiB buffers (or
    what fits in a quarter of the free memory)."""
    free, _ = torch.cuda.mem_get_info(env.device)
    nbytes = int(min(512 * 2**20, free // 4)) // 16 * 16
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=env.device).uniform_()
    dst = torch.empty_like(src)
    med, _, _ = timer(lambda: dst.copy_(src))
    return 2 * nbytes / (med * 1e-3) / 1e9


# ----------------------------------------------------------------------------- families

DTYPE_OF = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Shapes:
    """What each family measures. ``full`` providers (ours, torch.compile, cuDNN) run only
    where ``Env.gpu``; the CPU reference mode keeps the PyTorch paths."""

    fo_pool: list[tuple[int, int, int]]  # (B, T, H)
    fo_pool_dtypes: list[str]
    compile_all: bool  # torch.compile at every fo_pool shape (else once, at the first, last)
    state: list[tuple[str, int, int]]  # (model label, B, joined state size) for SG/synth
    units: int  # element-wise synthesizer hidden units
    lstm_layer: list[tuple[int, int, int]]  # (B, T, H), one layer
    lstm_stack: list[tuple[int, int, int]]  # (B, T, H), 3 layers
    lstm_best: list[tuple[int, int, int]]  # (B, T, H), fp16 single layer (cuDNN's best case)
    lstm_modes: list[str]  # "bf16-autocast", "float32"
    stack_reference: bool  # also the PyTorch reference for the 3-layer stack
    e2e_models: list[tuple[str, str, list[str]]]  # (label, recipe path, dtypes)
    e2e_warm: int
    e2e_measure: int


def plan_shapes(env: Env, quick: bool, args) -> Shapes:
    """The paper's shapes on a GPU (fewer under ``quick``); tiny ones in CPU reference mode."""
    from . import recipe as recipes
    from .tune import shapes_from_recipe

    if not env.gpu:
        return Shapes(
            fo_pool=[(2, 8, 16)], fo_pool_dtypes=["float32"], compile_all=False,
            state=[("tiny", 4, 48)], units=8,
            lstm_layer=[(2, 8, 16)], lstm_stack=[], lstm_best=[], lstm_modes=["float32"],
            stack_reference=False,
            e2e_models=[("tiny qrnn", args.qrnn_recipe, ["float32"]),
                        ("tiny lstm", args.lstm_recipe, ["float32"])],
            e2e_warm=2, e2e_measure=3,
        )  # fmt: skip
    state = []
    for label, path in (("wt2 qrnn", args.qrnn_recipe), ("wt2 lstm", args.lstm_recipe)):
        s = shapes_from_recipe(recipes.load(path))
        state.append((label, s.batch, s.state_size))
    units = recipes.load(args.qrnn_recipe).synthetic.hidden
    if quick:
        return Shapes(
            fo_pool=[(20, 200, 1550), (20, 200, 400)], fo_pool_dtypes=["bfloat16", "float32"],
            compile_all=False, state=state[:1], units=units,
            lstm_layer=[(20, 200, 650), (20, 200, 1550), (80, 70, 1150)],
            lstm_stack=[(80, 70, 1150)], lstm_best=[(20, 200, 1024)],
            lstm_modes=["bf16-autocast"], stack_reference=False,
            e2e_models=[("wt2 qrnn", args.qrnn_recipe, ["float32", "bfloat16"]),
                        ("wt2 lstm", args.lstm_recipe, ["bfloat16"])],
            e2e_warm=2, e2e_measure=3,
        )  # fmt: skip
    return Shapes(
        fo_pool=[(20, 200, 1550), (20, 200, 400)], fo_pool_dtypes=["bfloat16", "float32"],
        compile_all=True, state=state, units=units,
        lstm_layer=[(b, t, h) for b in (20, 80) for h in (650, 1150, 1550) for t in (70, 200)],
        lstm_stack=[(b, t, 1150) for b in (20, 80) for t in (70, 200)],
        lstm_best=[(20, 200, 1024), (80, 70, 1024)],
        lstm_modes=["bf16-autocast", "float32"], stack_reference=True,
        e2e_models=[("wt2 qrnn", args.qrnn_recipe, ["float32", "bfloat16"]),
                    ("wt2 lstm", args.lstm_recipe, ["float32", "bfloat16"])],
        e2e_warm=3, e2e_measure=10,
    )  # fmt: skip


def _compile(fn: Callable) -> Callable:
    import torch._dynamo

    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def kernel_cases(
    make: Callable, ours: Callable, reference: Callable, providers: Sequence[str]
) -> list[Case]:
    """The providers of a kernel family: ours (its Triton path), the PyTorch reference eager,
    and ``torch.compile`` of the reference. ``make(impl)`` builds a case from a zero-argument
    callable that returns the function to time (called lazily: compiling happens inside)."""
    made = {
        "triton": lambda: Case("triton", make(lambda: ours)),
        "torch": lambda: Case("torch", make(lambda: reference), note="reference, eager"),
        "compile": lambda: Case(
            "compile",
            make(lambda: _compile(reference)),
            note="torch.compile(reference)",
            compile=True,
        ),
    }
    return [made[p]() for p in providers]


def _gpu_providers(env: Env) -> list[str]:
    return ["triton", "torch", "compile"] if env.gpu else ["torch"]


def fo_pool_group(
    env: Env, batch: int, steps: int, hidden: int, dt: str, providers: Sequence[str]
) -> Group:
    """fo-pooling at one shape; f, z, o are strided views of one [T, B, 3H] projection, as
    ``cells.QRNN`` passes them (so the kernels' strided path and autotune key are the
    training ones)."""
    from .kernels import fo_pool, fo_pool_reference

    dtype = DTYPE_OF[dt]

    def make(impl):
        def build():
            proj = torch.rand(steps, batch, 3 * hidden, device=env.device).to(dtype)
            f, z, o = (p.detach().requires_grad_() for p in proj.chunk(3, -1))
            c0 = torch.randn(batch, hidden, device=env.device).to(dtype)
            c0.requires_grad_()
            fn = impl()
            return (lambda: fn(f, z, o, c0)), [f, z, o, c0]

        return build

    def ours(*a):
        return fo_pool(*a, backend="triton")

    size = torch.finfo(dtype).bits // 8
    return Group(
        "fo_pool",
        f"B={batch} T={steps} H={hidden}",
        dt,
        kernel_cases(make, ours, fo_pool_reference, providers),
        bytes=fo_pool_bytes(steps, batch, hidden, size),
    )


def fo_pool_groups(env: Env, shapes: Shapes) -> list[Group]:
    """Ours, the reference and (with ``compile_all``) torch.compile at every shape; without
    it, torch.compile runs once at the end of the whole benchmark (:func:`run_families`)."""
    groups = []
    for batch, steps, hidden in shapes.fo_pool:
        for dt in shapes.fo_pool_dtypes:
            providers = (["triton"] if env.gpu else []) + ["torch"]
            if env.gpu and shapes.compile_all:
                providers.append("compile")
            groups.append(fo_pool_group(env, batch, steps, hidden, dt, providers))
    return groups


def sg_loss_groups(env: Env, shapes: Shapes) -> list[Group]:
    from .kernels import sg_mse_loss, sg_mse_loss_reference

    groups = []
    for label, batch, dim in shapes.state:

        def make(impl, batch=batch, dim=dim):
            def build():
                pred = torch.randn(batch, dim, device=env.device).requires_grad_()
                target = torch.randn(batch, dim, device=env.device)
                fn = impl()
                return (lambda: (fn(pred, target),)), [pred]

            return build

        def ours(p, t):
            return sg_mse_loss(p, t, backend="triton")

        cases = kernel_cases(make, ours, sg_mse_loss_reference, _gpu_providers(env))
        n = batch * dim
        groups.append(
            Group(
                "sg_loss",
                f"{label} B={batch} D={dim} (N={n})",
                "float32",
                cases,
                bytes=sg_loss_bytes(n),
            )
        )
    return groups


def elementwise_groups(env: Env, shapes: Shapes) -> list[Group]:
    from .kernels import elementwise_qrnn_synth, elementwise_qrnn_synth_reference

    units = shapes.units
    groups = []
    for label, batch, dim in shapes.state:
        n = batch * dim

        def make(impl, n=n):
            def build():
                dev = env.device
                x = torch.randn(n, device=dev)
                c_prev = torch.randn(n, units, device=dev) * 0.5
                w = torch.randn(3, units, device=dev).requires_grad_()
                b = (torch.randn(3, units, device=dev) * 0.1).requires_grad_()
                v = (torch.randn(units, device=dev) * 0.1).requires_grad_()
                b_out = torch.zeros(1, device=dev).requires_grad_()
                mask = torch.empty(n, units, device=dev).bernoulli_(0.9) / 0.9
                fn = impl()
                # as in training: the state and the carry receive no gradient, only y is used
                return (lambda: fn(x, c_prev, w, b, v, b_out, mask)[:1]), [w, b, v, b_out]

            return build

        def ours(*a):
            return elementwise_qrnn_synth(*a, backend="triton")

        cases = kernel_cases(make, ours, elementwise_qrnn_synth_reference, _gpu_providers(env))
        groups.append(
            Group(
                "elementwise",
                f"{label} N={n} U={units}",
                "float32",
                cases,
                bytes=elementwise_bytes(n, units),
            )
        )
    return groups


def _lstm_make(
    env: Env, kind: str, batch: int, steps: int, hidden: int, layers: int, mode: str
) -> Callable[[], tuple[Forward, list[torch.Tensor]]]:
    """kind: "ours" (cells.LSTM, backend triton), "reference" (cells.LSTM, backend torch),
    "nn" (torch.nn.LSTM: cuDNN on a GPU). mode: "bf16-autocast", "float32", "float16"."""
    from .cells import LSTM

    def build():
        dev = env.device
        store = torch.float16 if mode == "float16" else torch.float32
        autocast = mode == "bf16-autocast"
        x = torch.randn(steps, batch, hidden, device=dev, dtype=store).requires_grad_()
        if kind == "nn":
            net = torch.nn.LSTM(hidden, hidden, num_layers=layers).to(dev, store)
            zeros = torch.zeros(layers, batch, hidden, device=dev, dtype=store)

            def fwd():
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                    out, _ = net(x, (zeros, zeros))
                return (out,)

            return fwd, [x, *net.parameters()]
        backend = "triton" if kind == "ours" else "torch"
        mods = [LSTM(hidden, hidden, backend=backend).to(dev, store) for _ in range(layers)]
        zeros = torch.zeros(batch, hidden, device=dev, dtype=store)

        def fwd():
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast):
                h = x
                for m in mods:
                    h, _ = m(h, (zeros, zeros))
            return (h,)

        return fwd, [x, *(p for m in mods for p in m.parameters())]

    return build


def lstm_groups(env: Env, shapes: Shapes) -> list[Group]:
    nn_name = "cudnn" if env.device.type == "cuda" else "nn.LSTM"
    kinds = {"triton": "ours", "torch": "reference", nn_name: "nn"}
    groups = []

    def add(label, batch, steps, hidden, layers, mode, providers):
        cases = []
        for p in providers:
            note = {
                "torch": "reference loop, eager",
                nn_name: f"torch.nn.LSTM num_layers={layers}",
            }.get(p, "")
            make = _lstm_make(env, kinds[p], batch, steps, hidden, layers, mode)
            cases.append(Case(p, make, note=note))
        groups.append(
            Group("lstm", label, mode, cases, flops=lstm_flops(steps, batch, hidden, layers))
        )

    ours = ["triton"] if env.gpu else []
    for mode in shapes.lstm_modes:
        for b, t, h in shapes.lstm_layer:
            add(f"B={b} T={t} H={h} 1 layer", b, t, h, 1, mode, [*ours, nn_name, "torch"])
        for b, t, h in shapes.lstm_stack:
            providers = [*ours, nn_name] + (["torch"] if shapes.stack_reference else [])
            add(f"B={b} T={t} H={h} 3 layers", b, t, h, 3, mode, providers)
    for b, t, h in shapes.lstm_best:
        add(f"B={b} T={t} H={h} 1 layer (cuDNN best case)", b, t, h, 1, "float16", [*ours, nn_name])
    return groups


# ----------------------------------------------------------------------------- end to end


def random_corpus(vocab_size: int, train_tokens: int, seed: int = 0):
    """A closed-vocabulary corpus of uniformly random token ids (no text needed)."""
    from .data import Corpus, Vocabulary

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

        from . import recipe as recipes
        from .train import Trainer

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
        r = self.recipe
        per_segment = int(r.bptt.length * 1.3) + 30
        corpus = random_corpus(vocab_size, r.data.batch_size * (segments * per_segment + 8))
        self.console = Console(file=io.StringIO())
        self.trainer = Trainer(r, run_dir / "run", console=self.console, corpus=corpus)
        plan = self.trainer.plan(1)
        if r.synthetic.enabled and mode == "synthetic":
            plan = dataclasses.replace(plan, mode="synthetic")
        self.plan = plan
        self.env = env
        self.vocab_size = vocab_size

    def run(self, segments: int) -> tuple[int, int, float, float]:
        """Train ``segments`` segments; (tokens, segments, seconds, mean loss)."""
        t = self.trainer
        t.recipe = dataclasses.replace(
            self.recipe, run=dataclasses.replace(self.recipe.run, max_batches=segments)
        )
        self.env.sync()
        t0 = time.perf_counter()
        sums = t.train_epoch(self.plan)
        self.env.sync()
        seconds = time.perf_counter() - t0
        return sums.tokens, sums.segment, seconds, sums.loss / max(sums.tokens, 1)

    def close(self) -> None:
        del self.trainer
        _free(self.env)


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
    warm, measure = shapes.e2e_warm, shapes.e2e_measure
    backends = ["triton", "torch"] if env.gpu else ["torch"]
    rows: list[Row] = []
    for label, path, dtypes in shapes.e2e_models:
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
                    row.note = f"n/a: {_one_line(e)}"
                    _free(env)
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
    return rows


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


# ----------------------------------------------------------------------------- output


def rows_table(title: str, rows: Sequence[Row]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col, just in (
        ("shape", "left"),
        ("dtype", "left"),
        ("dir", "left"),
        ("provider", "left"),
        ("ms", "right"),
        ("p20-p80", "right"),
        ("metric", "right"),
        ("% copy", "right"),
        ("ratio", "right"),
        ("note", "left"),
    ):
        table.add_column(col, justify=just)
    last = None
    for r in rows:
        key = (r.shape, r.dtype, r.direction)
        if last is not None and key != last:
            table.add_section()
        last = key
        spread = (
            f"{_fmt_ms(r.p20)}-{_fmt_ms(r.p80)}" if r.p20 is not None and r.p80 is not None else ""
        )
        metric = "" if r.metric is None else f"{_fmt(r.metric)} {r.unit}"
        table.add_row(
            r.shape,
            r.dtype,
            r.direction,
            r.provider,
            "-" if r.ms is None else _fmt_ms(r.ms),
            spread,
            metric,
            "" if r.pct is None else f"{r.pct:.0f}%",
            "" if r.ratio is None else f"{r.ratio:.2f}x",
            r.note,
            style="bold" if r.provider == "triton" else None,
        )
    return table


def _fmt_ms(ms: float) -> str:
    return f"{ms:.1f}" if ms >= 100 else f"{ms:.3f}" if ms >= 1 else f"{ms:.4f}"


def _fmt(x: float) -> str:
    """Three significant digits for small numbers, thousands separators for large ones."""
    if x >= 1e4:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}"


def _check_header(path: Path) -> None:
    """Refuse a CSV whose header is not ours: rows are appended, never rewritten."""
    with path.open(newline="") as fh:
        header = next(csv.reader(fh), [])
    if tuple(header) != CSV_COLUMNS:
        raise UserError(
            f"{path}: its header is not altgrad-bench's columns "
            f"({','.join(CSV_COLUMNS)}); pass another --csv"
        )


def check_csv(path: Path, *, create_parent: bool, console) -> Path | None:
    """Fail before measuring if ``path`` holds another header; the default path is dropped
    (with a note) when its folder does not exist here."""
    if path.exists() and path.stat().st_size > 0:
        _check_header(path)
    elif not path.parent.exists() and not create_parent:
        console.print(
            f"note: {path.parent}/ not found here, so no CSV is written (run from "
            "the repository root or pass --csv PATH)",
            markup=False,
        )
        return None
    return path


def append_csv(path: Path, rows: Sequence[Row], env: Env, *, create_parent: bool) -> int:
    """Append ``rows``; write the header first into a new or empty file. A file whose header
    differs is refused (UserError), never rewritten."""
    path = Path(path)
    if path.exists() and path.stat().st_size > 0:
        _check_header(path)
        new = False
    else:
        if not path.parent.exists():
            if not create_parent:
                raise UserError(
                    f"{path.parent}/ does not exist (run from the repository root "
                    "or pass --csv PATH)"
                )
            path.parent.mkdir(parents=True)
        new = True
    with path.open("a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow(r.csv(env))
    return len(rows)


def make_console():
    from rich.console import Console

    width = None if sys.stdout.isatty() else 200
    return Console(highlight=False, soft_wrap=False, width=width)


@dataclass
class Report:
    """Where rows go: printed per family, appended to the CSV if one is active."""

    env: Env
    console: Any
    csv_path: Path | None
    create_parent: bool
    written: int = 0
    rows: list[Row] = field(default_factory=list)

    def add(self, title: str, rows: Sequence[Row]) -> None:
        if not rows:
            return
        if not self.env.gpu:
            title += "  [CPU reference timings, not GPU figures]"
        self.console.print(rows_table(title, rows))
        self.rows += rows
        if self.csv_path is not None:
            note = "" if self.env.gpu else "cpu-reference"
            if note:
                rows = [
                    dataclasses.replace(r, note=f"{note}; {r.note}" if r.note else note)
                    for r in rows
                ]
            self.written += append_csv(
                self.csv_path, rows, self.env, create_parent=self.create_parent
            )


# ----------------------------------------------------------------------------- main entry


def run(args, console=None) -> int:
    """The body of ``altgrad-bench`` (parsed arguments in ``args``)."""
    console = console or make_console()
    env = Env.detect(force_cpu=args.cpu)
    families = list(args.families)
    # CSV: on a GPU docs/benchmarks.csv unless --no-csv; on a CPU only an explicit --csv.
    csv_path: Path | None
    if args.no_csv:
        csv_path = None
    elif args.csv is not None:
        csv_path = Path(args.csv)
    else:
        csv_path = DEFAULT_CSV if env.gpu else None
    if csv_path is not None:
        csv_path = check_csv(csv_path, create_parent=args.csv is not None, console=console)
    report = Report(env, console, csv_path, create_parent=args.csv is not None)

    if not env.gpu:
        console.print(CPU_BANNER, markup=False, style="bold")
    warmup = args.warmup if args.warmup is not None else (10.0 if args.quick else 25.0)
    rep = args.rep if args.rep is not None else (50.0 if args.quick else 100.0)
    if not env.gpu:
        rep = min(rep, 30.0)
    timer = Timer(env, warmup, rep)
    head = (
        f"altgrad-bench on {env.name}"
        + (f" (sm {env.capability})" if env.gpu else "")
        + f", torch {env.torch}, triton {env.triton}, {env.date}"
    )
    if env.gpu:
        cudnn = torch.backends.cudnn.version()
        head += (
            f"; cuDNN {cudnn}; TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
            f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}; do_bench warmup {warmup:g} ms "
            f"rep {rep:g} ms"
        )
    console.print(head, markup=False)

    # the Trainer of the end-to-end rows applies stored winners from $ALTGRAD_TUNE_DIR
    from .tune import CACHE_ENV

    if args.no_stored_winners:  # a folder that does not exist: nothing to apply
        os.environ[CACHE_ENV] = str(Path(tempfile.gettempdir()) / f"altgrad-no-tune-{os.getpid()}")
    elif args.cache_dir:
        os.environ[CACHE_ENV] = str(args.cache_dir)
    if env.gpu and not args.no_stored_winners:
        from .tune import apply_stored_winners, winners_path

        n = apply_stored_winners(env.device, args.cache_dir)
        console.print(
            f"stored tuning winners applied: {n} (from {winners_path(args.cache_dir)})",
            markup=False,
        )

    if args.train_slice is not None:
        row = train_slice(env, args, console)
        report.add("end-to-end training slice", [row])
        return _finish(report, None, console)

    budget = Budget(
        args.budget
        if args.budget is not None
        else (QUICK_BUDGET_S if args.quick and env.gpu else None),
        families,
    )
    shapes = plan_shapes(env, args.quick, args)
    if env.device.type == "cuda" and any(f in families for f in BANDWIDTH_FAMILIES):
        env.copy_gbps = copy_bandwidth(env, timer)
        report.add(
            "device-to-device copy (the bandwidth ceiling)",
            [
                Row(
                    "copy",
                    "512 MiB",
                    "float32",
                    "copy",
                    "torch.copy_",
                    ms=2 * 512 * 2**20 / (env.copy_gbps * 1e9) * 1e3,
                    metric=env.copy_gbps,
                    unit="GB/s",
                    pct=100.0,
                    note="read + write bytes / time",
                )
            ],
        )
    run_families(env, args, shapes, families, timer, budget, report)
    return _finish(report, budget, console)


TITLES = {
    "fo_pool": "QRNN fo-pooling",
    "sg_loss": "synthetic-gradient loss",
    "elementwise": "element-wise QRNN synthesizer (one step)",
    "lstm": "LSTM (input projection + recurrence)",
    "e2e": "end to end: training slice tokens/s",
}
BANDWIDTH_FAMILIES = ("fo_pool", "sg_loss", "elementwise")


def run_families(
    env: Env,
    args,
    shapes: Shapes,
    families: Sequence[str],
    timer: Timer,
    budget: Budget,
    report: Report,
) -> None:
    builders = {
        "fo_pool": fo_pool_groups,
        "sg_loss": sg_loss_groups,
        "elementwise": elementwise_groups,
        "lstm": lstm_groups,
    }
    for family in FAMILIES:
        if family not in families:
            continue
        budget.begin(family)
        if family == "e2e":
            rows = e2e_rows(env, args, shapes, budget)
        else:
            rows = []
            for g in builders[family](env, shapes):
                if not budget.ok():
                    budget.skip(f"{family} {g.shape} {g.dtype}")
                    continue
                rows += measure_group(g, timer, env, budget)
        report.add(TITLES[family], rows)
    if "fo_pool" in families and env.gpu and not shapes.compile_all and shapes.fo_pool:
        # torch.compile of the 200-step reference loop can take minutes to compile: under
        # --quick it runs once, last, after every other row has been written
        batch, steps, hidden = shapes.fo_pool[0]
        dt = shapes.fo_pool_dtypes[0]
        if budget.time_left() > 0:
            g = fo_pool_group(env, batch, steps, hidden, dt, ["triton", "compile"])
            report.add(
                TITLES["fo_pool"] + ": torch.compile (run last)",
                measure_group(g, timer, env, budget, force=True),
            )
        else:
            budget.skip(f"fo_pool torch.compile B={batch} T={steps} H={hidden} {dt}")


def _finish(report: Report, budget: Budget | None, console) -> int:
    env = report.env
    if budget is not None and budget.skipped:
        console.print(
            f"skipped (time budget {budget.total:g} s spent): " + "; ".join(budget.skipped),
            markup=False,
        )
    if report.csv_path is not None:
        console.print(f"{report.written} rows appended to {report.csv_path}", markup=False)
    elif not env.gpu:
        console.print(
            f"CPU rows not written to {DEFAULT_CSV} (pass --csv PATH to keep them)", markup=False
        )
    if not env.gpu:
        console.print(CPU_BANNER, markup=False, style="bold")
    failed = [
        r for r in report.rows if r.provider == "triton" and r.ms is None and r.metric is None
    ]
    if failed:
        console.print(f"{len(failed)} of our rows failed (see 'n/a' notes)", markup=False)
        return 1
    return 0
