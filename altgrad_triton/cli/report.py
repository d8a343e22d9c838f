"""altgrad-report: Markdown tables and PNG plots from run directories.

    altgrad-report runs/evidence                       # every run below runs/evidence
    altgrad-report runs/a-s1 runs/a-s2 --out reports/a
    altgrad-report runs/evidence --markdown docs/evidence.md --plots-dir docs/plots
    altgrad-report runs/evidence --versus 'sg-cdni=bptt'   # each SG-cDNI cell vs its BPTT

Runs named <name>-s<seed> are grouped as seeds of <name> (mean ± sample std over seeds).
--versus PATTERN=REPLACEMENT adds a table of seed-paired differences: every group whose
name, through re.sub(PATTERN, REPLACEMENT, name), becomes another group's, against it.
Word-level corpora in perplexity, character level in bits per character. Plots need
matplotlib (the `plot` extra); without it the tables are still written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import command_parser, run_main


def parser() -> argparse.ArgumentParser:
    p = command_parser("altgrad-report", __doc__)
    p.add_argument("runs", nargs="+", help="run directories, or folders that hold them")
    p.add_argument("--out", default="reports", help="output folder (default: reports)")
    p.add_argument("--markdown", help="Markdown file to write (default: OUT/report.md)")
    p.add_argument("--plots-dir", help="folder for the PNGs (default: OUT/plots)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    p.add_argument("--title", default="Results", help="heading of the Markdown file")
    p.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="PATTERN=REPLACEMENT",
        help="seed-paired differences against the group the name maps to (repeatable)",
    )
    return p


def body(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..report import write_report
    from ..run.folder import check_output

    check_output(args.out, "--out", folder=True)
    for option, path in (("--markdown", args.markdown), ("--plots-dir", args.plots_dir)):
        if path:
            check_output(path, option, folder=option == "--plots-dir")

    notes: list[str] = []
    md, plots, note = write_report(
        args.runs,
        Path(args.out),
        markdown=args.markdown,
        plots_dir=args.plots_dir,
        plots=not args.no_plots,
        title=args.title,
        versus=args.versus,
        notes=notes,
    )
    print(md.read_text())
    print(f"wrote {md}" + (f" and {len(plots)} plots in {plots[0].parent}" if plots else ""))
    for line in [*notes, note] if note else notes:
        print(f"warning: {line}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_main(lambda: body(argv))


if __name__ == "__main__":
    sys.exit(main())
