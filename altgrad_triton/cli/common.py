"""What every entry point shares: one-line errors on stderr, exit code 2, no traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

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
    printed as written."""
    description, _, rest = doc.partition("\n\n")
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=rest if epilog is None else epilog,
    )


def one_line_parse_errors(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser``, changed to raise a UserError for a bad option (one line on stderr, exit 2)
    instead of printing its usage block."""

    def error(message: str) -> NoReturn:
        raise UserError(f"{message} (see {parser.prog} --help)")

    parser.error = error  # type: ignore[method-assign]
    return parser
