"""The one exception type that means "the user asked for something wrong".

The command-line entry points catch it and print its message as a single line on stderr
(``error: ...``, or ``stopped: ...`` for a run stopped on purpose), exit code 2 unless it
says otherwise, no traceback. Everything else is a bug and keeps its traceback. ``one_line``
turns any error into the one line such a message quotes.
"""

import re


class UserError(Exception):
    """A mistake in a recipe, an option, a path or a checkpoint, explained in one line.

    ``exit_code`` is what the command exits with: 2 for a mistake; a run stopped on purpose
    says otherwise (130 after Ctrl-C, as a shell reports it), per error or per subclass."""

    exit_code: int = 2
    label: str = "error"
    """What the command line prints before the message: ``error``, or ``stopped`` for a run
    that stopped on purpose and saved (Ctrl-C is no error)."""

    def __init__(self, message: str, exit_code: int | None = None, label: str | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
        if label is not None:
            self.label = label


_NOISE = re.compile(
    r"Got the following error when running the callback: (\w+: )?|"
    r"\[[^\]\s]*\.(cc|cpp|h|hpp):\d+\] "
)
"""What torch.distributed wraps its errors in: callback preambles, C++ source locations."""


def one_line(error: BaseException | str, limit: int | None = 160, *, typed: bool = True) -> str:
    """The gist of an error in one line that a table cell or a message can hold.

    The first line of its message (compiler errors run to pages), whitespace runs collapsed,
    torch.distributed's wrapping dropped, cut to ``limit`` characters (None: whole), after
    ``Type: `` unless ``typed=False``; a message given as a string is kept as it is.
    """
    lines = _NOISE.sub("", str(error)).strip().splitlines()
    first = " ".join(lines[0].split()) if lines else ""
    if limit is not None and len(first) > limit:
        first = first[: limit - 3] + "..."
    name = type(error).__name__
    if isinstance(error, str) or not typed:
        return first or name
    return f"{name}: {first}" if first else name
