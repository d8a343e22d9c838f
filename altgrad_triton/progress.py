"""What a person watching a run sees: a rich progress bar on a terminal, plain lines otherwise,
and a summary table at the end. Nothing else in the package prints progress."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class EpochProgress:
    """Progress of one epoch: ``update(done, loss, tokens_per_s)`` after each segment.

    ``start``: segments already done before this process took over (a resumed epoch); the
    ETA is estimated from the ones done since.
    """

    def __init__(self, console: Console, title: str, total: int, log_every: int, start: int = 0):
        self.console, self.title, self.total, self.log_every = console, title, total, log_every
        self.start = start
        self._bar: Progress | None = None
        self._last_plain = start
        self._started = time.perf_counter()

    def __enter__(self) -> EpochProgress:
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("loss {task.fields[loss]:.3f}  {task.fields[tps]:,.0f} tok/s"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                escape(self.title),
                total=self.total,
                completed=self.start,
                loss=float("nan"),
                tps=0.0,
            )
        return self

    def update(self, done: int, loss: float, tokens_per_s: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, loss=loss, tps=tokens_per_s)
        elif done - self._last_plain >= self.log_every or done == self.total:
            self._last_plain = done
            elapsed = time.perf_counter() - self._started
            eta = elapsed / max(done - self.start, 1) * (self.total - done)
            self.console.print(
                f"{self.title} {done}/{self.total} loss {loss:.3f} "
                f"{tokens_per_s:,.0f} tok/s eta {eta:.0f}s",
                markup=False,
            )

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


TABLE_WIDTH = 200
"""Columns that wide tables render at when stdout is not a terminal (a log file)."""


def make_console(wide_tables: bool = False) -> Console:
    """The stdout console; plain text (no colour codes, no bar) when stdout is not a terminal.

    ``wide_tables``: for commands whose output is tables (altgrad-bench, altgrad-tune):
    lines are cut, not wrapped, and a log file gets ``TABLE_WIDTH`` columns, whole rows.
    """
    if not wide_tables:
        return Console(highlight=False, soft_wrap=True)
    width = None if sys.stdout.isatty() else TABLE_WIDTH
    return Console(highlight=False, soft_wrap=False, width=width)


def silent_console() -> Console:
    """A console that prints nowhere (for ranks > 0 under torchrun)."""
    return Console(file=open(os.devnull, "w"), highlight=False)  # noqa: SIM115


def summary_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    """A two-column table of names and values (the end-of-run summary)."""
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for k, v in rows:
        table.add_row(k, v)
    return table
