"""Files that are written whole or not at all, and JSON-lines files read as a killed run
leaves them.

A run can be stopped at any moment (Ctrl-C twice, a scheduler's SIGKILL, a full disk), and
the suite decides what is finished by the files that exist: a half-written
``results.json`` would mark a run done for ever. So whole files go through a temporary
file and one ``os.replace``; append-only logs (``metrics.jsonl``, the horizon results) may
end in a torn line, which readers skip.

Every write here goes through Python's own file objects and fails as an ``OSError`` that
names the file (a full disk, a read-only mount, a folder without permission), which the
trainer turns into one line saying what was kept. Writers that take a path report the same
faults in their own ways (``torch.save``: "unexpected pos"; safetensors: its own error
type), so callers hand them a file object through ``write_file``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import UserError


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never a
    part: a temporary file beside it, flushed to disk, then renamed over it. A failure is an
    OSError naming ``path``, the file the user knows, not the temporary one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write_file(tmp, lambda f: f.write(text.encode()))
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # a full disk gets its space back
        if isinstance(e, OSError) and e.filename == str(tmp):
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    return path


def write_file(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Create ``path`` by ``write(file)`` and flush it to disk; a failed write is an OSError
    naming ``path``, also where ``write`` turned it into an error of its own (``torch.save``
    answers a full disk mid-file with "unexpected pos", the OSError only its context)."""
    try:
        with open(path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except Exception as e:
        cause = _os_error_in(e)
        if cause is None:
            raise
        raise _naming(cause, path) from None


def append_line(path: str | Path, line: str) -> None:
    """Append ``line`` and a newline to ``path``, flushed (a reader sees whole lines, or a
    torn last one after a crash); a failure is an OSError naming ``path``."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
    except OSError as e:
        raise _naming(e, path) from None


def trim_epoch_lines(path: str | Path, next_epoch: int) -> None:
    """Keep the lines of a per-epoch JSON-lines file whose ``epoch`` is below ``next_epoch``
    (those a checkpoint covers), rewriting it whole and atomically, which also drops a
    torn last line; a missing file stays missing."""
    if Path(path).exists():
        rows = read_jsonl(path, required=("epoch",))
        for i, row in enumerate(rows, 1):
            epoch = row["epoch"]
            if not isinstance(epoch, int) or isinstance(epoch, bool):
                raise UserError(
                    f"{path}: its row {i} has epoch {epoch!r}, not an epoch number; the file "
                    "is damaged: put the run's own back, or remove that row"
                )
        kept = [row for row in rows if row["epoch"] < next_epoch]
        write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in kept))


def _os_error_in(error: BaseException | None) -> OSError | None:
    """The first OSError in ``error``'s chain of causes and contexts, if any."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def _naming(error: OSError, path: str | Path) -> OSError:
    if error.filename is not None or error.errno is None:
        return error
    return OSError(error.errno, error.strerror, str(path))


def read_json(path: str | Path, required: tuple[str, ...] = ()) -> dict:
    """A JSON object from a file, with the ``required`` keys; a one-line UserError naming
    the file if it is not UTF-8, not JSON, not an object, or lacks a key."""
    text = _read_utf8(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
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
