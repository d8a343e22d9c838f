"""The one exception type that means "the user asked for something wrong".

The command-line entry points catch it and print its message as a single line on stderr,
exit code 2, no traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in a recipe, an option, a path or a checkpoint, explained in one line.

    ``exit_code`` is what the command exits with: 2 for a mistake; a run stopped on purpose
    says otherwise (130 after Ctrl-C, as a shell reports it), per error or per subclass."""

    exit_code: int = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


def one_line(error: BaseException, limit: int = 160) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters: an error that a
    table cell or a one-line report can hold (compiler errors run to pages)."""
    lines = str(error).strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > limit:
        first = first[: limit - 3] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__
