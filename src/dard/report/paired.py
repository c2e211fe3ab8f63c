"""Paired statistics of two report rows evaluated on the same test images.

Two methods measured on the same images are compared image by image, not as two means with overlapping spreads:

- per seed, the exact McNemar test: of the images on which the two models disagree under one attack, ``b`` are
  right for A only and ``c`` for B only; under the null hypothesis (equal accuracy) each discordant image goes
  either way with probability 1/2, so the two-sided p-value is the exact binomial tail ``2 P(X <= min(b, c))``,
  ``X ~ Bin(b + c, 1/2)``, capped at 1;
- across seeds, the mean of the per-seed paired differences in accuracy (``d_s = (b - c) / n`` for ``n`` images)
  with a 95% interval that counts both sources of error: the spread across the ``k`` seeds (training noise,
  ``s^2 / k`` with ``s`` the sample std of the ``d_s``) and the test images' sampling error (``w^2``, ``w`` the
  mean over seeds of each seed's standard error over its images, :func:`image_se`; the seeds share their images,
  so their errors are not independent, and the mean of the standard errors bounds that of their mean). The
  interval is ``mean +- t_{0.975, df} sqrt(s^2 / k + w^2)`` with Welch-Satterthwaite's ``df`` (``k - 1`` where
  the seeds' spread dominates, towards the normal where the images' error does). A t interval of the seeds'
  spread alone is blind to the images: two seeds 55/45 and 56/45 of 1,000 images (p = 0.37 and 0.32) gave one
  of about +0.4 to +1.7 points, significant.

A difference is called significant when the McNemar p-value is below 0.05 in every paired seed with the same
sign in each (A ahead in every seed, or B in every seed), or when the across-seed interval excludes 0. Two seeds
each significant the other way round (DARD ahead by 1.7 AutoAttack points in one, SAT by 1.9 in the other) are a
difference that changes with the seed, not one between the methods.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ALPHA",
    "PairedComparison",
    "SeedTest",
    "difference_interval",
    "discordant",
    "image_se",
    "mcnemar_p",
    "paired_comparison",
    "t_critical",
    "t_interval",
]

#: the significance level of every test and interval in a report
ALPHA = 0.05

#: the most degrees of freedom an interval's t quantile takes (t_{0.975, 1000} = 1.9623, the normal's 1.9600): the
#: closed form sums df / 2 terms
DF_CAP = 1000


def mcnemar_p(b: int, c: int) -> float:
    """The two-sided exact McNemar p-value of ``b`` and ``c`` discordant pairs.

    ``min(1, 2 * sum_{k <= min(b, c)} C(b + c, k) / 2^(b + c))``, computed in integers and divided once (correctly
    rounded), so it is exact to double precision for any count; 1 when there is no discordant pair.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, not b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    # C(n, k + 1) = C(n, k) (n - k) / (k + 1), exact in integers: math.comb per term made this quadratic in big-integer
    # work (5.6 s for b + c = 4,900, a clean column of two very different rows; a report tests hundreds of pairs)
    term = tail = 1
    for k in range(min(b, c)):
        term = term * (n - k) // (k + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n)


