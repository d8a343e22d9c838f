"""Tables of a sweep: every config's timing and the winners."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .jobs import dtype_name
from .results import SweepResult


def format_meta(meta: dict[str, int]) -> str:
    upper = [f"{k}={v}" for k, v in meta.items() if k.isupper()]
    launch = [f"{k.removeprefix('num_')}={v}" for k, v in meta.items() if not k.isupper()]
    return " ".join(upper + launch)


def result_table(r: SweepResult):
    """A rich table of one sweep: config, median, p20-p80 spread, ratio to the best."""
    from rich.table import Table

    job = r.job
    best = r.winner
    title = f"{job.kernel}  {job.shape}  {dtype_name(job.dtype)}  key {tuple(job.key)}"
    table = Table(title=title, title_justify="left")
    table.add_column("config")
    table.add_column("median ms", justify="right")
    table.add_column("p20-p80 ms", justify="right")
    table.add_column("x best", justify="right")
    table.add_column("")
    ok = sorted((t for t in r.trials if t.ok), key=lambda t: t.timing[0])
    for t in ok:
        med, p20, p80 = t.timing
        win = t is best
        table.add_row(
            format_meta(t.meta),
            f"{med:.4f}",
            f"{p20:.4f}-{p80:.4f}",
            f"{med / best.timing[0]:.2f}",
            "winner" if win else "",
            style="bold green" if win else None,
        )
    for t in r.trials:
        if not t.ok:
            table.add_row(format_meta(t.meta), "-", "-", "-", f"failed: {t.error}", style="red")
    if r.aborted:
        table.caption = f"sweep stopped: {r.aborted}"
    return table


def winners_table(results: Sequence[SweepResult], path: Path | None):
    """A rich table of every sweep's winner, and where the winners were stored."""
    from rich.table import Table

    table = Table(
        title="winners" + (f" -> {path}" if path else " (not saved)"), title_justify="left"
    )
    for col in ("kernel", "shape", "dtype", "key", "winner", "median ms", "ok/tried"):
        table.add_column(col)
    for r in results:
        best = r.winner
        table.add_row(
            r.job.kernel,
            r.job.shape,
            dtype_name(r.job.dtype),
            str(tuple(r.job.key)),
            format_meta(best.meta) if best else "none (all failed)",
            f"{best.timing[0]:.4f}" if best else "-",
            f"{sum(t.ok for t in r.trials)}/{len(r.trials)}",
        )
    return table
