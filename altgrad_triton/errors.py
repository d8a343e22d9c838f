"""The one exception type that means "the user asked for something wrong".

The command-line entry points catch it and print its message as a single line on stderr,
exit code 2, no traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in a recipe, an option, a path or a checkpoint, explained in one line."""
