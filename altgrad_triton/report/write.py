"""``write_report``: what ``altgrad-report`` and ``altgrad-suite`` write, the Markdown file
with every table and the plots beside it."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError
from ..files import write_text_atomic
from .aggregate import Group, group_runs, parse_versus
from .plots import plot_gaps, plot_groups
from .probes import plot_probes, probe_table
from .runs import find_runs
from .tables import markdown_table, paired_table, phase_table


def write_report(
    paths: list[str | Path],
    out_dir: Path,
    *,
    markdown: Path | None = None,
    plots_dir: Path | None = None,
    plots: bool = True,
    title: str = "Results",
    versus: list[str] = (),
    notes: list[str] | None = None,
) -> tuple[Path, list[Path], str | None]:
    """Tables (always), seed-paired differences for the ``versus`` rules (see
    ``paired_table``), and plots (when asked and matplotlib is there).

    Returns (markdown path, plot paths, a note when plots were skipped). ``notes``, if
    given, gets a line for each duplicate run dropped and each broken run left out (see
    ``find_runs``); they are listed in the Markdown too.
    """
    rules = [parse_versus(v) for v in versus]  # a bad rule fails before any run is read
    notes = [] if notes is None else notes
    runs = find_runs(paths, notes)
    groups = group_runs(runs)
    out_dir = Path(out_dir)
    markdown = Path(markdown) if markdown else out_dir / "report.md"
    plots_dir = Path(plots_dir) if plots_dir else out_dir / "plots"
    markdown.parent.mkdir(parents=True, exist_ok=True)
    text = [
        f"# {title}",
        "",
        f"{len(runs)} runs in {len(groups)} groups.",
        "",
        *[f"_Note: {n}_\n" for n in notes],
        *tables(groups, rules, versus),
    ]
    written: list[Path] = []
    note = None
    if plots:
        try:
            written = plot_groups(groups, plots_dir) + plot_gaps(groups, rules, plots_dir)
            written += plot_probes(groups, plots_dir)
        except UserError as e:
            note = str(e)
    if written:
        text.append("")
        for p in written:
            rel = os.path.relpath(p, markdown.parent)
            text.append(f"![{p.stem}]({rel})")
            text.append("")
    if note:
        text.append(f"_No plots: {note}_")
    write_text_atomic(markdown, "\n".join(text).rstrip() + "\n")
    return markdown, written, note


def tables(groups: list[Group], rules: list, versus: list[str]) -> list[str]:
    """The report's Markdown tables, as lines: results, the seed-paired differences of the
    ``rules`` (``parse_versus`` of the ``versus`` texts), the gradient-mode phases (runs
    with a synthesizer) and the truncation probe (probed runs)."""
    text = [markdown_table(groups)]
    if rules:
        text += ["Seed-paired differences (`--versus " + " ".join(versus) + "`):", ""]
        text.append(paired_table(groups, rules))
    if any(r.mean_sg_cos() is not None for g in groups for r in g.runs):
        text += ["", "Gradient-mode phases:", "", phase_table(groups, rules)]
    probes = probe_table(groups)
    if probes:
        text += ["", "Truncation probe (`altgrad-probe`, `[probe]`; final probe of each run):"]
        text += ["", probes]
    return text
