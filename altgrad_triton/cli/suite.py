"""altgrad-suite: run every recipe of a folder for several seeds, then report.

    altgrad-suite recipes/evidence/ --seeds 1 2 3 --out runs/evidence
    altgrad-suite recipes/evidence/wt2 --seeds 1 --dry-run
    altgrad-suite recipes/evidence/ --seeds 1 --only 'wt2-*-t10'   # one row of the table
    altgrad-suite recipes/evidence/ data.path=/data/wikitext-2   # override for every run

Runs are named <run.name>-s<seed> under --out. Finished runs (results.json) are skipped,
interrupted ones (a checkpoint, no results.json) are resumed, so running the same command
again continues a stopped suite. At the end altgrad-report writes OUT/report/report.md and
its plots. Files named _*.toml are bases for `extends` and are not run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError
from .common import command_parser, run_main


def seed(text: str) -> int:
    """One word after --seeds, which takes every word up to the next option: an override
    written after the seeds is named as one, not called a bad integer."""
    if "=" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is an override, not a seed; write overrides before --seeds"
        )
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be integers, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = command_parser("altgrad-suite", __doc__)
    p.add_argument("folder", help="recipe folder (or one recipe file)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides for every run")
    p.add_argument("--seeds", nargs="+", type=seed, default=[1, 2, 3])
    p.add_argument("--out", default="runs/evidence", help="folder of the run directories")
    p.add_argument(
        "--only", metavar="PATTERN", help="only recipes whose run.name matches, e.g. 'wt2-*-t10'"
    )
    p.add_argument("--dry-run", action="store_true", help="list the planned runs, train nothing")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.add_argument("--no-plots", action="store_true", help="report tables without plots")
    return p


def body(argv: list[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    from ..experiments import suite
    from ..report import write_report
    from ..run.folder import RunFolder

    runs = suite.plan(args.folder, args.seeds, args.out, args.overrides, args.only)
    print(suite.describe(runs), flush=True)
    if args.dry_run:
        return 0
    failed = suite.execute(runs, echo=lambda s: print(s, flush=True))
    if not args.no_report:
        out = Path(args.out)
        present = [r.run_dir for r in runs if RunFolder(r.run_dir).metrics.exists()]
        if present:
            notes: list[str] = []
            md, plots, note = write_report(
                present,
                out / "report",
                plots=not args.no_plots,
                title=f"altgrad-suite {args.folder}",
                notes=notes,
            )
            print(md.read_text())
            print(f"report written to {md}" + (f" ({len(plots)} plots)" if plots else ""))
            for line in [*notes, note] if note else notes:
                print(f"warning: {line}", file=sys.stderr)
    if failed:
        raise UserError(
            f"{len(failed)} run(s) failed: {', '.join(r.name for r in failed)}; "
            "fix the cause and run the same command again"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
