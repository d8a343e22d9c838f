"""What every entry point shares: one-line errors on stderr, no traceback; exit code 2 for
a user's mistake (a bad option, a file that is not what it should be), 1 for a fault of the
machine (a full or read-only disk)."""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from collections.abc import Callable
from importlib import metadata
from typing import NoReturn

from .. import __version__
from ..errors import UserError


def run_main(body: Callable[[], int | None]) -> int:
    """Run a command body; a UserError becomes ``error: <message>`` (its ``label``) and its
    exit code (2 unless it says otherwise)."""
    try:
        return body() or 0
    except UserError as e:
        print(f"{e.label}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: aborted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # piped into `head`, which stopped reading: not an error
        _stdout_to_devnull()
        return 141  # what a shell reports for SIGPIPE
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        try:  # what is still buffered for stdout would fail again at exit, with a traceback
            sys.stdout.flush()
        except OSError:
            _stdout_to_devnull()
        return 1 if e.errno in ENVIRONMENT_FAULTS else 2


ENVIRONMENT_FAULTS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO, errno.ENOMEM}
"""Errors of the machine, not of what the user asked: exit code 1."""


def os_error_line(error: OSError) -> str:
    """A file-system error as ``<file>: <what>``, one line."""
    what = error.strerror or str(error)
    if isinstance(error, FileExistsError | NotADirectoryError):
        what += " (a file stands where a folder is needed)"
    elif isinstance(error, IsADirectoryError):
        what += " (a folder stands where a file is needed)"
    where = next(  # of a rename, its destination: the file the user named
        (f for f in (error.filename2, error.filename) if f is not None), "the output"
    )
    return " ".join(f"{where}: {what}".split())


def _stdout_to_devnull() -> None:
    """Point stdout at /dev/null, for the flush at exit."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def command_parser(prog: str, doc: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser every command starts from: its module docstring's first paragraph as the
    description and, unless ``epilog`` is given, the rest of it (examples) below the options,
    printed as written; and ``--version``."""
    description, _, rest = doc.partition("\n\n")
    return with_version(
        CommandParser(
            prog=prog,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=rest if epilog is None else epilog,
        )
    )


def versions(prog: str) -> str:
    """``prog``'s version line: the package's, torch's and Triton's (from their installed
    metadata, so that nothing is imported)."""

    def of(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"{prog} {__version__} (torch {of('torch')}, triton {of('triton')})"


class _VersionAction(argparse.Action):
    """``--version``: print ``versions`` and exit (computed only when asked)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object):
        super().__init__(option_strings, dest, nargs=0, help="print the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        print(versions(parser.prog))
        parser.exit()


def with_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` with a ``--version`` option."""
    parser.add_argument("--version", action=_VersionAction)
    return parser


def number_from(low: float, *, inclusive: bool = True) -> Callable[[str], float]:
    """An option type: a finite number from ``low`` up (above ``low`` unless ``inclusive``).
    float() alone takes "nan", "inf" and negative times, which the timers then act on."""
    sign = ">=" if inclusive else ">"

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {sign} {low:g}, got {text!r}"
            )
        return value

    return number


class CommandParser(argparse.ArgumentParser):
    """A parser whose bad option is a UserError (one line on stderr, exit 2), not a usage
    block; every command's parser is one."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")
