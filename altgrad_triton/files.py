"""Files that are written whole or not at all, and JSON-lines files read as a killed run
leaves them.

A run can be stopped at any moment (Ctrl-C twice, a scheduler's SIGKILL, a full disk), and
the suite decides what is finished by the files that exist: a half-written
``results.json`` would mark a run done for ever. So whole files go through a temporary
file and one ``os.replace``; append-only logs (``metrics.jsonl``, the horizon results) may
end in a torn line, which readers skip.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import UserError


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a
    part: a temporary file beside it, flushed to disk, then renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> dict:
    """A JSON file, or a one-line UserError naming it if it cannot be parsed."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def read_jsonl(path: str | Path, missing_ok: bool = False) -> list[dict]:
    """The rows of a JSON-lines file; a torn last line (a writer killed mid-line) is
    skipped, a bad line elsewhere is a UserError naming it."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        if missing_ok:
            return []
        raise
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines):
                break
            raise UserError(f"{path}:{i}: not a JSON line") from None
    return rows
