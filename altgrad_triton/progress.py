"""What a person watching a run sees: a rich progress bar on a terminal, plain lines otherwise,
and a summary table at the end. Nothing else in the package prints progress."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Self

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

PLAIN_EVERY_S = 30.0
"""The longest a plain-text progress display (stdout not a terminal: a log file, a pipe)
stays silent, however many steps ``log_every`` asks for: a slow job (a paper-size model
scored on the CPU, where a tenth of the work takes minutes) shows it is alive."""


class _Display:
    """What every progress display shares: on a terminal a rich bar (gone when the job
    ends); otherwise a plain line every ``log_every`` steps, at least every
    ``PLAIN_EVERY_S`` seconds, and at the end. ``start``: steps done before this process
    took over (a resumed epoch); the ETA is estimated from the ones done since."""

    def __init__(self, console: Console, title: str, total: int, log_every: int, start: int = 0):
        self.console, self.title, self.total, self.log_every = console, title, total, log_every
        self.start = start
        self._bar: Progress | None = None
        self._last_plain = start
        self._started = self._last_plain_at = time.perf_counter()

    def __enter__(self) -> Self:
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                *self._columns(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                escape(self.title), total=self.total, completed=self.start, **self._fields()
            )
        return self

    def _show(self, done: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, **self._fields())
            return
        now = time.perf_counter()
        steps, quiet = done - self._last_plain, now - self._last_plain_at
        if steps >= self.log_every or quiet >= PLAIN_EVERY_S or done == self.total:
            self._last_plain, self._last_plain_at = done, now
            eta = (now - self._started) / max(done - self.start, 1) * (self.total - done)
            self.console.print(
                f"{self.title} {done}/{self.total}{self._plain()} eta {eta:.0f}s", markup=False
            )

    def _columns(self) -> list[TextColumn]:
        """The bar's columns after ``done/total`` (a subclass's numbers)."""
        return []

    def _fields(self) -> dict[str, str]:
        """The values those columns show now."""
        return {}

    def _plain(self) -> str:
        """Those values in a plain line, after ``done/total``."""
        return ""

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


class StepProgress(_Display):
    """Progress of a job of ``total`` steps (the probe's segments): ``update(done)`` after
    each."""

    def update(self, done: int) -> None:
        self._show(done)


class EpochProgress(_Display):
    """Progress of one epoch (training or an evaluation pass): ``update(done, loss,
    tokens_per_s)`` after each segment. Until the first segment ends there is no loss and
    no speed to show: the bar says ``loss -`` and ``- tok/s`` (not a NaN that reads as a
    diverged run: the paper recipe's first CPU segment takes minutes)."""

    def __init__(self, console: Console, title: str, total: int, log_every: int, start: int = 0):
        super().__init__(console, title, total, log_every, start)
        self._loss: float | None = None
        self._tokens_per_s: float | None = None

    def update(self, done: int, loss: float, tokens_per_s: float) -> None:
        self._loss, self._tokens_per_s = loss, tokens_per_s
        self._show(done)

    def _columns(self) -> list[TextColumn]:
        return [TextColumn("loss {task.fields[loss]}  {task.fields[tps]} tok/s")]

    def _fields(self) -> dict[str, str]:
        return {"loss": _shown(self._loss, ".3f"), "tps": _shown(self._tokens_per_s, ",.0f")}

    def _plain(self) -> str:
        f = self._fields()
        return f" loss {f['loss']} {f['tps']} tok/s"


def _shown(value: float | None, spec: str) -> str:
    """A number for a progress display; ``-`` before there is one."""
    return "-" if value is None else format(value, spec)


class CallbackProgress:
    """A library caller's own display: ``fn(done, total)`` after each step."""

    def __init__(self, fn: Callable[[int, int], object], total: int):
        self.fn, self.total = fn, total

    def __enter__(self) -> Self:
        return self

    def update(self, done: int, *_: object) -> None:
        self.fn(done, self.total)

    def __exit__(self, *exc: object) -> None:
        pass


ProgressOption = bool | Console | Callable[[int, int], object]
"""What a long library call's ``progress`` takes (``LoadedRun.score``): False, nothing
(the default: a library prints nothing unasked); True, a bar on stderr (rich on a
terminal, plain lines otherwise), so stdout stays the caller's; a rich ``Console``, the
bar there (what the commands pass: their own console); a function, called as
``fn(done, total)`` after each step."""


def open_progress(
    option: ProgressOption | None,
    kind: type[StepProgress] | type[EpochProgress],
    title: str,
    total: int,
    log_every: int,
) -> StepProgress | EpochProgress | CallbackProgress | None:
    """The display ``option`` asks for (see ``ProgressOption``), a ``kind`` bar or a call
    per step; None for none. Use it as a context manager."""
    if option is None or option is False:
        return None
    if isinstance(option, Console):
        return kind(option, title, total, log_every)
    if option is True:
        return kind(Console(stderr=True, highlight=False), title, total, log_every)
    if callable(option):
        return CallbackProgress(option, total)
    raise TypeError(f"progress: expected True, False, a rich Console or a function, got {option!r}")


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
