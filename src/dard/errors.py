"""User-facing errors.

Anything a user can cause (bad config, missing data, wrong checkpoint) raises :class:`DardError` with a
one-line message; the CLI prints it without a traceback and exits non-zero.
"""


class DardError(Exception):
    """An error caused by user input, reported as one line by the CLI."""
