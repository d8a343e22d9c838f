"""Measuring: the environment, the timer, the time budget, result rows, and the timing of
one provider at one shape (a case) or of every provider there (a group), with its
metrics.

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
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import gc
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import one_line

DIRECTIONS = ("fwd", "bwd", "fwd+bwd")

QUICK_BUDGET_S = 75.0
"""Default ``--budget`` under ``--quick``: no new measurement starts after it (per-family
shares below; time a family leaves unused goes to the next)."""
BUDGET_SHARES = {"fo_pool": 0.2, "sg_loss": 0.08, "elementwise": 0.08, "lstm": 0.34, "e2e": 0.3}


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

        from ..kernels import interpreting

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
    copy_baseline: bool = False  # on a GPU, also time a device copy of the same bytes


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
        return [f"n/a: {one_line(e, 120)}"] * len(directions)
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
            out.append(f"n/a: {one_line(e, 120)}")
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
        free_memory(env)
    if group.copy_baseline and group.bytes and env.gpu:
        for d in group.directions:
            if group.bytes.get(d):
                ms, p20, p80 = copy_same_bytes(env, timer, group.bytes[d])
                note = "device copy of the same bytes; ratio = the share of its speed ours reaches"
                rows.append(
                    Row(group.family, group.shape, group.dtype, d, "copy", ms, p20, p80, note=note)
                )
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
    add_metrics(rows, group, env)
    return rows


def add_metrics(rows: list[Row], group: Group, env: Env) -> None:
    """Fill each timed row's throughput (GB/s with its % of the copy bandwidth, or TFLOP/s)
    and its time ratio to ours (triton) in the same direction."""
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


def free_memory(env: Env) -> None:
    """Collect garbage and return cached GPU memory between measurements."""
    gc.collect()
    if env.device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- bandwidth ceiling


def copy_same_bytes(env: Env, timer: Timer, nbytes: float) -> Timing:
    """Timing of one device-to-device copy that reads and writes ``nbytes`` in all (half
    each way): the practical floor for a memory-bound kernel moving that many bytes, launch
    latency and tail included, as it is for the kernel."""
    n = max(1, int(nbytes) // 8)  # fp32 elements per buffer: 4 B read + 4 B written each
    src = torch.empty(n, dtype=torch.float32, device=env.device).uniform_()
    dst = torch.empty_like(src)
    return timer(lambda: dst.copy_(src))


def copy_bandwidth(env: Env, timer: Timer) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written), 512 MiB buffers (or
    what fits in a quarter of the free memory)."""
    free, _ = torch.cuda.mem_get_info(env.device)
    nbytes = int(min(512 * 2**20, free // 4)) // 16 * 16
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=env.device).uniform_()
    dst = torch.empty_like(src)
    med, _, _ = timer(lambda: dst.copy_(src))
    return 2 * nbytes / (med * 1e-3) / 1e9
