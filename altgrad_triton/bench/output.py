"""Output: result tables on the console, rows appended to the CSV, and the Report that
does both, family by family."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from .measure import Env, Row

CSV_COLUMNS = (
    "date", "device", "capability", "torch", "triton", "family", "shape", "dtype",
    "direction", "provider", "ms", "ms_p20", "ms_p80", "metric", "unit", "pct_of_copy",
    "ratio", "note",
)  # fmt: skip


def rows_table(title: str, rows: Sequence[Row]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col, just in (
        ("shape", "left"),
        ("dtype", "left"),
        ("dir", "left"),
        ("provider", "left"),
        ("ms", "right"),
        ("p20-p80", "right"),
        ("metric", "right"),
        ("% copy", "right"),
        ("ratio", "right"),
        ("note", "left"),
    ):
        table.add_column(col, justify=just)
    last = None
    for r in rows:
        key = (r.shape, r.dtype, r.direction)
        if last is not None and key != last:
            table.add_section()
        last = key
        spread = (
            f"{_fmt_ms(r.p20)}-{_fmt_ms(r.p80)}" if r.p20 is not None and r.p80 is not None else ""
        )
        metric = "" if r.metric is None else f"{_fmt(r.metric)} {r.unit}"
        table.add_row(
            r.shape,
            r.dtype,
            r.direction,
            r.provider,
            "-" if r.ms is None else _fmt_ms(r.ms),
            spread,
            metric,
            "" if r.pct is None else f"{r.pct:.0f}%",
            "" if r.ratio is None else f"{r.ratio:.2f}x",
            r.note,
            style="bold" if r.provider == "triton" else None,
        )
    return table


def _fmt_ms(ms: float) -> str:
    return f"{ms:.1f}" if ms >= 100 else f"{ms:.3f}" if ms >= 1 else f"{ms:.4f}"


def _fmt(x: float) -> str:
    """Three significant digits for small numbers, thousands separators for large ones."""
    if x >= 1e4:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}"


def _check_header(path: Path) -> None:
    """Refuse a CSV whose header is not ours: rows are appended, never rewritten."""
    with path.open(newline="") as fh:
        header = next(csv.reader(fh), [])
    if tuple(header) != CSV_COLUMNS:
        raise UserError(
            f"{path}: its header is not altgrad-bench's columns "
            f"({','.join(CSV_COLUMNS)}); pass another --csv"
        )


def check_csv(path: Path, *, create_parent: bool, console) -> Path | None:
    """Fail before measuring if ``path`` holds another header; the default path is dropped
    (with a note) when its folder does not exist here."""
    if path.exists() and path.stat().st_size > 0:
        _check_header(path)
    elif not path.parent.exists() and not create_parent:
        console.print(
            f"note: {path.parent}/ not found here, so no CSV is written (run from "
            "the repository root or pass --csv PATH)",
            markup=False,
        )
        return None
    return path


def append_csv(path: Path, rows: Sequence[Row], env: Env, *, create_parent: bool) -> int:
    """Append ``rows``; write the header first into a new or empty file. A file whose header
    differs is refused (UserError), never rewritten."""
    path = Path(path)
    if path.exists() and path.stat().st_size > 0:
        _check_header(path)
        new = False
    else:
        if not path.parent.exists():
            if not create_parent:
                raise UserError(
                    f"{path.parent}/ does not exist (run from the repository root "
                    "or pass --csv PATH)"
                )
            path.parent.mkdir(parents=True)
        new = True
    with path.open("a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow(r.csv(env))
    return len(rows)


@dataclass
class Report:
    """Where rows go: printed per family, appended to the CSV if one is active."""

    env: Env
    console: Any
    csv_path: Path | None
    create_parent: bool
    written: int = 0
    rows: list[Row] = field(default_factory=list)

    def add(self, title: str, rows: Sequence[Row]) -> None:
        if not rows:
            return
        if not self.env.gpu:
            title += "  [CPU reference timings, not GPU figures]"
        self.console.print(rows_table(title, rows))
        self.rows += rows
        if self.csv_path is not None:
            note = "" if self.env.gpu else "cpu-reference"
            if note:
                rows = [
                    dataclasses.replace(r, note=f"{note}; {r.note}" if r.note else note)
                    for r in rows
                ]
            self.written += append_csv(
                self.csv_path, rows, self.env, create_parent=self.create_parent
            )
