"""How every table shows a number: the one rounding of `dard eval`'s table, ``report.md``, ``results.csv``,
``results.tex`` and the RobustBench entries, so a number reads the same in each.

A value is rounded half up from its shortest decimal form (``repr``), not from its binary float: 5999 of 20,000
images is 29.995%, which is 30.00 (``f"{100 * 0.29995:.2f}"`` gave 29.99 beside a CSV's 29.9950, and 4801 and
4001 of 20,000, 24.005 and 20.005, went up and down).
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

__all__ = ["percent", "rounded"]


def rounded(value: float, digits: int, *, scale: float = 1.0, sign: bool = False) -> str:
    """``value * scale`` with ``digits`` decimals, rounded half up from the decimal forms of both (``-0.00`` is
    ``0.00``); ``sign``: a ``+`` before a number that is not negative. A value that is not finite is shown as
    Python shows it (``nan``)."""
    if not math.isfinite(value) or not math.isfinite(scale):
        return f"{value * scale:{'+' if sign else ''}.{digits}f}"
    exact = Decimal(repr(float(value))) * Decimal(repr(float(scale)))
    q = exact.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
    if q.is_zero():
        q = abs(q)  # a tiny negative difference is 0.00, not -0.00
    return format(q, "+f" if sign else "f")


def percent(fraction: float, digits: int = 2, *, sign: bool = False) -> str:
    """A fraction in percent (``0.29995`` -> ``29.995`` -> ``"30.00"``): :func:`rounded` at scale 100."""
    return rounded(fraction, digits, scale=100.0, sign=sign)
