"""Durations as people write them (``8m``, ``90s``, ``1h30m``, ``480``): the one parser, for `dard train
--time-budget` and `dard experiment --time-budget`.

A leaf module (it needs only :mod:`dard.errors`), so a command that takes a duration does not import the layer that
schedules experiments.
"""

from __future__ import annotations

import re

from dard.errors import DardError, shown

__all__ = ["parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: the longest budget taken, a year: a longer one (``1e400`` digits made it infinite) is a typo, not a plan
MAX_SECONDS = 366 * 86400


def parse_duration(text: str | float) -> float:
    """Seconds in ``text``: a number (seconds) or number-unit pairs, each unit once and largest first, e.g. ``8m``,
    ``90s``, ``1h30m``, ``2.5h``; at most :data:`MAX_SECONDS`."""
    raw = str(text).strip().lower()
    # ASCII digits only: re's \d and float() also take other scripts' digits ("٣h" was 3 hours)
    number = r"[0-9]+(?:\.[0-9]*)?"
    bare = re.fullmatch(number, raw) is not None  # seconds, no unit
    parts = [(raw, "s")] if bare else re.findall(f"({number})([smhd])", raw)
    units = [u for _, u in parts]
    whole = bare or "".join(n + u for n, u in parts) == raw
    if not parts or not whole or units != sorted(set(units), key="dhms".index):  # ("1h1h", "30m1h": a typo)
        raise DardError(f"time budget {shown(text)} is not a duration such as 8m, 90s, 1h30m or 480 (seconds)")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not seconds <= MAX_SECONDS:  # (an infinite one too: a number of 400 digits)
        raise DardError(f"time budget {shown(text)} is over a year ({MAX_SECONDS} s); give a duration such as 8m or 2h")
    return seconds
