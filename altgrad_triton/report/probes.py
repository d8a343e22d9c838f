"""The truncation probe's part of the report: what truncation discards and what each
synthesizer recovers of it, per group (mean ± std over seeds), and two plots per corpus:
the discarded share across the epochs of runs probed during training (``[probe] every``),
and against the horizon M.

A run's *final* probe is its ``probe-train.json`` (``altgrad-probe RUN_DIR``, usually at
longer horizons) when it has one, else its last ``probe.jsonl`` line. Every number is read
at a record's longest horizon unless a horizon is named. "disc/within" is the norm of the
parameter gradient that truncation discards over the segment's own, over all layers.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .aggregate import Group
from .plots import _mark_phases, _pyplot_or_error, _save, _slug, synthetic_spans
from .tables import _present, fmt


def final_probe(run) -> dict | None:
    return run.probe if run.probe is not None else (run.probes[-1] if run.probes else None)


def at_horizon(record: dict, horizon: int | None = None) -> dict:
    """The mean over boundaries at ``horizon`` (default: the record's longest)."""
    return record["mean"][str(max(record["horizons"]) if horizon is None else horizon)]


def share(record: dict, horizon: int | None = None) -> float | None:
    return at_horizon(record, horizon)["layers"]["all"]["ratio"]


def synthesizer_cos(record: dict, horizon: int | None = None) -> dict[str, float]:
    """Each synthesizer's mean per-row cosine with the true future gradient."""
    return {n: s["cos"] for n, s in at_horizon(record, horizon)["synthesizers"].items()}


def probe_table(groups: list[Group]) -> str:
    """One row per group with a probed run, from each run's final probe."""
    rows = []
    for g in groups:
        finals = [(r, p) for r in g.runs if (p := final_probe(r)) is not None]
        if not finals:
            continue
        seeds = ",".join(str(r.seed) for r, _ in finals if r.seed is not None) or "-"
        epochs = sorted({p.get("epoch") for _, p in finals if p.get("epoch") is not None})
        m = sorted({max(p["horizons"]) for _, p in finals})
        names = sorted({n for _, p in finals for n in synthesizer_cos(p)})
        synth = "; ".join(
            f"{n} {fmt([c[n] for _, p in finals if n in (c := synthesizer_cos(p))], 3)}"
            for n in names
        )
        cos = [at_horizon(p)["layers"]["all"]["cos"] for _, p in finals]
        rows.append(
            f"| {g.corpus} | {g.name} | {seeds} | {','.join(map(str, epochs)) or '-'} | "
            f"{','.join(map(str, m))} | {fmt(_present([share(p) for _, p in finals]), 3)} | "
            f"{fmt(cos, 3)} | {synth or '-'} |"
        )
    if not rows:
        return ""
    head = [
        "| corpus | run | seeds | epoch | M | disc/within | cos(within, disc.) "
        "| synthesizer: cos with the true future gradient |",
        "|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + rows)


def plot_probes(groups: list[Group], plots_dir: Path) -> list[Path]:
    """Per corpus with probed runs: the discarded share across epochs (runs with a
    ``probe.jsonl``) and against M (final probes); mean over seeds, one line per group."""
    probed = [g for g in groups if any(final_probe(r) for r in g.runs)]
    if not probed:
        return []
    plt = _pyplot_or_error()
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for corpus in sorted({g.corpus for g in probed}):
        gs = [g for g in probed if g.corpus == corpus]
        if any(r.probes for g in gs for r in g.runs):
            written.append(_plot_epochs(plt, gs, plots_dir / f"{_slug(corpus)}--probe-epochs.png"))
        written.append(_plot_horizons(plt, gs, plots_dir / f"{_slug(corpus)}--probe-horizon.png"))
    return written


def _mean_by(points: list[tuple[float, float | None]]) -> tuple[list[float], list[float]]:
    """(xs, mean of the ys at each x), the Nones left out."""
    by: dict[float, list[float]] = {}
    for x, y in points:
        if y is not None:
            by.setdefault(x, []).append(y)
    xs = sorted(by)
    return xs, [statistics.fmean(by[x]) for x in xs]


def _plot_epochs(plt, gs: list[Group], path: Path) -> Path:
    """Discarded share and each synthesizer's cosine, per probed epoch."""
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for g in gs:
        lines = [p for r in g.runs for p in r.probes]
        if not lines:
            continue
        label = f"{g.name} (n={sum(bool(r.probes) for r in g.runs)})"
        ax.plot(*_mean_by([(p["epoch"], share(p)) for p in lines]), marker="o", ms=3, label=label)
        for name in sorted({n for p in lines for n in synthesizer_cos(p)}):
            cos = [(p["epoch"], synthesizer_cos(p).get(name)) for p in lines]
            ax2.plot(*_mean_by(cos), marker="o", ms=3, label=f"{g.name}: {name}")
    ax.set_ylabel("discarded / within")
    ax.set_title(
        f"{gs[0].corpus}: what truncation discards of a segment's parameter gradient, per "
        "probed epoch (mean over seeds, longest M)",
        fontsize=9,
    )
    ax2.set_ylabel("synthesizer cos\nwith true future grad.")
    ax2.set_xlabel("epoch")
    ax2.axhline(0, color="black", lw=0.8)
    drawn = [g for g in gs if any(r.probes for r in g.runs)]
    alternating = next((g for g in drawn if synthetic_spans(g.runs[0].epochs)), None)
    if alternating is not None:
        _mark_phases([ax, ax2], alternating.runs[0].epochs)
        ax2.set_title(
            f"shaded: {alternating.name}'s synthetic-gradient epochs; dashed: its restarts",
            fontsize=8,
        )
    for a in (ax, ax2):
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(plt, fig, path)


def _plot_horizons(plt, gs: list[Group], path: Path) -> Path:
    """Discarded share against the horizon M, from each run's final probe."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for g in gs:
        finals = [p for r in g.runs if (p := final_probe(r)) is not None]
        points = [(m, share(p, m)) for p in finals for m in p["horizons"]]
        ax.plot(*_mean_by(points), marker="o", ms=4, label=f"{g.name} (n={len(finals)})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("horizon M (segments after the boundary)")
    ax.set_ylabel("discarded / within")
    ax.set_title(
        f"{gs[0].corpus}: how far the discarded gradient reaches (final probe, mean over seeds)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(plt, fig, path)
