"""User-facing errors.

Anything a user can cause (bad config, missing data, wrong checkpoint) raises :class:`DardError` with a
one-line message; the CLI prints it without a traceback and exits non-zero.
"""

from __future__ import annotations

import reprlib

#: the most characters of a user's value an error message echoes (a YAML alias chain expands to megabytes)
SHOWN_CHARS = 200

# A bounded repr: nested containers are cut at a few levels and items, so even a value whose full repr would
# take gigabytes (shared YAML aliases) is shown in bounded time and space.
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxdict = 6
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = SHOWN_CHARS


class DardError(Exception):
    """An error caused by user input, reported as one line by the CLI."""

    #: raised alike by every process of a torchrun job (:func:`dard.training.distributed.agree`): rank 0 says it
    every_rank: bool = False


# Characters a terminal acts on rather than shows (controls, bidirectional overrides, anything Python does not
# call printable): a message that echoes a file's or a lock's text must not move the cursor, recolour the terminal
# or reorder what it shows; they are shown as escapes (\x1b, \u202e).
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escaped(line: str) -> str:
    if line.isprintable() and not _BIDI.intersection(line):
        return line
    return "".join(c if c.isprintable() and c not in _BIDI else ascii(c)[1:-1] for c in line)


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` (e.g. a library's multi-line exception message) collapsed to one line (runs of whitespace, newlines
    included, become one space; other control characters are shown escaped, ``\\x1b``), cut to ``limit``
    characters."""
    line = _escaped(" ".join(str(text).split()))
    if limit is not None and len(line) > limit:
        return line[: limit - 3] + "..."
    return line


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message: one line, at most ``limit`` characters, computed in bounded time."""
    return one_line(_REPR.repr(value), limit)
