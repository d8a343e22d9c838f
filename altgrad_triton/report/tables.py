"""The report's Markdown tables: results per corpus, seed-paired differences (``--versus``)
and what each gradient-mode phase did.
"""

from __future__ import annotations

import re

from .aggregate import Group, baselines, mean_std, mode_phases, seed_phase, versus_pairs
from .runs import Run, metric, unit_of


def fmt(values: list[float], digits: int) -> str:
    ms = mean_std(values)
    if ms is None:
        return "-"
    if len(values) == 1:
        return f"{ms[0]:.{digits}f}"
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def markdown_table(groups: list[Group]) -> str:
    """One Markdown table per corpus: mean ± std over seeds of each group's results.

    ``sg_cos`` is each run's mean over the epochs that fitted a synthesizer (real and
    synthetic ones alike), then mean ± std over seeds: near 0, the synthetic gradient
    carried no signal and the run was TBPTT plus noise.
    """
    out = []
    for corpus in sorted({g.corpus for g in groups}):
        gs = [g for g in groups if g.corpus == corpus]
        char = gs[0].char_level
        unit, digits = unit_of(char)
        out.append(
            f"**{corpus or 'unknown corpus'}** ({'bits per character' if char else 'perplexity'}"
            "; mean ± sample std over seeds)"
        )
        out.append("")
        out.append(
            f"| run | seeds | finished | best val {unit} | test {unit} | sg_cos | epochs"
            " | train time (s) |"
        )
        out.append("|---|---|---|---|---|---|---|---|")
        for g in gs:
            seeds = ",".join(str(r.seed) for r in g.runs if r.seed is not None) or "-"
            done = sum(r.finished for r in g.runs)
            out.append(
                f"| {g.name} | {seeds} | {done}/{len(g.runs)} | {fmt(g.values('val'), digits)}"
                f" | {fmt(g.values('test'), digits)} | {fmt(g.values('sg_cos'), 3)}"
                f" | {fmt(g.values('epochs'), 1)} | "
                f"{fmt(g.values('seconds'), 0)} |"
            )
        out.append("")
    return "\n".join(out)


def paired_table(groups: list[Group], rules: list[tuple[re.Pattern, str]]) -> str:
    """Seed-paired differences: each group against the group its name maps to.

    A rule (pattern, replacement) maps a group's name with ``re.sub`` (e.g. ``sg-cdni`` ->
    ``bptt`` pairs every SG-cDNI cell with its BPTT cell). For the seeds both groups
    finished (a run still training is left out), the difference run - baseline of best val
    and test is taken per seed, then mean ± std:
    the same seed means the same initial weights and data order, so pairing removes the
    spread that comes from them. "better" counts the seeds where the run is lower.
    """
    rows = versus_pairs(groups, rules)
    if not rows:
        return "_--versus: no group's name maps to another group's._"
    out = []
    for corpus in sorted({g.corpus for g, _ in rows}):
        char = next(g.char_level for g, _ in rows if g.corpus == corpus)
        unit, digits = unit_of(char)
        out += [
            f"**{corpus or 'unknown corpus'}**: run - baseline per seed ({unit}; negative "
            "= the run is better; mean ± sample std over the paired seeds)",
            "",
            f"| run | baseline | paired seeds | Δ best val {unit} | Δ test {unit} | better (val) |",
            "|---|---|---|---|---|---|",
        ]
        for g, base in (pair for pair in rows if pair[0].corpus == corpus):
            mine = {r.seed: r for r in g.runs if r.seed is not None and r.finished}
            theirs = {r.seed: r for r in base.runs if r.seed is not None and r.finished}
            seeds = sorted(mine.keys() & theirs.keys())
            deltas = {"val": [], "test": []}
            for s in seeds:
                for what, loss in (("val", Run.best_val_loss), ("test", Run.test_loss)):
                    a, b = metric(loss(mine[s]), char), metric(loss(theirs[s]), char)
                    if a is not None and b is not None:
                        deltas[what].append(a - b)
            better = sum(d < 0 for d in deltas["val"])
            out.append(
                f"| {g.name} | {base.name} | {','.join(map(str, seeds)) or '-'} | "
                f"{fmt(deltas['val'], digits)} | {fmt(deltas['test'], digits)} | "
                f"{better}/{len(deltas['val'])} |"
            )
        out.append("")
    return "\n".join(out)


