"""Binomial confidence intervals for accuracies measured on a finite test set (Wilson score interval)."""

from __future__ import annotations

import math

__all__ = ["CI_BELOW", "Z95", "wilson_interval"]

#: the two-sided 95% normal quantile
Z95 = 1.959963984540054
#: accuracies on fewer test points than this are shown with their 95% interval (on 10,000 it is within +-1 point)
CI_BELOW = 10_000


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``accuracy`` observed on ``n`` points (95% by default).

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``: unlike the normal approximation it stays inside
    [0, 1] and is not empty at 0% or 100%. ``(nan, nan)`` for ``n < 1``.
    """
    if n < 1:
        return math.nan, math.nan
    p = min(max(float(accuracy), 0.0), 1.0)
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return max(0.0, centre - half), min(1.0, centre + half)
