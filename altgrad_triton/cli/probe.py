"""altgrad-probe: what truncation discards at a run's boundaries, what its synthesizer recovers.

    altgrad-probe runs/ev2-alt-rb5-toolkit                       # 4 boundaries, M = 1, 2, 4, 8
    altgrad-probe runs/ev2-bptt --boundaries 5,10 --max-horizon 16 --float64
    altgrad-probe runs/tiny --split valid --out probe.json
    altgrad-probe runs/ev2-bptt --boundaries 5,15 --fit linear,authors,linear+3

At each boundary k (the state s_k after k segments of bptt.length rows, from the split's
first row and a zero state): the true future gradient g_M = d(L_k + ... + L_{k+M-1})/ds_k
for M = 1, 2, 4, ... up to --max-horizon; the parameter gradient g_M brings into segment
k-1 through s_k (what truncation discards) against that segment's own gradient, per layer;
and the run's synthesizer's g_hat(s_k) against g_M. The model runs in eval mode (no
dropout, no synthesizer noise). A table on stdout; every number in the JSON file (--out,
default RUN_DIR/probe-<split>.json). --fit also fits fresh synthesizers of the kinds named
on the run's train trajectory (the model frozen) and scores them beside the run's own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import command_parser, run_main


def parser() -> argparse.ArgumentParser:
    p = command_parser("altgrad-probe", __doc__)
    p.add_argument("run_dir", help="a run directory written by altgrad-train")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--split", choices=["train", "valid", "test"], default="train")
    p.add_argument(
        "--boundaries",
        type=_boundaries,
        help="comma-separated segment indices k >= 1 (default: 4 evenly spaced)",
    )
    p.add_argument(
        "--max-horizon",
        type=_positive,
        default=8,
        metavar="M",
        help="longest horizon in segments; M = 1, 2, 4, ... up to it (default 8)",
    )
    p.add_argument("--float64", action="store_true", help="double precision (CPU only)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--out", metavar="FILE", help="JSON file (default RUN_DIR/probe-<split>.json)")
    p.add_argument(
        "--fit",
        type=_fit_kinds,
        metavar="KINDS",
        help="also fit these synthesizer kinds on the run's train trajectory (model frozen) "
        "and score them: comma-separated toolkit, authors, mlp, linear, each optionally +N "
        "(conditioned on the next N tokens), e.g. linear,authors,linear+3",
    )
    p.add_argument(
        "--fit-segments",
        type=_positive,
        metavar="N",
        help="segments of bptt.length rows to fit on from the train split's first row "
        "(default: one pass over the split)",
    )
    p.add_argument(
        "--fit-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [synthetic] key for every fitted kind, over its defaults (repeatable), "
        "e.g. target_scale=0",
    )
    return p


def _fit_kinds(text: str) -> list[Any]:
    from ..probe.fit import parse_fit_kinds

    try:
        return parse_fit_kinds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _boundaries(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated integers >= 1 (e.g. 5,10,20), got {text!r}"
        )
    return values


def load(run_dir: str, tag: str, device: str) -> tuple[Any, Any]:
    """The run (model in eval mode, recipe, vocabulary) and its synthesizer's weights (None
    without one): the one place this command reads a checkpoint."""
    from .eval import load as read_run  # load_run, its errors in a command's words

    run = read_run(run_dir, tag, device=device)
    return run, run.synthesizer


def body(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..files import write_text_atomic
    from ..probe.on_run import probe_run
    from ..progress import make_console
    from ..run.folder import RunFolder, check_output

    if (args.fit_segments or args.fit_set) and not args.fit:
        flag = "--fit-segments" if args.fit_segments else "--fit-set"
        raise UserError(f"{flag}: only with --fit KINDS")
    device = "cpu" if args.float64 and args.device == "auto" else args.device
    run, synth = load(args.run_dir, args.checkpoint, device)
    out = Path(args.out) if args.out else RunFolder(args.run_dir).probe(args.split)
    check_output(out, "--out", folder=False)
    console = make_console(wide_tables=True)
    report = probe_run(
        run,
        synth,
        split=args.split,
        boundaries=args.boundaries,
        max_horizon=args.max_horizon,
        float64=args.float64,
        fit=args.fit,
        fit_segments=args.fit_segments,
        fit_settings=args.fit_set,
        console=console,
    )
    write_text_atomic(out, json.dumps(report, indent=2))
    for table in tables(report):
        console.print(table)
    console.print(f"written: {out}", markup=False)
    return 0


def tables(report: dict[str, Any]) -> list[Any]:
    """Means over the boundaries per horizon M: the state gradient, the discarded share and
    each synthesizer's scores; then the discarded share per layer."""
    from rich.table import Table

    mean = report["mean"]
    synths = [s for s in report["synthesizers"] if not s.startswith("fit:")]
    made = report.get("made")  # where in training; the copy task's report has no checkpoint
    where = report["checkpoint"] + (f", {made}" if made else "")
    title = (
        f"altgrad-probe: {report['run']} ({where}), "
        f"{report['split']}, boundaries {report['boundaries']}, {report['dtype']}"
    )
    main = Table(title=title)
    for name in ("M", "|g_M|", "cos(g_M, g_max)", "discarded/within", "cos(within, disc.)"):
        main.add_column(name, justify="right")
    for s in synths:
        for what in ("cos", "norm ratio", "param cos"):
            main.add_column(f"{s}: {what}", justify="right")
    for m, row in mean.items():
        cells = [m, f"{row['grad_norm']:.3g}", f"{row['cos_to_longest']:.3f}"]
        share = row["layers"]["all"]
        cells += [_num(share["ratio"], ".3g"), f"{share['cos']:.3f}"]
        for s in synths:
            sc = row["synthesizers"][s]
            cells += [f"{sc['cos']:.3f}", _num(sc["norm_ratio"], ".3g"), f"{sc['param_cos']:.3f}"]
        main.add_row(*cells)
    layers = Table(title="discarded / within per layer (mean over boundaries)")
    layers.add_column("M", justify="right")
    names = list(next(iter(mean.values()))["layers"])
    for name in names:
        layers.add_column(name, justify="right")
    for m, row in mean.items():
        layers.add_row(m, *(_num(row["layers"][n]["ratio"], ".3g") for n in names))
    return [main, layers] + ([fit_table(report)] if "fit" in report else [])


