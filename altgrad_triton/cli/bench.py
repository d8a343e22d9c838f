"""altgrad-bench: time each kernel family against its baselines, forward, backward and
both, and training tokens/s end to end; print tables and append rows to a CSV.

    altgrad-bench                                # everything, appends to docs/benchmarks.csv
    altgrad-bench --quick --csv out/bench.csv    # main shapes, sized for ~2 minutes
    altgrad-bench --families fo_pool sg_loss --no-csv
    altgrad-bench --train-slice 60               # train the WT2 QRNN ~60 s, print tokens/s
    altgrad-bench --profile                      # where one training segment's time goes
    altgrad-bench --slices runs/qrnn runs/lstm   # tokens/s of runs altgrad-train made

Without a CUDA GPU it times the PyTorch reference paths on tiny shapes (CPU reference
timings, not GPU figures) and writes a CSV only when --csv is given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config.names import BENCH_FAMILIES
from ..errors import UserError
from .common import command_parser, number_from, run_main


def _families(values: list[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        for name in filter(None, (x.strip() for x in v.split(","))):
            if name == "all":
                out += BENCH_FAMILIES
            elif name not in BENCH_FAMILIES:
                raise UserError(
                    f"--families: unknown {name!r}; choose from {', '.join(BENCH_FAMILIES)} or all"
                )
            else:
                out.append(name)
    return list(dict.fromkeys(out))


def parser() -> argparse.ArgumentParser:
    p = command_parser(
        "altgrad-bench",
        __doc__,
        "ratio = this row's time / ours (triton) at the same shape, dtype and direction "
        "(> 1: ours is faster); for end-to-end rows ours' tokens/s / this row's. "
        "% copy = achieved GB/s over the device-to-device copy bandwidth measured in "
        "the same run. Details: docs/benchmarks.md.",
    )
    _what_options(p)
    _timing_options(p)
    _end_to_end_options(p)
    return p


def _what_options(p: argparse.ArgumentParser) -> None:
    """What to measure and where the rows go."""
    p.add_argument(
        "--quick",
        action="store_true",
        help="fewer shapes, short do_bench (warmup 10 ms, rep 50 ms), torch.compile "
        "of fo_pool at one shape, run last; a 75 s budget on a GPU",
    )
    p.add_argument(
        "--families",
        nargs="+",
        default=["all"],
        metavar="FAMILY",
        help=f"which of {', '.join(BENCH_FAMILIES)} (default all)",
    )
    p.add_argument(
        "--csv",
        default=None,
        metavar="PATH",
        help="append rows here (default on a GPU: docs/benchmarks.csv; on a CPU: "
        "none unless given)",
    )
    p.add_argument("--no-csv", action="store_true", help="append no rows anywhere")
    p.add_argument(
        "--cpu", action="store_true", help="CPU reference mode even when a GPU is present"
    )


def _timing_options(p: argparse.ArgumentParser) -> None:
    """Tuned configs, the time budget and do_bench's times."""
    p.add_argument(
        "--cache-dir",
        default=None,
        help="altgrad-tune winners to apply first (default $ALTGRAD_TUNE_DIR or "
        "~/.cache/altgrad-triton/tune)",
    )
    p.add_argument(
        "--no-stored-winners",
        action="store_true",
        help="do not apply stored altgrad-tune winners (Triton autotunes instead)",
    )
    p.add_argument(
        "--budget",
        type=number_from(0),
        default=None,
        metavar="SECONDS",
        help="start no new measurement after this many seconds (default: 75 "
        "with --quick on a GPU, else none); skipped rows are listed",
    )
    p.add_argument("--warmup", type=number_from(0), default=None, help="do_bench warmup, ms")
    p.add_argument(
        "--rep",
        type=number_from(0, inclusive=False),
        default=None,
        help="do_bench repetition time, ms",
    )


def _end_to_end_options(p: argparse.ArgumentParser) -> None:
    """The recipes and modes of the end-to-end rows and of --train-slice."""
    recipes_dir = Path(__file__).resolve().parents[2] / "recipes"
    p.add_argument(
        "--qrnn-recipe",
        default=str(recipes_dir / "wt2.toml"),
        help="the QRNN recipe for shapes and end-to-end rows (recipes/wt2.toml)",
    )
    p.add_argument(
        "--lstm-recipe",
        default=str(recipes_dir / "wt2-lstm.toml"),
        help="the LSTM recipe for shapes and end-to-end rows (recipes/wt2-lstm.toml)",
    )
    p.add_argument(
        "--e2e-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override for the end-to-end runs (repeatable)",
    )
    p.add_argument(
        "--e2e-mode",
        choices=("synthetic", "real"),
        default="synthetic",
        help="gradient mode of the timed training segments (default synthetic)",
    )
    p.add_argument(
        "--train-slice",
        type=float,
        default=None,
        metavar="SECONDS",
        help="only train the QRNN recipe for about this long and report tokens/s",
    )
    p.add_argument(
        "--slices",
        nargs="+",
        metavar="RUN_DIR",
        default=None,
        help="only tabulate runs that altgrad-train made (capped epochs): last epoch's "
        "tokens/s, peak GPU memory, whether the training loss fell; ratio against the "
        "triton run of the same model and dtype",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="only profile one training segment of the QRNN and the LSTM recipe "
        "(torch.profiler: top operators and kernels by self time)",
    )
    for flag, choices, help_text in (
        ("--slice-backend", ("triton", "torch", "cudnn"), "backend (cudnn: the LSTM recipe only)"),
        ("--slice-dtype", ("float32", "bfloat16"), "compute dtype"),
    ):
        p.add_argument(
            flag, choices=choices, default=choices[0], help=f"{help_text} of --train-slice "
            "and --profile (default %(default)s)"
        )  # fmt: skip


def body(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.families = _families(args.families)
    if args.csv is not None and args.no_csv:
        raise UserError("--csv and --no-csv contradict each other")
    alone = [o for o, v in (("--profile", args.profile), ("--train-slice", args.train_slice),
                            ("--slices", args.slices)) if v]  # fmt: skip
    if len(alone) > 1:
        raise UserError(f"{' and '.join(alone)} are separate runs: give one of them")
    if args.train_slice is not None and args.train_slice <= 0:
        raise UserError(f"--train-slice must be > 0 seconds, got {args.train_slice:g}")
    if args.csv is not None:
        from ..run.folder import check_output

        check_output(args.csv, "--csv", folder=False)
    from .. import bench

    return bench.run(args)


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
