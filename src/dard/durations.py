"""Durations as people write them (``8m``, ``90s``, ``1h30m``, ``480``): the one parser, for `dard train
--time-budget` and `dard experiment --time-budget`.

A leaf module (it needs only :mod:`dard.errors`), so a command that takes a duration does not import the layer that
schedules experiments.
"""

from __future__ import annotations

import re

from dard.errors import DardError

__all__ = ["parse_duration"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | float) -> float:
    """Seconds in ``text``: a number (seconds) or number-unit pairs, e.g. ``8m``, ``90s``, ``1h30m``, ``2.5h``."""
    raw = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d*)?", raw):
        return float(raw)
    parts = re.findall(r"(\d+(?:\.\d*)?)([smhd])", raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        raise DardError(f"time budget '{text}' is not a duration such as 8m, 90s, 1h30m or 480 (seconds)")
    return sum(float(n) * _UNITS[u] for n, u in parts)
