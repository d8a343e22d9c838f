"""Benchmarks: each kernel family against the baselines a user would pick instead.

For every family, at the paper's shapes, forward, backward and both, side by side in one
process on one GPU:

* ``fo_pool`` (QRNN fo-pooling, B=20 T=200 H=1550 and 400, fp32 and bf16): ours (Triton),
  the PyTorch reference eager and under ``torch.compile``, a device copy of the same bytes
  per direction, and the bandwidth bound;
* ``sg_loss`` and ``elementwise`` (the synthetic-gradient loss with its telemetry and the
  element-wise QRNN synthesizer, fp32, on the joined state of the WT2 QRNN / LSTM models):
  the same providers (the copy for the SG loss; its rows also count GPU ops per call);
* ``lstm``: ours (``cells.LSTM`` on the Triton segment kernels) vs cuDNN ``nn.LSTM`` as the
  project would otherwise run it (bf16 autocast; one layer per row, and the 3-layer stack),
  cuDNN's best case (single layer, fp16, H=1024: where its persistent algorithm can apply)
  and the PyTorch reference;
* ``e2e``: tokens/s of a slice of training of the WT2 QRNN and LSTM recipes on random tokens
  (WT2's vocabulary size), backend triton vs torch, fp32 and bf16.

Without a usable GPU the command times the PyTorch reference paths on tiny shapes only and
says so: those are CPU reference timings, not GPU figures.

The submodules split the work:

* :mod:`.measure` -- :class:`Env`, :class:`Timer`, :class:`Budget`, :class:`Row`, and
  :func:`measure_case` / :func:`measure_group` with the metrics and ratios;
* :mod:`.families` -- traffic and flop counts, :class:`Shapes` / :func:`plan_shapes`, and
  the per-family groups of providers;
* :mod:`.e2e` -- the end-to-end training slices (:class:`TrainSlice`);
* :mod:`.output` -- tables, the CSV and :class:`Report`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from .e2e import CPU_TINY_OVERRIDES, LSTM_RECIPE, QRNN_RECIPE, e2e_rows, train_slice
from .families import (
    Shapes,
    elementwise_bytes,
    elementwise_groups,
    fo_pool_bytes,
    fo_pool_group,
    fo_pool_groups,
    lstm_flops,
    lstm_groups,
    plan_shapes,
    sg_loss_bytes,
    sg_loss_groups,
)
from .measure import (
    QUICK_BUDGET_S,
    Budget,
    Env,
    Group,
    Row,
    Timer,
    _metrics,
    copy_bandwidth,
    measure_group,
)
from .output import CSV_COLUMNS, Report, append_csv, check_csv, make_console

__all__ = [
    "CPU_TINY_OVERRIDES",
    "CSV_COLUMNS",
    "FAMILIES",
    "LSTM_RECIPE",
    "QRNN_RECIPE",
    "Budget",
    "Env",
    "Group",
    "Report",
    "Row",
    "Shapes",
    "Timer",
    "_metrics",
    "append_csv",
    "copy_bandwidth",
    "elementwise_bytes",
    "fo_pool_bytes",
    "lstm_flops",
    "make_console",
    "run",
    "run_families",
    "sg_loss_bytes",
]

FAMILIES = ("fo_pool", "sg_loss", "elementwise", "lstm", "e2e")
DEFAULT_CSV = Path("docs/benchmarks.csv")
CPU_BANNER = (
    "CPU REFERENCE TIMINGS, NOT GPU FIGURES: no usable CUDA GPU, so only the "
    "PyTorch reference paths run, on tiny shapes"
)


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
    from ..tune import CACHE_ENV

    if args.no_stored_winners:  # a folder that does not exist: nothing to apply
        os.environ[CACHE_ENV] = str(Path(tempfile.gettempdir()) / f"altgrad-no-tune-{os.getpid()}")
    elif args.cache_dir:
        os.environ[CACHE_ENV] = str(args.cache_dir)
    if env.gpu and not args.no_stored_winners:
        from ..tune import apply_stored_winners, winners_path

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
