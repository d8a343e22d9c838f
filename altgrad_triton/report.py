"""Tables and plots from run directories (what ``altgrad-report`` writes).

A run directory is what ``altgrad-train`` leaves: ``metrics.jsonl`` (one line per epoch),
``results.json`` once finished (best validation and test loss), ``recipe.toml``.

Seeds: a run named ``<name>-s<seed>`` (``altgrad-suite`` names them so) is one seed of the
recipe ``<name>``; runs are grouped by that name and every group gets the mean and the
sample standard deviation (n - 1) over its seeds. A name without the suffix is a group of
its own. A run counts once however often it is named (the same folder, or a copy: the
same recipe, ``fingerprint``), and a run whose files cannot be read is left out with a
one-line warning while the others are reported. Word-level corpora are reported in
perplexity, character level (corpus "chars") in bits per character (loss / ln 2).

Plots (matplotlib, the optional ``plot`` extra, imported only when plots are asked for):
per group, validation perplexity (or bpc) per epoch, one line per seed, epochs trained in
synthetic mode shaded and warm restarts marked by dashed lines, and sg_cos (cosine between
the synthesizer's prediction and its target) per epoch; per corpus, the mean validation
curve of every group; per ``--versus`` pair, the seed-paired difference per epoch.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .files import read_json, read_jsonl, write_text_atomic
from .metrics import bits, perplexity

SEED_SUFFIX = re.compile(r"^(?P<name>.+)-s(?P<seed>\d+)$")


def split_seed(run_name: str) -> tuple[str, int | None]:
    """``"wt2-bptt-s3"`` -> ``("wt2-bptt", 3)``; a name without ``-s<seed>`` -> (name, None)."""
    m = SEED_SUFFIX.match(run_name)
    return (m["name"], int(m["seed"])) if m else (run_name, None)


def seeded_name(name: str, seed: int) -> str:
    """The run name of one seed of a recipe (the inverse of :func:`split_seed`)."""
    return f"{name}-s{seed}"


@dataclass
class Run:
    """One run directory, read."""

    path: Path
    name: str
    group: str
    seed: int | None
    corpus: str
    epochs: list[dict]
    results: dict | None

    @property
    def char_level(self) -> bool:
        return self.corpus == "chars"

    @property
    def finished(self) -> bool:
        return self.results is not None

    def best_val_loss(self) -> float | None:
        if self.results is not None:
            return self.results["best_val_loss"]
        losses = [e["val_loss"] for e in self.epochs if e.get("val_loss") is not None]
        return min(losses) if losses else None

    def test_loss(self) -> float | None:
        return None if self.results is None else self.results.get("test_loss")

    def mean_sg_cos(self) -> float | None:
        """Mean sg_cos over the epochs that fitted a synthesizer (None for plain BPTT)."""
        cos = [e["sg_cos"] for e in self.epochs if e.get("sg_cos") is not None]
        return statistics.fmean(cos) if cos else None

    def seconds(self) -> float:
        if self.results is not None and "seconds" in self.results:
            return self.results["seconds"]
        return sum(e.get("seconds", 0.0) for e in self.epochs)


def metric(loss: float | None, char_level: bool) -> float | None:
    """A mean cross-entropy (nats) as perplexity, or bits per character for char level."""
    if loss is None:
        return None
    return bits(loss) if char_level else perplexity(loss)


def read_run(path: Path) -> Run:
    """Read one run directory (metrics.jsonl required; results.json, recipe.toml optional);
    a file that cannot be read or holds no numbers where they belong is one UserError
    naming it."""
    path = Path(path)
    metrics = path / "metrics.jsonl"
    if not metrics.exists():
        raise UserError(f"{path}: not a run directory (no metrics.jsonl)")
    recipe = _recipe_of(path)
    corpus = recipe.get("data", {}).get("corpus", "")
    name = recipe.get("run", {}).get("name", "") or path.name
    results = None
    try:
        if (path / "results.json").exists():
            results = read_json(path / "results.json", required=("best_val_loss",))
            _numbers([results], ("best_val_loss", "test_loss", "seconds"), path / "results.json")
        epochs = read_jsonl(metrics, required=("epoch",))
    except OSError as e:
        raise UserError(f"{e.filename or path}: cannot read ({e.strerror or e})") from None
    if not epochs and metrics.read_text(encoding="utf-8", errors="replace").strip():
        raise UserError(f"{metrics}: holds no complete JSON line (its only line is not JSON)")
    _numbers(epochs, ("val_loss", "sg_cos", "seconds"), metrics)
    group, seed = split_seed(name)
    return Run(path, name, group, seed, corpus, epochs, results)


def _recipe_of(path: Path) -> dict:
    """The run's recipe.toml as a dict; empty if it is missing or damaged (the folder name
    then stands in for the run's name)."""
    try:
        r = tomllib.loads((path / "recipe.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}
    run, data = r.get("run", {}), r.get("data", {})
    ok = isinstance(run, dict) and isinstance(data, dict)
    return r if ok and isinstance(run.get("name", ""), str) else {}


def _numbers(rows: list[dict], keys: tuple[str, ...], where: Path) -> None:
    """A UserError naming ``where`` if one of ``keys`` holds something other than a number
    (or null): a table cannot average it."""
    for row in rows:
        for key in keys:
            v = row.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                raise UserError(f"{where}: {key} must be a number, got {v!r}")


FINGERPRINT_IGNORES = ("out_dir", "threads", "log_every")
"""run keys that do not change what a run computes: a run copied or trained again into
another folder is the same seed."""


def fingerprint(path: Path) -> str | None:
    """What makes two run folders the same run: their recipe, less the keys of
    FINGERPRINT_IGNORES; None without a readable recipe.toml."""
    recipe = _recipe_of(path)
    if not recipe:
        return None
    run = {k: v for k, v in recipe.get("run", {}).items() if k not in FINGERPRINT_IGNORES}
    return json.dumps({**recipe, "run": run}, sort_keys=True, default=str)


def run_dirs(paths: list[str | Path]) -> list[Path]:
    """Run directories named, or found one or two levels below the folders named."""
    dirs: list[Path] = []
    for p in (Path(x).expanduser() for x in paths):
        if not p.exists():
            raise UserError(f"{p}: no such file or directory")
        if (p / "metrics.jsonl").exists():
            dirs.append(p)
            continue
        found = sorted(
            {m.parent for m in [*p.glob("*/metrics.jsonl"), *p.glob("*/*/metrics.jsonl")]}
        )
        if not found:
            raise UserError(f"{p}: holds no run directories (no metrics.jsonl inside)")
        dirs += found
    return dirs


def find_runs(paths: list[str | Path], notes: list[str] | None = None) -> list[Run]:
    """The runs of ``run_dirs(paths)``, each once: a folder named twice, or a copy of a run
    (the same recipe.toml, see ``fingerprint``), is one seed, not two. With ``notes``, each
    duplicate dropped and each broken run left out is a line there (the other runs are
    still read); without, a broken run is a UserError. A UserError if no run is readable."""
    runs: list[Run] = []
    broken: list[UserError] = []
    seen: dict[object, Path] = {}
    for d in run_dirs(paths):
        keys = [d.resolve(), fingerprint(d)]
        first = next((seen[k] for k in keys if k in seen), None)
        if first is not None:
            if notes is not None:
                notes.append(
                    f"{d} is the same run as {first} (same folder or recipe): counted once"
                )
            continue
        try:
            run = read_run(d)
        except UserError as e:
            if notes is None:
                raise
            broken.append(e)
            continue
        seen.update((k, d) for k in keys if k is not None)
        runs.append(run)
    if broken and not runs:
        more = f" (and {len(broken) - 1} more broken runs)" if len(broken) > 1 else ""
        raise UserError(f"{broken[0]}{more}")
    if notes is not None:
        notes += [f"left out a broken run: {e}" for e in broken]
    return runs


# ---------------------------------------------------------------------------- groups


@dataclass
class Group:
    """Every seed of one recipe."""

    name: str
    corpus: str
    runs: list[Run] = field(default_factory=list)

    @property
    def char_level(self) -> bool:
        return self.corpus == "chars"

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


def fmt(values: list[float], digits: int) -> str:
    ms = mean_std(values)
    if ms is None:
        return "-"
    if len(values) == 1:
        return f"{ms[0]:.{digits}f}"
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def _unit(char_level: bool) -> tuple[str, int]:
    """The unit a corpus is reported in, and its decimals."""
    return ("bpc", 3) if char_level else ("ppl", 2)


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
        unit, digits = _unit(char)
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


def paired_table(groups: list[Group], rules: list[tuple[re.Pattern, str]]) -> str:
    """Seed-paired differences: each group against the group its name maps to.

    A rule (pattern, replacement) maps a group's name with ``re.sub`` (e.g. ``sg-cdni`` ->
    ``bptt`` pairs every SG-cDNI cell with its BPTT cell). For the seeds both groups
    finished (a run still training is left out), the difference run - baseline of best val
    and test is taken per seed, then mean ± std:
    the same seed means the same initial weights and data order, so pairing removes the
    spread that comes from them. "better" counts the seeds where the run is lower.
    """
    by_name = {(g.corpus, g.name): g for g in groups}
    rows = []
    for g in groups:
        for pattern, replacement in rules:
            base = by_name.get((g.corpus, pattern.sub(replacement, g.name)))
            if base is None or base is g:
                continue
            rows.append((g, base))
    if not rows:
        return "_--versus: no group's name maps to another group's._"
    out = []
    for corpus in sorted({g.corpus for g, _ in rows}):
        char = next(g.char_level for g, _ in rows if g.corpus == corpus)
        unit, digits = _unit(char)
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


# ---------------------------------------------------------------------------- phases


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


def _by_epoch(run: Run, key: str) -> dict[int, float]:
    return {e["epoch"]: e[key] for e in run.epochs if e.get(key) is not None}


def _gap(run: Run, base: Run | None, char: bool) -> dict[int, float]:
    """run - baseline of the validation metric per epoch both have; epoch 0 (the same
    initial weights) is 0."""
    if base is None:
        return {}
    mine, theirs = _by_epoch(run, "val_loss"), _by_epoch(base, "val_loss")
    gap = {e: metric(mine[e], char) - metric(theirs[e], char) for e in mine.keys() & theirs.keys()}
    return {0: 0.0, **gap}


def _baseline(g: Group, by_name: dict, rules: list[tuple[re.Pattern, str]]) -> Group | None:
    """The group the first matching ``--versus`` rule maps ``g`` to, if any."""
    for pattern, replacement in rules:
        base = by_name.get((g.corpus, pattern.sub(replacement, g.name)))
        if base is not None and base is not g:
            return base
    return None


@dataclass(frozen=True)
class SeedPhase:
    """One seed's numbers for one phase; None where the run (or its twin) lacks them."""

    cos_mean: float | None  # sg_cos over the phase's epochs
    cos_last: float | None  # sg_cos of its last epoch
    gap_end: float | None  # run - baseline at its last epoch
    change: float | None  # how much that gap moved during the phase


def seed_phase(run: Run, base: Run | None, phase: Phase, char: bool) -> SeedPhase:
    cos, gap = _by_epoch(run, "sg_cos"), _gap(run, base, char)
    span = [cos[e] for e in range(phase.first, phase.last + 1) if e in cos]
    paired = phase.last in gap and phase.first - 1 in gap
    return SeedPhase(
        statistics.fmean(span) if span else None,
        cos.get(phase.last),
        gap[phase.last] if paired else None,
        gap[phase.last] - gap[phase.first - 1] if paired else None,
    )


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
    by_name = {(g.corpus, g.name): g for g in groups}
    summary: list[tuple[Group, str]] = []
    pairs: list[tuple[Group, str]] = []
    for g in groups:
        first = next((r for r in g.runs if r.epochs), None)
        phases = mode_phases(first.epochs) if first else []
        if any(ph.mode == "synthetic" for ph in phases):
            rows, paired = _phase_rows(g, _baseline(g, by_name, rules), phases)
            summary += [(g, row) for row in rows]
            pairs += [(g, row) for row in paired]
    if not summary:
        return "_No run has a synthetic phase._"
    return "\n".join(_phase_markdown(summary, pairs))


def _phase_rows(g: Group, base: Group | None, phases: list) -> tuple[list[str], list[str]]:
    """One group's table rows: one per phase, and one per (synthetic phase, seed) pair."""
    theirs = {r.seed: r for r in base.runs} if base else {}
    digits = _unit(g.char_level)[1]
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
        unit = _unit(next(g.char_level for g, _ in summary if g.corpus == corpus))[0]
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


# ---------------------------------------------------------------------------- plot data


def synthetic_spans(epochs: list[dict]) -> list[tuple[float, float]]:
    """(start, end) x-ranges of consecutive synthetic-mode epochs, each epoch e as e±0.5."""
    spans: list[tuple[float, float]] = []
    for e in epochs:
        if e.get("mode") != "synthetic":
            continue
        lo, hi = e["epoch"] - 0.5, e["epoch"] + 0.5
        if spans and abs(spans[-1][1] - lo) < 1e-9:
            spans[-1] = (spans[-1][0], hi)
        else:
            spans.append((lo, hi))
    return spans


def restart_epochs(epochs: list[dict]) -> list[int]:
    return [e["epoch"] for e in epochs if e.get("restart")]


def curve(run: Run, key: str = "val_loss") -> tuple[list[int], list[float]]:
    """(epochs, values) of one per-epoch metric; val_loss is turned into ppl or bpc."""
    xs, ys = [], []
    for e in run.epochs:
        v = e.get(key)
        if v is None:
            continue
        xs.append(e["epoch"])
        ys.append(metric(v, run.char_level) if key == "val_loss" else v)
    return xs, ys


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def import_pyplot():
    """matplotlib.pyplot with the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _pyplot_or_error():
    plt = import_pyplot()
    if plt is None:
        raise UserError(
            "plots need matplotlib, which is not installed: "
            "pip install 'altgrad-triton[plot]' (tables were written)"
        )
    return plt


def _mark_phases(axes: list, epochs: list[dict]) -> None:
    """Shade the synthetic epochs and draw a dashed line at every warm restart."""
    for a in axes:
        for lo, hi in synthetic_spans(epochs):
            a.axvspan(lo, hi, color="tab:orange", alpha=0.15, lw=0)
        for e in restart_epochs(epochs):
            a.axvline(e - 0.5, color="grey", ls="--", lw=1)


def plot_gaps(
    groups: list[Group], rules: list[tuple[re.Pattern, str]], plots_dir: Path
) -> list[Path]:
    """Per group with a ``--versus`` baseline: run - baseline of the same seed, per epoch.

    The differences seed pairing isolates are often far smaller than the curves' range, so
    they get a plot of their own. Raises UserError when matplotlib is missing.
    """
    by_name = {(g.corpus, g.name): g for g in groups}
    pairs = [(g, b) for g in groups if (b := _baseline(g, by_name, rules)) is not None]
    if not pairs:
        return []
    plt = _pyplot_or_error()
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for g, base in pairs:
        theirs = {r.seed: r for r in base.runs}
        fig, ax = plt.subplots(figsize=(7, 3.5))
        _mark_phases([ax], g.runs[0].epochs)
        for r in g.runs:
            gap = _gap(r, theirs.get(r.seed), g.char_level)
            xs = sorted(e for e in gap if e > 0)
            if xs:
                label = f"seed {r.seed}" if r.seed is not None else r.name
                ax.plot(xs, [gap[e] for e in xs], marker="o", ms=3, label=label)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"Δ val {_unit(g.char_level)[0]}")
        ax.set_title(
            f"{g.name} - {base.name}, same seed (below 0: {g.name} better)\n"
            "shaded = synthetic epochs, dashed = warm restart",
            fontsize=8,
        )
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        name = f"{_slug(g.corpus)}--{_slug(g.name)}--vs--{_slug(base.name)}.png"
        written.append(_save(plt, fig, plots_dir / name))
    return written


def _save(plt, fig, path: Path) -> Path:
    """Lay out, write (the legend kept when it sits beside the axes) and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_groups(groups: list[Group], plots_dir: Path) -> list[Path]:
    """Write the PNGs; return their paths. Raises UserError when matplotlib is missing."""
    plt = _pyplot_or_error()
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = [_plot_group(plt, g, plots_dir) for g in groups]
    for corpus in sorted({g.corpus for g in groups}):
        written.append(_plot_overview(plt, [g for g in groups if g.corpus == corpus], plots_dir))
    return written


def _plot_group(plt, g: Group, plots_dir: Path) -> Path:
    """One group: validation curve and sg_cos per seed, synthetic epochs and restarts marked."""
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    _mark_phases([ax, ax2], g.runs[0].epochs)
    for r in g.runs:
        label = f"seed {r.seed}" if r.seed is not None else r.name
        ax.plot(*curve(r), marker="o", ms=3, label=label)
        xs, ys = curve(r, "sg_cos")
        if xs:
            ax2.plot(xs, ys, marker="o", ms=3, label=label)
    ax.set_ylabel("val bpc" if g.char_level else "val perplexity")
    ax.set_title(
        f"{g.name} ({g.corpus}): shaded = synthetic-gradient epochs, dashed = warm restart",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax2.set_ylabel("sg_cos")
    ax2.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax2.grid(alpha=0.3)
    return _save(plt, fig, plots_dir / f"{_slug(g.corpus)}--{_slug(g.name)}.png")


def _plot_overview(plt, gs: list[Group], plots_dir: Path) -> Path:
    """Every group of one corpus: its mean validation curve over seeds."""
    corpus = gs[0].corpus
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, g in enumerate(gs):
        by_epoch: dict[int, list[float]] = {}
        for r in g.runs:
            for x, y in zip(*curve(r), strict=True):
                by_epoch.setdefault(x, []).append(y)
        xs = sorted(by_epoch)
        ax.plot(
            xs,
            [statistics.fmean(by_epoch[x]) for x in xs],
            marker="o",
            ms=3,
            linestyle=("-", "--", ":", "-.")[i // 10 % 4],  # the colour cycle has 10
            label=f"{g.name} (n={len(g.runs)})",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("val bpc" if gs[0].char_level else "val perplexity")
    ax.set_title(f"{corpus}: mean validation curve over seeds", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(alpha=0.3)
    return _save(plt, fig, plots_dir / f"{_slug(corpus)}--overview.png")


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
    rules = [parse_versus(v) for v in versus]
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
        markdown_table(groups),
    ]
    if rules:
        text += ["Seed-paired differences (`--versus " + " ".join(versus) + "`):", ""]
        text.append(paired_table(groups, rules))
    if any(r.mean_sg_cos() is not None for r in runs):
        text += ["", "Gradient-mode phases:", "", phase_table(groups, rules)]
    written: list[Path] = []
    note = None
    if plots:
        try:
            written = plot_groups(groups, plots_dir) + plot_gaps(groups, rules, plots_dir)
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
