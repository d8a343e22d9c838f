"""altgrad-horizon: copy / repeat-copy horizon table, real vs synthetic gradients.

    altgrad-horizon --out runs/horizon                      # copy, T in 2 3 4 5 8, seed 0
    altgrad-horizon --tasks copy repeat-copy --seeds 0 1 --budget 30000 --out runs/horizon
    altgrad-horizon --table-only runs/horizon/results.jsonl
    altgrad-horizon --truncations 4 --probe 8 --out runs/horizon-probe   # + altgrad-probe's tables

Every run appends one JSON line to OUT/results.jsonl (runs already there are skipped, so an
interrupted table resumes); the Markdown table is written to OUT/table.md and printed.
--probe M probes each model it trains, on fresh episodes at the level it ended at, for
horizons up to M segments (altgrad-probe's measures; one JSON line per run in OUT/probe.jsonl).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config.recipe import MAX_THREADS
from ..errors import UserError
from ..files import write_text_atomic
from ..run.folder import check_output
from .common import command_parser, run_main


def parser() -> argparse.ArgumentParser:
    p = command_parser("altgrad-horizon", __doc__)
    p.add_argument("--out", default="runs/horizon", help="output folder (results.jsonl, table.md)")
    p.add_argument("--tasks", nargs="+", default=["copy"], help="copy and/or repeat-copy")
    p.add_argument("--truncations", nargs="+", type=int, default=[2, 3, 4, 5, 8])
    p.add_argument("--methods", nargs="+", default=["bptt", "sg"], help="bptt and/or sg")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--budget", type=int, default=20_000, help="stream steps per batch column")
    p.add_argument("--hidden", type=int, default=64, help="LSTM units")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threshold", type=float, default=0.15, help="bits per output to pass")
    p.add_argument("--window", type=int, default=400, help="stream steps averaged per check")
    p.add_argument("--synthesizer", default="linear", help="linear or mlp")
    p.add_argument("--scale", type=float, default=0.3, help="synthetic-gradient scale")
    p.add_argument("--synth-lr", type=float, default=1e-4)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1 is fastest for these tiny matrices)",
    )
    p.add_argument(
        "--probe",
        type=int,
        metavar="M",
        help="probe every model trained (float64, horizons up to M segments)",
    )
    p.add_argument(
        "--table-only",
        metavar="RESULTS_JSONL",
        help="only render the table of an existing results file",
    )
    return p


SETTINGS = (
    "budget", "hidden", "batch_size", "lr", "threshold", "window", "synthesizer", "scale",
    "synth_lr",
)  # fmt: skip
"""The options that become ``HorizonConfig`` fields of every run, under the same names."""


def body(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import torch  # deferred so --help and argument errors stay fast

    from ..experiments import horizon
    from ..experiments.suite import check_seeds

    if args.table_only:
        rows = horizon.read_rows(args.table_only)
        if not rows:
            raise UserError(f"{args.table_only}: no results there")
        print(horizon.table(rows))
        return 0
    if args.probe is not None and args.probe < 1:
        raise UserError(f"--probe: must be >= 1 segments, got {args.probe}")
    if not 1 <= args.threads <= MAX_THREADS:
        raise UserError(f"--threads: must be from 1 to {MAX_THREADS}, got {args.threads}")
    torch.set_num_threads(args.threads)
    check_seeds(args.seeds)
    settings = {name: getattr(args, name) for name in SETTINGS}
    configs = horizon.plan(args.tasks, args.truncations, args.methods, args.seeds, **settings)
    for c in configs:
        c.check()
    out = Path(args.out)
    check_output(out, "--out", folder=True)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    _run_missing(configs, results, args.probe)
    text = horizon.table(horizon.read_rows(results))  # every run in the file
    write_text_atomic(out / "table.md", text + "\n")
    print(text)
    print(f"table written to {out / 'table.md'}")
    return 0


def _run_missing(configs: list, results: Path, probe: int | None = None) -> None:
    """Run every config whose row ``results`` lacks, appending each row as it finishes;
    with ``probe``, probe each trained model (``_probe``)."""
    from ..experiments import horizon

    rows = horizon.read_rows(results)
    horizon.check_same_settings(rows, configs[0], results)
    done = {horizon.key(r) for r in rows}
    for i, cfg in enumerate(configs, 1):
        tag = f"[{i}/{len(configs)}] {cfg.task} {cfg.method} T={cfg.truncation} seed {cfg.seed}"
        if horizon.key(vars(cfg)) in done:
            print(f"{tag}: done already, skipped", flush=True)
            continue
        print(f"{tag}: running ({cfg.budget} steps)", flush=True)
        trained = horizon.train(cfg, log=lambda s: print(s, flush=True))
        row = trained.row
        print(
            f"{tag}: passed N*R={row['solved']} (now at N={row['n']} R={row['r']}, "
            f"{row['final_bits']:.3f} bits/output) in {row['seconds']:.0f} s",
            flush=True,
        )
        with open(results, "a") as f:
            f.write(json.dumps(row) + "\n")
        if probe is not None:
            _probe(trained, probe, results.parent / "probe.jsonl")


def _probe(trained, max_horizon: int, out: Path) -> None:
    """altgrad-probe's measures on a trained copy model, printed and appended to ``out``."""
    from rich.console import Console

    from ..experiments.horizon_probe import probe_copy
    from .probe import tables

    report = probe_copy(trained, max_horizon=max_horizon)
    for table in tables(report):
        Console(highlight=False, width=160).print(table)
    with open(out, "a") as f:
        f.write(json.dumps(report) + "\n")


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