def _t_central(t: float, df: int) -> float:
    """``P(|T| < t)`` for Student's t with integer ``df`` degrees of freedom, by its closed form.

    With ``theta = atan(t / sqrt(df))``: for odd ``df`` it is ``(2/pi) (theta + sin(theta) cos(theta) S)`` with
    ``S = 1 + (2/3) cos^2 + (2*4)/(3*5) cos^4 + ...`` up to ``cos^(df-3)`` (``S = 0`` for df = 1); for even ``df``
    it is ``sin(theta) S`` with ``S = 1 + (1/2) cos^2 + (1*3)/(2*4) cos^4 + ...`` up to ``cos^(df-2)``. Finite sums
    of ``df / 2`` terms, so no special function (and no scipy) is needed.
    """
    theta = math.atan(t / math.sqrt(df))
    cos2 = math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2:
        if df == 1:
            return 2 * theta / math.pi
        for k in range(1, (df - 3) // 2 + 1):  # term k: prod_{j<=k} 2j/(2j+1) cos^(2k)
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    for k in range(1, (df - 2) // 2 + 1):  # term k: prod_{j<=k} (2j-1)/(2j) cos^(2k)
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


@functools.cache  # one per degrees of freedom in a report of hundreds of rows
def t_critical(df: int, level: float = 1 - ALPHA) -> float:
    """The two-sided critical value of Student's t: ``t`` with ``P(|T| < t) = level`` (``t_{0.975, df}`` for the
    default 95%), found by bisection on the closed-form distribution (:func:`_t_central`) to 1e-12."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, not {df}")
    lo, hi = 0.0, 1.0
    while _t_central(hi, df) < level:
        hi *= 2
    while hi - lo > 1e-12 * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central(mid, df) < level else (lo, mid)
    return (lo + hi) / 2


def t_interval(values: Sequence[float], level: float = 1 - ALPHA) -> tuple[float, float | None, float | None]:
    """``(mean, lo, hi)``: the mean of ``values`` and its two-sided t interval (``lo``/``hi`` None below 2 values)."""
    k = len(values)
    if k == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / k
    if k < 2:
        return mean, None, None
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (k - 1))
    half = t_critical(k - 1, level) * sd / math.sqrt(k)
    return mean, mean - half, mean + half


def image_se(b: int, c: int, n: int) -> float:
    """The standard error, over the ``n`` test images, of one seed's paired difference ``(b - c) / n``: each image
    differs by +1 (``b`` of them), -1 (``c``) or 0, so their sample variance is ``((b + c) - (b - c)^2 / n) / (n - 1)``
    and the error of their mean its square root over ``sqrt(n)`` (0 below 2 images)."""
    if n < 2:
        return 0.0
    variance = ((b + c) - (b - c) ** 2 / n) / (n - 1)
    return math.sqrt(max(variance, 0.0) / n)


def difference_interval(seeds: Sequence[SeedTest], level: float = 1 - ALPHA) -> tuple[float, float] | None:
    """The two-sided interval of the mean paired difference over ``seeds`` (module docstring): ``mean +- t_df
    sqrt(s^2 / k + w^2)``, ``s^2 / k`` the seeds' spread and ``w`` the mean of their :func:`image_se`, ``df`` by
    Welch-Satterthwaite (``(s^2/k + w^2)^2 / ((s^2/k)^2 / (k - 1))``, rounded down, at most :data:`DF_CAP`). None
    below 2 seeds (one seed has its McNemar test), or where neither source has any error (every seed's images
    agree, or all differ one way)."""
    k = len(seeds)
    if k < 2:
        return None
    differences = [s.difference for s in seeds]
    mean = math.fsum(differences) / k
    between = math.fsum((d - mean) ** 2 for d in differences) / (k - 1) / k
    within = (math.fsum(image_se(s.b, s.c, s.n) for s in seeds) / k) ** 2
    variance = between + within
    if variance <= 0:
        return None
    df = DF_CAP if between == 0 else min(DF_CAP, int(variance**2 / (between**2 / (k - 1))))
    half = t_critical(df, level) * math.sqrt(variance)
    return mean - half, mean + half


def discordant(a: Collection[bool], b: Collection[bool]) -> tuple[int, int]:
    """``(b, c)`` of two per-image outcome sequences of one length: images right for ``a`` only, right for ``b``
    only."""
    if len(a) != len(b):
        raise ValueError(f"outcome sequences of different lengths ({len(a)} and {len(b)})")
    # as arrays: a report counts hundreds of pairs of 10,000 images (a Python loop over a NumPy array was 12 ms each)
    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    return int(np.count_nonzero(x & ~y)), int(np.count_nonzero(y & ~x))


@dataclass(frozen=True)
class SeedTest:
    """One seed's McNemar test: ``b`` images right for A only, ``c`` right for B only, out of ``n``."""

    seed: int | None
    b: int
    c: int
    n: int
    p: float

    @property
    def difference(self) -> float:
        """A's accuracy minus B's on these images (the concordant images cancel)."""
        return (self.b - self.c) / self.n if self.n else 0.0


@dataclass
class PairedComparison:
    """Row A against row B on one metric (a column of the main table), over the seeds both rows have."""

    a: str
    b: str
    metric: str
    seeds: list[SeedTest] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # seeds left out and why

    @property
    def mean(self) -> float | None:
        """The mean paired difference over the seeds (None without a paired seed)."""
        return math.fsum(s.difference for s in self.seeds) / len(self.seeds) if self.seeds else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% interval of the mean paired difference across seeds (:func:`difference_interval`); None below
        2 seeds."""
        return difference_interval(self.seeds)

    @property
    def every_seed_significant(self) -> bool:
        """p < 0.05 in every paired seed, each with A ahead, or each with B ahead."""
        signs = {s.b > s.c for s in self.seeds}
        return bool(self.seeds) and all(s.p < ALPHA for s in self.seeds) and len(signs) == 1

    @property
    def interval_excludes_zero(self) -> bool:
        ci = self.interval
        return ci is not None and (ci[0] > 0 or ci[1] < 0)

    @property
    def significant(self) -> bool:
        """p < 0.05 by McNemar in every paired seed, all one way, or a 95% across-seed interval that excludes 0."""
        return self.every_seed_significant or self.interval_excludes_zero

    def to_dict(self) -> dict[str, object]:
        """The JSON entry of ``results.json``."""
        ci = self.interval
        return {
            "a": self.a,
            "b": self.b,
            "metric": self.metric,
            "seeds": [{"seed": s.seed, "b": s.b, "c": s.c, "n": s.n, "p": s.p} for s in self.seeds],
            "mean_difference": self.mean,
            "ci95": list(ci) if ci else None,
            "significant": self.significant,
            "notes": list(self.notes),
        }


def paired_comparison(
    a: str, b: str, metric: str, per_seed: Sequence[tuple[int | None, Collection[bool], Collection[bool]]]
) -> PairedComparison:
    """Compare rows ``a`` and ``b`` on ``metric`` from ``(seed, outcomes of a, outcomes of b)`` per paired seed
    (each pair over the same images, in the same order)."""
    out = PairedComparison(a, b, metric)
    for seed, oa, ob in per_seed:
        nb, nc = discordant(oa, ob)
        out.seeds.append(SeedTest(seed, nb, nc, len(oa), mcnemar_p(nb, nc)))
    return out
