"""The body of ``altgrad-bench``: the environment, the CSV, the timer and the budget, then
every family asked for, one table each, and the closing lines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..config.names import BENCH_FAMILIES
from ..progress import make_console
from .e2e import e2e_rows, train_slice
from .families import (
    Shapes,
    authors_scan_groups,
    elementwise_groups,
    fo_pool_group,
    fo_pool_groups,
    linear_ce_groups,
    lstm_groups,
    plan_shapes,
    sg_loss_groups,
)
from .measure import QUICK_BUDGET_S, Budget, Env, Row, Timer, copy_bandwidth, measure_group
from .output import Report, check_csv
from .profile import profile_segment, profile_title
from .slices import slice_rows

DEFAULT_CSV = Path("docs/benchmarks.csv")
CPU_BANNER = (
    "CPU REFERENCE TIMINGS, NOT GPU FIGURES: no usable CUDA GPU, so only the "
    "PyTorch reference paths run, on tiny shapes"
)


def run(args, console=None) -> int:
    """The body of ``altgrad-bench`` (parsed arguments in ``args``)."""
    console = console or make_console(wide_tables=True)
    env = Env.detect(force_cpu=args.cpu)
    report = Report(env, console, _csv_path(args, env, console), args.csv is not None)
    if not env.gpu:
        console.print(CPU_BANNER, markup=False, style="bold")
    timer = _timer(args, env, console)
    if env.gpu and not args.no_stored_winners:
        from ..run.winners import apply_stored_winners, winners_path

        n = apply_stored_winners(env.device, args.cache_dir)
        console.print(
            f"stored tuning winners applied: {n} (from {winners_path(args.cache_dir)})",
            markup=False,
        )
    if args.train_slice is not None:
        report.add("end-to-end training slice", [train_slice(env, args, console)])
        return _finish(report, None, console)
    if args.profile:
        return profile_recipes(env, args, console)
    if args.slices:
        report.add("altgrad-train runs (the real command, capped epochs)", slice_rows(args.slices))
        return _finish(report, None, console)
    budget = Budget(
        args.budget
        if args.budget is not None
        else (QUICK_BUDGET_S if args.quick and env.gpu else None),
        args.families,
    )
    shapes = plan_shapes(env, args.quick, args)
    if env.device.type == "cuda" and any(f in args.families for f in BANDWIDTH_FAMILIES):
        env.copy_gbps = copy_bandwidth(env, timer)
        report.add("device-to-device copy (the bandwidth ceiling)", [_copy_row(env)])
    run_families(env, args, shapes, args.families, timer, budget, report)
    return _finish(report, budget, console)


def profile_recipes(env: Env, args, console) -> int:
    """``--profile``: the profiler table of one segment of each recipe (the QRNN recipe is
    skipped with ``--slice-backend cudnn``, which runs LSTM layers only)."""
    backend = args.slice_backend if env.gpu else "torch"  # CPU: the reference path only
    dtype = args.slice_dtype if env.gpu else "float32"
    recipes = [args.lstm_recipe] if backend == "cudnn" else [args.qrnn_recipe, args.lstm_recipe]
    for path in recipes:
        console.print(profile_title(path, backend, dtype, args.e2e_mode), markup=False)
        table = profile_segment(env, path, args.e2e_override, backend, dtype, args.e2e_mode)
        console.print(table, markup=False, highlight=False, soft_wrap=True)
    return 0


def _csv_path(args, env: Env, console) -> Path | None:
    """On a GPU docs/benchmarks.csv unless --no-csv; on a CPU only an explicit --csv."""
    if args.no_csv:
        return None
    if args.csv is not None:
        path = Path(args.csv)
    elif env.gpu:
        path = DEFAULT_CSV
    else:
        return None
    return check_csv(path, create_parent=args.csv is not None, console=console)


def _timer(args, env: Env, console) -> Timer:
    """do_bench's warmup and repetition times (shorter with --quick, capped on a CPU); the
    header line that says them and the versions."""
    warmup = args.warmup if args.warmup is not None else (10.0 if args.quick else 25.0)
    rep = args.rep if args.rep is not None else (50.0 if args.quick else 100.0)
    if not env.gpu:
        rep = min(rep, 30.0)
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
    return Timer(env, warmup, rep)


def _copy_row(env: Env) -> Row:
    return Row(
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


TITLES = {
    "fo_pool": "QRNN fo-pooling",
    "sg_loss": "synthetic-gradient loss",
    "elementwise": "element-wise QRNN synthesizer (one step)",
    "lstm": "LSTM (input projection + recurrence)",
    "linear_ce": "LM head: linear + cross-entropy (loss and every gradient)",
    "authors_scan": "authors' synthesizer: its scan over the state, and the whole synthesizer",
    "e2e": "end to end: training slice tokens/s",
}
BANDWIDTH_FAMILIES = ("fo_pool", "sg_loss", "elementwise", "authors_scan")


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
        "linear_ce": linear_ce_groups,
        "authors_scan": authors_scan_groups,
    }
    for family in BENCH_FAMILIES:
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
