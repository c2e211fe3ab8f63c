"""Paired statistics against hand-computed values: the exact McNemar test, Student's t, the across-seed interval."""

from __future__ import annotations

import math

import pytest

from dard.evaluation.report.paired import (
    PairedComparison,
    SeedTest,
    discordant,
    mcnemar_p,
    paired_comparison,
    t_critical,
    t_interval,
)


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (0, 0, 1.0),  # no discordant image: nothing to test
        (0, 5, 2 / 2**5),  # 2 * C(5,0) / 2^5 = 0.0625
        (5, 0, 0.0625),  # two-sided: symmetric in b and c
        (1, 9, 2 * (1 + 10) / 2**10),  # 22/1024 = 0.021484375
        (2, 8, 2 * (1 + 10 + 45) / 2**10),  # 112/1024 = 0.109375
        (3, 3, 1.0),  # 2 * (1 + 6 + 15 + 20) / 64 > 1: capped
        (0, 60, 2 / 2**60),  # far below what a float sum of probabilities would resolve from 1
    ],
)
def test_mcnemar_exact_two_sided_binomial(b: int, c: int, p: float) -> None:
    assert mcnemar_p(b, c) == pytest.approx(p, rel=1e-15)


def test_mcnemar_large_counts_stay_exact() -> None:
    # 500 vs 500 discordant: tail = (2^1000 + C(1000,500)) / 2, so p = 1 + C(1000,500)/2^1000 capped at 1
    assert mcnemar_p(500, 500) == 1.0
    # 400 vs 600: far in the tail, a small positive number (no overflow, no underflow to 0)
    assert 0 < mcnemar_p(400, 600) < 1e-9
    with pytest.raises(ValueError):
        mcnemar_p(-1, 3)


@pytest.mark.parametrize(
    ("df", "t"),
    [(1, 12.706205), (2, 4.302653), (3, 3.182446), (4, 2.776445), (5, 2.570582), (10, 2.228139), (30, 2.042272)],
)
def test_t_critical_matches_the_printed_table(df: int, t: float) -> None:
    assert t_critical(df) == pytest.approx(t, abs=5e-7)


def test_t_critical_other_levels_and_limits() -> None:
    assert t_critical(2, 0.90) == pytest.approx(2.919986, abs=5e-7)
    assert t_critical(1, 0.5) == pytest.approx(1.0, abs=1e-9)  # Cauchy: P(|T| < 1) = 1/2
    assert t_critical(2, 0.5) == pytest.approx(math.sqrt(2 / 3), abs=1e-9)  # df 2: P(|T|<t) = t / sqrt(t^2 + 2)
    assert t_critical(1000) == pytest.approx(1.962339, abs=5e-6)  # towards the normal 1.959964
    with pytest.raises(ValueError):
        t_critical(0)


def test_t_interval_of_three_seeds() -> None:
    mean, lo, hi = t_interval([0.01, 0.02, 0.03])  # mean 0.02, sample std 0.01
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert mean == pytest.approx(0.02) and lo == pytest.approx(0.02 - half, abs=1e-8)
    assert hi == pytest.approx(0.02 + half, abs=1e-8)
    assert t_interval([0.5]) == (0.5, None, None)


def test_discordant_counts() -> None:
    a = [True, True, False, False, True]
    b = [True, False, True, False, False]
    assert discordant(a, b) == (2, 1)
    with pytest.raises(ValueError):
        discordant(a, b[:3])


def test_paired_comparison_significance_rules() -> None:
    # seed 0: A right on 9 images B misses, B right on 1 A misses, of 100: p = 22/1024, difference +8 points
    a0 = [True] * 9 + [False] + [True] * 40 + [False] * 50
    b0 = [False] * 9 + [True] + [True] * 40 + [False] * 50
    cmp = paired_comparison("dard", "sat", "pgd20", [(0, a0, b0)])
    assert cmp.seeds == [SeedTest(0, 9, 1, 100, 22 / 1024)]
    assert cmp.mean == pytest.approx(0.08) and cmp.interval is None
    assert cmp.every_seed_significant and cmp.significant  # one seed, p < 0.05 in it
    # three seeds at +1, +2, +3 points, none significant alone (b, c = 2, 1 and so on): the interval decides
    seeds = [SeedTest(s, 1 + d, 1, 100, mcnemar_p(1 + d, 1)) for s, d in enumerate((1, 2, 3))]
    cmp = PairedComparison("dard", "pgdard", "pgd20", seeds)
    assert not cmp.every_seed_significant
    lo, hi = cmp.interval
    half = 4.302653 * 0.01 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((0.02 - half, 0.02 + half), abs=1e-8)
    assert lo < 0 < hi and not cmp.significant  # -0.48 .. +4.48 points straddles 0
    # the same spread shifted up: +5, +6, +7 points, the interval [3.5, 8.5] excludes 0
    seeds = [SeedTest(s, 1 + d, 1, 100, mcnemar_p(1 + d, 1)) for s, d in enumerate((5, 6, 7))]
    cmp = PairedComparison("dard", "pgdard", "pgd20", seeds)
    assert cmp.interval_excludes_zero and cmp.significant
    entry = cmp.to_dict()
    assert entry["mean_difference"] == pytest.approx(0.06) and entry["significant"] is True
    assert [s["b"] for s in entry["seeds"]] == [6, 7, 8]
    assert not PairedComparison("a", "b", "clean").significant  # no paired seed: nothing claimed
