"""User-facing errors.

Anything a user can cause (bad config, missing data, wrong checkpoint) raises :class:`DardError` with a
one-line message; the CLI prints it without a traceback and exits non-zero.
"""

from __future__ import annotations


class DardError(Exception):
    """An error caused by user input, reported as one line by the CLI."""


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` (e.g. a library's multi-line exception message) collapsed to one line, cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    if limit is not None and len(line) > limit:
        return line[: limit - 3] + "..."
    return line
