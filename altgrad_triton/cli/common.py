"""What every entry point shares: one-line errors on stderr, exit code 2, no traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from importlib import metadata
from typing import NoReturn

from .. import __version__
from ..errors import UserError


def run_main(body: Callable[[], int | None]) -> int:
    """Run a command body; a UserError becomes ``error: <message>`` and its exit code (2
    unless it says otherwise)."""
    try:
        return body() or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: aborted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # piped into `head`, which stopped reading: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # for the exit flush
        return 141  # what a shell reports for SIGPIPE


def command_parser(prog: str, doc: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """The parser every command starts from: its module docstring's first paragraph as the
    description and, unless ``epilog`` is given, the rest of it (examples) below the options,
    printed as written; and ``--version``."""
    description, _, rest = doc.partition("\n\n")
    return with_version(
        argparse.ArgumentParser(
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


def one_line_parse_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser``, changed to raise a UserError for a bad option (one line on stderr, exit 2)
    instead of printing its usage block."""

    def error(message: str) -> NoReturn:
        raise UserError(f"{message} (see {parser.prog} --help)")

    parser.error = error  # type: ignore[method-assign]
    return parser
