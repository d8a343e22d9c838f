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


def read_json(path: str | Path, required: tuple[str, ...] = ()) -> dict:
    """A JSON object from a file, with the ``required`` keys; a one-line UserError naming
    the file if it is not UTF-8, not JSON, not an object, or lacks a key."""
    text = _read_utf8(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return _object(data, required, str(path))


def read_jsonl(
    path: str | Path, missing_ok: bool = False, required: tuple[str, ...] = ()
) -> list[dict]:
    """The rows of a JSON-lines file, each an object with the ``required`` keys; a torn last
    line (a writer killed mid-line) is skipped, any other bad line is a UserError naming it."""
    try:
        lines = _read_utf8(path).splitlines()
    except FileNotFoundError:
        if missing_ok:
            return []
        raise
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                break
            raise UserError(f"{path}:{i}: not a JSON line") from None
        rows.append(_object(row, required, f"{path}:{i}"))
    return rows


def _read_utf8(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _object(data: object, required: tuple[str, ...], where: str) -> dict:
    if not isinstance(data, dict):
        keys = f" with {', '.join(required)}" if required else ""
        raise UserError(f"{where}: expected a JSON object{keys}, got {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise UserError(f"{where}: lacks {', '.join(repr(k) for k in missing)}")
    return data