def fit_table(report: dict[str, Any]) -> Any:
    """Every synthesizer against g_M (the run's own and the fitted ones), per M: the
    means over the boundaries; the fitted ones' SG loss at the start and end of the fit,
    the end's over a zero prediction's on the same targets, and their final sg_cos."""
    from rich.table import Table

    fit = report["fit"]
    title = (
        f"what each synthesizer recovers of g_M (fitted on {fit['segments']} train segments "
        f"of {fit['rows_per_segment']} rows, model frozen, {fit['seconds']:.0f} s)"
    )
    table = Table(title=title)
    columns = ("synthesizer", "M", "cos", "norm ratio", "param cos", "fit SG loss", "/ zero's")
    for name in (*columns, "fit cos"):
        table.add_column(name, justify="left" if name == "synthesizer" else "right")
    for s in report["synthesizers"]:
        done = fit["synthesizers"].get(s)
        sg = f"{done['sg_loss_first']:.3g} -> {done['sg_loss_final']:.3g}" if done else "-"
        vs_zero = _num(done["sg_loss_final_over_zero"], ".3f") if done else "-"
        sg_cos = f"{done['sg_cos_final']:.3f}" if done else "-"
        for m, row in report["mean"].items():
            sc = row["synthesizers"][s]
            table.add_row(
                s, m, f"{sc['cos']:.3f}", _num(sc["norm_ratio"], ".3g"),
                f"{sc['param_cos']:.3f}", sg, vs_zero, sg_cos,
            )  # fmt: skip
    return table


def _num(value: float | None, spec: str) -> str:
    """A number for the table; "-" where there is none (a zero denominator)."""
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