def _present(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def phase_table(groups: list[Group], rules: list[tuple[re.Pattern, str]] = ()) -> str:
    """Per gradient-mode phase of every group that has a synthetic one: sg_cos, and what
    the phase did against the group a ``--versus`` rule maps it to (same seed).

    ``Δ at end``: run - baseline at the phase's last epoch; ``change``: how much that gap
    moved during the phase (from the epoch before its first; 0 before epoch 1, where both
    start from the same weights). The second table pairs, per seed, each synthetic phase
    with sg_cos at the end of the phase before it: does a synthesizer that fitted well
    going in make the synthetic phase help?
    """
    base_of = baselines(groups, rules)
    summary: list[tuple[Group, str]] = []
    pairs: list[tuple[Group, str]] = []
    for g in groups:
        first = next((r for r in g.runs if r.epochs), None)
        phases = mode_phases(first.epochs) if first else []
        if any(ph.mode == "synthetic" for ph in phases):
            rows, paired = _phase_rows(g, base_of.get((g.corpus, g.name)), phases)
            summary += [(g, row) for row in rows]
            pairs += [(g, row) for row in paired]
    if not summary:
        return "_No run has a synthetic phase._"
    return "\n".join(_phase_markdown(summary, pairs))


def _phase_rows(g: Group, base: Group | None, phases: list) -> tuple[list[str], list[str]]:
    """One group's table rows: one per phase, and one per (synthetic phase, seed) pair."""
    theirs = {r.seed: r for r in base.runs} if base else {}
    digits = unit_of(g.char_level)[1]
    numbers = {
        r.name: [seed_phase(r, theirs.get(r.seed), ph, g.char_level) for ph in phases]
        for r in g.runs
    }
    summary, pairs = [], []
    for i, ph in enumerate(phases):
        at = [numbers[r.name][i] for r in g.runs]
        summary.append(
            f"| {g.name} | {base.name if base else '-'} | {ph.label} | {ph.mode} | "
            f"{fmt(_present([s.cos_mean for s in at]), 3)} | "
            f"{fmt(_present([s.cos_last for s in at]), 3)} | "
            f"{fmt(_present([s.gap_end for s in at]), digits)} | "
            f"{fmt(_present([s.change for s in at]), digits)} |"
        )
        if ph.mode != "synthetic" or i == 0:
            continue
        for r in g.runs:
            before, now = numbers[r.name][i - 1], numbers[r.name][i]
            if before.cos_last is None:
                continue
            seed = r.seed if r.seed is not None else "-"
            inside = "-" if now.cos_mean is None else f"{now.cos_mean:.3f}"
            moved = "-" if now.change is None else f"{now.change:+.{digits}f}"
            cells = (g.name, seed, ph.label, f"{before.cos_last:.3f}", inside, moved)
            pairs.append("| " + " | ".join(map(str, cells)) + " |")
    return summary, pairs


def _phase_markdown(summary: list[tuple[Group, str]], pairs: list[tuple[Group, str]]) -> list[str]:
    """The two phase tables of every corpus, as markdown lines."""
    out = []
    for corpus in sorted({g.corpus for g, _ in summary}):
        unit = unit_of(next(g.char_level for g, _ in summary if g.corpus == corpus))[0]
        name = corpus or "unknown corpus"
        out += [
            f"**{name}**: per phase (mean ± sample std over seeds; Δ = run - baseline of the "
            f"same seed in val {unit}, negative = the run is better)",
            "",
            "| run | baseline | epochs | mode | sg_cos (phase mean) | sg_cos (last epoch) | "
            "Δ at end | change of Δ in the phase |",
            "|---|---|---|---|---|---|---|---|",
            *(row for g, row in summary if g.corpus == corpus),
            "",
        ]
        rows = [row for g, row in pairs if g.corpus == corpus]
        if rows:
            out += [
                f"**{name}**: each synthetic phase against sg_cos at the end of the phase "
                "before it, per seed",
                "",
                "| run | seed | synthetic epochs | sg_cos, last epoch before | sg_cos in the "
                f"phase | change of Δ val {unit} in the phase |",
                "|---|---|---|---|---|---|",
                *rows,
                "",
            ]
    return out
