"""The report's plots (matplotlib, the optional ``plot`` extra, imported only when plots are
asked for): per group, validation perplexity (or bpc) per epoch, one line per seed, epochs
trained in synthetic mode shaded and warm restarts marked by dashed lines, and sg_cos per
epoch; per corpus, the mean validation curve of every group; per ``--versus`` pair, the
seed-paired difference per epoch.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from ..errors import UserError
from .aggregate import Group, baselines, seed_gap
from .runs import Run, metric, unit_of


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
    base_of = baselines(groups, rules)
    pairs = [(g, b) for g in groups if (b := base_of.get((g.corpus, g.name))) is not None]
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
            gap = seed_gap(r, theirs.get(r.seed), g.char_level)
            xs = sorted(e for e in gap if e > 0)
            if xs:
                label = f"seed {r.seed}" if r.seed is not None else r.name
                ax.plot(xs, [gap[e] for e in xs], marker="o", ms=3, label=label)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"Δ val {unit_of(g.char_level)[0]}")
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
