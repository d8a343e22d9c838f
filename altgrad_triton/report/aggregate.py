"""Aggregating runs: the seeds of one recipe as a ``Group``, mean and sample standard
deviation over seeds, the ``--versus`` pairing of a group with its baseline, and the
gradient-mode phases of a run with its seed-paired gap to the baseline per epoch.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

from ..config.names import char_level
from ..errors import UserError
from .runs import Run, metric


@dataclass
class Group:
    """Every seed of one recipe."""

    name: str
    corpus: str
    runs: list[Run] = field(default_factory=list)

    @property
    def char_level(self) -> bool:
        return char_level(self.corpus)

    def values(self, what: str) -> list[float]:
        out = []
        for r in self.runs:
            if what == "val":
                v = metric(r.best_val_loss(), self.char_level)
            elif what == "test":
                v = metric(r.test_loss(), self.char_level)
            elif what == "epochs":
                v = float(len(r.epochs))
            elif what == "seconds":
                v = r.seconds()
            elif what == "sg_cos":
                v = r.mean_sg_cos()
            else:
                raise ValueError(what)
            if v is not None:
                out.append(v)
        return out


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs grouped by (corpus, name without seed suffix), sorted by corpus then name."""
    groups: dict[tuple[str, str], Group] = {}
    for r in runs:
        g = groups.setdefault((r.corpus, r.group), Group(r.group, r.corpus))
        g.runs.append(r)
    for g in groups.values():
        g.runs.sort(key=lambda r: (r.seed is None, r.seed or 0, r.name))
    return [groups[k] for k in sorted(groups)]


def mean_std(values: list[float]) -> tuple[float, float] | None:
    """Mean and sample standard deviation (0 for one value); None for no values."""
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), std


def parse_versus(rule: str) -> tuple[re.Pattern, str]:
    """``"PATTERN=REPLACEMENT"`` -> (compiled pattern, replacement); UserError if malformed."""
    pattern, sep, replacement = rule.partition("=")
    if not sep or not pattern:
        raise UserError(f"--versus: expected PATTERN=REPLACEMENT (a regex), got {rule!r}")
    try:
        compiled = re.compile(pattern)
    except re.error as e:
        raise UserError(f"--versus: {pattern!r} is not a regular expression ({e})") from None
    try:  # re compiles the replacement before it searches: group references are checked
        compiled.sub(replacement, "")
    except (re.error, IndexError) as e:
        raise UserError(
            f"--versus: {replacement!r} is not a replacement for {pattern!r} ({e})"
        ) from None
    return compiled, replacement


@dataclass(frozen=True)
class Phase:
    """Consecutive epochs trained in one gradient mode, ``first`` to ``last`` inclusive."""

    mode: str
    first: int
    last: int

    @property
    def label(self) -> str:
        return f"{self.first}-{self.last}" if self.last > self.first else str(self.first)


def mode_phases(epochs: list[dict]) -> list[Phase]:
    """The run's epochs cut where the gradient mode changes."""
    phases: list[Phase] = []
    for e in epochs:
        mode = e.get("mode", "real")
        if phases and phases[-1].mode == mode and phases[-1].last == e["epoch"] - 1:
            phases[-1] = Phase(mode, phases[-1].first, e["epoch"])
        else:
            phases.append(Phase(mode, e["epoch"], e["epoch"]))
    return phases


def by_epoch(run: Run, key: str) -> dict[int, float]:
    """One per-epoch metric of a run, by epoch (epochs without it left out)."""
    return {e["epoch"]: e[key] for e in run.epochs if e.get(key) is not None}


def seed_gap(run: Run, base: Run | None, char: bool) -> dict[int, float]:
    """run - baseline of the validation metric per epoch both have; epoch 0 (the same
    initial weights) is 0."""
    if base is None:
        return {}
    mine, theirs = by_epoch(run, "val_loss"), by_epoch(base, "val_loss")
    gap = {e: metric(mine[e], char) - metric(theirs[e], char) for e in mine.keys() & theirs.keys()}
    return {0: 0.0, **gap}


def versus_pairs(
    groups: list[Group], rules: list[tuple[re.Pattern, str]]
) -> list[tuple[Group, Group]]:
    """(group, baseline) for every group and every ``--versus`` rule that maps the group's
    name, through ``re.sub``, to another group's of the same corpus; in group order, then
    rule order. The one pairing rule: the paired table has a row per pair, the phase table
    and the gap plots take each group's first (``baselines``)."""
    by_name = {(g.corpus, g.name): g for g in groups}
    pairs = []
    for g in groups:
        for pattern, replacement in rules:
            base = by_name.get((g.corpus, pattern.sub(replacement, g.name)))
            if base is not None and base is not g:
                pairs.append((g, base))
    return pairs


def baselines(
    groups: list[Group], rules: list[tuple[re.Pattern, str]]
) -> dict[tuple[str, str], Group]:
    """Each paired group's baseline, keyed by the group's (corpus, name): the first rule
    of ``versus_pairs`` that maps it to another group."""
    first: dict[tuple[str, str], Group] = {}
    for g, base in versus_pairs(groups, rules):
        first.setdefault((g.corpus, g.name), base)
    return first


@dataclass(frozen=True)
class SeedPhase:
    """One seed's numbers for one phase; None where the run (or its twin) lacks them."""

    cos_mean: float | None  # sg_cos over the phase's epochs
    cos_last: float | None  # sg_cos of its last epoch
    gap_end: float | None  # run - baseline at its last epoch
    change: float | None  # how much that gap moved during the phase


def seed_phase(run: Run, base: Run | None, phase: Phase, char: bool) -> SeedPhase:
    cos, gap = by_epoch(run, "sg_cos"), seed_gap(run, base, char)
    span = [cos[e] for e in range(phase.first, phase.last + 1) if e in cos]
    paired = phase.last in gap and phase.first - 1 in gap
    return SeedPhase(
        statistics.fmean(span) if span else None,
        cos.get(phase.last),
        gap[phase.last] if paired else None,
        gap[phase.last] - gap[phase.first - 1] if paired else None,
    )
