"""Paired statistics against hand-computed values: the exact McNemar test, Student's t, the across-seed interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dard.report.paired import (
    PairedComparison,
    SeedTest,
    difference_interval,
    discordant,
    image_se,
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


@pytest.mark.parametrize("b, c", [(263, 1896), (1896, 263), (701, 702), (0, 3000), (1234, 987)])
def test_mcnemar_is_its_definition_at_the_counts_of_real_reports(b: int, c: int) -> None:
    # the tail is summed term by term from C(n, k + 1) = C(n, k) (n - k) / (k + 1): the same integers as the
    # definition's math.comb, so the same correctly rounded float
    n = b + c
    assert mcnemar_p(b, c) == min(1.0, 2 * sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n)


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
    assert discordant(np.array(a), np.array(b)) == (2, 1)  # a record's outcomes are NumPy arrays
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
    # by hand: the seeds' spread s^2/k = 0.01^2 / 3; each seed's error over its images sqrt(((b+c) - (b-c)^2/n)
    # / (n-1) / n): sqrt(2.99/99/100), sqrt(3.96/99/100) = 0.02, sqrt(4.91/99/100); df = V^2 / ((s^2/k)^2 / 2)
    # = 330 (t_{0.975, 330} = 1.967179, as z + (z^3 + z) / (4 df) + (5z^5 + 16z^3 + 3z) / (96 df^2) gives it)
    w = (math.sqrt(2.99 / 9900) + 0.02 + math.sqrt(4.91 / 9900)) / 3
    variance = 0.01**2 / 3 + w**2
    assert int(variance**2 / ((0.01**2 / 3) ** 2 / 2)) == 330
    half = 1.967179 * math.sqrt(variance)
    lo, hi = cmp.interval
    assert (lo, hi) == pytest.approx((0.02 - half, 0.02 + half), abs=1e-6)
    assert lo < 0 < hi and not cmp.significant  # -2.07 .. +6.07 points straddles 0
    # the same spread shifted up: +5, +6, +7 points, the interval [+0.44, +11.56] excludes 0
    seeds = [SeedTest(s, 1 + d, 1, 100, mcnemar_p(1 + d, 1)) for s, d in enumerate((5, 6, 7))]
    cmp = PairedComparison("dard", "pgdard", "pgd20", seeds)
    assert cmp.interval == pytest.approx((0.004404, 0.115596), abs=1e-6)
    assert cmp.interval_excludes_zero and cmp.significant
    entry = cmp.to_dict()
    assert entry["mean_difference"] == pytest.approx(0.06) and entry["significant"] is True
    assert [s["b"] for s in entry["seeds"]] == [6, 7, 8]
    assert not PairedComparison("a", "b", "clean").significant  # no paired seed: nothing claimed


def test_seeds_significant_in_opposite_directions_are_not_a_difference() -> None:
    # the campaign's DARD and SAT on AutoAttack's first 1,000 images: seed 0 41/24 (DARD ahead, p = 0.046), seed 1
    # 32/51 (SAT ahead, p = 0.048); "p < 0.05 in every seed" marked a mean of -0.10 points significant
    seeds = [SeedTest(0, 41, 24, 1000, mcnemar_p(41, 24)), SeedTest(1, 32, 51, 1000, mcnemar_p(32, 51))]
    assert all(s.p < 0.05 for s in seeds)
    cmp = PairedComparison("dard", "sat", "autoattack", seeds)
    assert cmp.mean == pytest.approx(-0.001) and not cmp.every_seed_significant and not cmp.significant
    assert cmp.to_dict()["significant"] is False
    # the same two p-values with one side ahead in both is a difference
    seeds[1] = SeedTest(1, 51, 32, 1000, mcnemar_p(51, 32))
    assert PairedComparison("dard", "sat", "autoattack", seeds).significant
    seeds = [SeedTest(s, 24, 41, 1000, mcnemar_p(24, 41)) for s in (0, 1)]  # B ahead in both
    assert PairedComparison("dard", "sat", "autoattack", seeds).every_seed_significant


def test_the_interval_counts_the_test_images_error_not_only_the_seeds_spread() -> None:
    # two seeds 55/45 and 56/45 of 1,000 images (+1.0 and +1.1 points, p = 0.37 and 0.32): a t interval of the
    # seeds' spread alone, +1.05 +- 12.706 * 0.0005 = [+0.41, +1.69], excluded 0 and marked the difference
    # significant, blind to the images' error of about 1 point per seed
    seeds = [SeedTest(0, 55, 45, 1000, mcnemar_p(55, 45)), SeedTest(1, 56, 45, 1000, mcnemar_p(56, 45))]
    assert t_interval([s.difference for s in seeds])[1] == pytest.approx(0.004147, abs=1e-6)  # the old one
    assert image_se(55, 45, 1000) == pytest.approx(0.01, abs=1e-12)  # (100 - 0.1) / 999 / 1000 = 1e-4
    assert image_se(56, 45, 1000) == pytest.approx(math.sqrt((101 - 0.121) / 999 / 1000), abs=1e-12)
    w = (0.01 + math.sqrt((101 - 0.121) / 999 / 1000)) / 2
    half = 1.962339 * math.sqrt(0.0005**2 + w**2)  # s^2/k = 0.0005^2; df = V^2 / (s^2/k)^2 = 162,000: capped
    cmp = PairedComparison("dard", "sat", "autoattack", seeds)
    assert cmp.interval == pytest.approx((0.0105 - half, 0.0105 + half), abs=1e-6)
    assert not cmp.interval_excludes_zero and not cmp.significant
    # seeds that all differ by the same amount (b/c 1/0 of 100 twice, p = 1): no spread, the images' error alone
    # (an interval of no width excluded 0 for them once)
    seeds = [SeedTest(s, 1, 0, 100, mcnemar_p(1, 0)) for s in (0, 1)]
    cmp = PairedComparison("dard", "sat", "pgd20", seeds)
    half = 1.962339 * math.sqrt(0.99 / 99 / 100)
    assert cmp.mean == pytest.approx(0.01) and cmp.interval == pytest.approx((0.01 - half, 0.01 + half), abs=1e-6)
    assert not cmp.interval_excludes_zero and not cmp.significant
    assert cmp.to_dict()["significant"] is False
    assert difference_interval(seeds[:1]) is None  # one seed: its McNemar test alone
    same = [SeedTest(s, 0, 0, 100, 1.0) for s in (0, 1)]  # no image differs in either seed: no error to bound
    assert difference_interval(same) is None and not PairedComparison("a", "b", "clean", same).significant
    # every seed significant on its own still is, with or without a spread
    seeds = [SeedTest(s, 20, 0, 100, mcnemar_p(20, 0)) for s in (0, 1)]
    assert PairedComparison("dard", "sat", "pgd20", seeds).significant


# ------------------------------------------------------------------------------------------------ in a report


def _bits(right_a: int, right_b: int, both: int, n: int = 100) -> tuple[list[bool], list[bool]]:
    """Outcomes of two models on n images: ``right_a`` right for A only, ``right_b`` for B only, ``both`` for both."""
    a = [True] * right_a + [False] * right_b + [True] * both
    b = [False] * right_a + [True] * right_b + [True] * both
    return a + [False] * (n - len(a)), b + [False] * (n - len(b))


def _three_rows(tmp_path, monkeypatch) -> list:
    """dard, sat and pgdard runs of seeds 0 and 1 whose PGD-20 outcomes differ as said below."""
    import numpy as np
    from tests.test_report import _make_run

    from dard.report import paired_section
    from dard.run_dir import RunRecord

    runs = {
        (m, s): RunRecord.load(_make_run(tmp_path, f"{m}-s{s}", s, m, 0.8, 0.5, teacher=None, aa=0.4))
        for m in ("dard", "sat", "pgdard")
        for s in (0, 1)
    }
    # pgd20: dard vs sat 9/1 (p = 22/1024) and 10/0 (p = 2/1024); dard vs pgdard 2/1 and 1/2; sat vs pgdard 0/9
    # and 0/10 (its own test is in the section only when named: pairs); clean: all three the same 80 images
    pgd = {0: {}, 1: {}}
    pgd[0]["dard"], pgd[0]["sat"] = _bits(9, 1, 40)
    pgd[1]["dard"], pgd[1]["sat"] = _bits(10, 0, 40)
    pgd[0]["pgdard"] = pgd[0]["dard"][:]
    pgd[0]["pgdard"][0], pgd[0]["pgdard"][1] = False, False  # 2 right for dard only ...
    pgd[0]["pgdard"][9] = True  # ... and 1 (sat's only image) right for pgdard only
    pgd[1]["pgdard"] = pgd[1]["dard"][:]
    pgd[1]["pgdard"][0] = False
    pgd[1]["pgdard"][60], pgd[1]["pgdard"][61] = True, True
    table = {id(r.evals["best"]): (m, s) for (m, s), r in runs.items()}
    idx = ("cifar10", "test", 100, None)

    def outcomes(rec, key):
        m, s = table[id(rec)]
        if key == "clean":
            return idx, np.array([True] * 80 + [False] * 20)
        return (idx, np.array(pgd[s][m])) if key == "pgd20" else None

    monkeypatch.setattr(paired_section, "record_outcomes", outcomes)
    return list(runs.values())


def test_report_marks_and_lists_paired_differences(tmp_path, monkeypatch) -> None:
    import json

    from tests.test_report import _table

    from dard.report import build_report

    out = tmp_path / "r"
    md = build_report(_three_rows(tmp_path, monkeypatch), out, pairs=[("sat", "pgdard")]).read_text()
    main = _table(md)
    assert main["sat"]["PGD-20"].endswith(" †") and main["dard"]["PGD-20"].endswith(" ‡")
    assert not main["pgdard"]["PGD-20"].endswith("†") and main["pgdard"]["PGD-20"].endswith(" ‡")
    assert "†" not in main["sat"]["Clean"]  # identical clean outcomes: b = c = 0, p = 1, difference 0
    assert "Marks: a significant difference († from `dard`, ‡ from `sat`)" in md
    rows = [
        ln for ln in md.split("## Paired comparisons", 1)[1].split("\n## ", 1)[0].splitlines() if ln.startswith("| ")
    ]
    dard_sat = next(r for r in rows if r.startswith("| dard | sat | PGD-20 |"))
    assert "s0: 9/1 of 100, p=0.0215; s1: 10/0 of 100, p=0.00195" in dard_sat and "| +9.00 |" in dard_sat
    # the seeds' spread s^2/k = 0.0002 / 2 and the images' error w, the mean of sqrt(((b+c) - (b-c)^2/n)/(n-1)/n):
    # df = V^2 / (s^2/k)^2 = 105, t_{0.975, 105} = 1.982815 (a t interval of the spread alone: [-3.71, +21.71])
    variance = 0.0001 + ((math.sqrt(9.36 / 9900) + math.sqrt(9 / 9900)) / 2) ** 2
    assert int(variance**2 / 0.0001**2) == 105
    half = 1.982815 * math.sqrt(variance)
    assert f"[{100 * (0.09 - half):+.2f}, {100 * (0.09 + half):+.2f}]" in dard_sat and dard_sat.endswith("| yes |")
    dard_pgdard = next(r for r in rows if r.startswith("| dard | pgdard | PGD-20 |"))
    assert "s0: 2/1 of 100, p=1; s1: 1/2 of 100, p=1" in dard_pgdard and "| +0.00 |" in dard_pgdard
    assert dard_pgdard.endswith("| no |")
    assert any(r.startswith("| sat | pgdard | PGD-20 |") for r in rows)  # the named pair
    res = json.loads((out / "results.json").read_text())["paired"]
    assert res["references"] == {"dard": "†", "sat": "‡"}
    entry = next(c for c in res["comparisons"] if (c["a"], c["b"], c["metric"]) == ("dard", "sat", "pgd20"))
    assert [(s["b"], s["c"]) for s in entry["seeds"]] == [(9, 1), (10, 0)] and entry["significant"] is True
    assert entry["seeds"][0]["p"] == pytest.approx(22 / 1024) and entry["mean_difference"] == pytest.approx(0.09)


def test_results_csv_carries_the_significance_marks(tmp_path, monkeypatch) -> None:
    # report.md and results.tex marked a row significantly different from DARD (†) or SAT (‡); results.csv, which
    # a spreadsheet or a plotting script reads, had no trace of the comparison
    import csv

    from dard.report import build_report

    out = tmp_path / "r"
    build_report(_three_rows(tmp_path, monkeypatch), out, formats=("md", "csv"))
    rows = {r["run"]: r for r in csv.DictReader((out / "results.csv").open(encoding="utf-8"))}
    assert rows["sat"]["pgd20_significant_vs_dard"] == "yes" and rows["dard"]["pgd20_significant_vs_sat"] == "yes"
    assert float(rows["sat"]["pgd20_p_vs_dard"]) == pytest.approx(22 / 1024)  # the larger of 22/1024 and 2/1024
    assert rows["pgdard"]["pgd20_significant_vs_dard"] == "no" and rows["pgdard"]["pgd20_p_vs_dard"] == "1.0"
    assert rows["pgdard"]["pgd20_significant_vs_sat"] == "yes"
    assert rows["sat"]["clean_significant_vs_dard"] == "no" and rows["sat"]["clean_p_vs_dard"] == "1.0"
    # the reference row against itself, and a column with no outcomes: blank, not "no"
    assert rows["dard"]["pgd20_significant_vs_dard"] == rows["dard"]["pgd20_p_vs_dard"] == ""
    assert rows["sat"]["worst_case_significant_vs_dard"] == rows["sat"]["fgsm_p_vs_dard"] == ""
    assert "autoattack_clean_significant_vs_dard" not in rows["sat"]  # its robust column is the one compared


def test_rows_on_other_images_are_not_paired(tmp_path, monkeypatch) -> None:
    import numpy as np
    from tests.test_report import _make_run

    from dard.report import build_report, paired_section
    from dard.run_dir import RunRecord

    runs = [
        RunRecord.load(_make_run(tmp_path, f"{m}-s0", 0, m, 0.8, 0.5, teacher=None, aa=0.4)) for m in ("dard", "sat")
    ]
    first = id(runs[0].evals["best"])

    def outcomes(rec, key):
        start = 0 if id(rec) == first else 100  # the second run was evaluated on the first 200 images
        return ("cifar10", "test", start + 100, None), np.ones(100, dtype=bool)

    monkeypatch.setattr(paired_section, "record_outcomes", outcomes)
    md = build_report(runs, tmp_path / "r").read_text()
    assert "dard vs sat, pgd20: seed 0: evaluated on other images" in md and "Nothing paired:" in md
    assert "†" not in md.split("## Sanity", 1)[0].split("| Run |", 1)[1]


def test_rows_with_other_seeds_say_which_seeds_were_paired(tmp_path, monkeypatch) -> None:
    # dard of seeds 0 and 1 against sat of seed 0: the paired mean took seed 0 alone beside a main-table mean over
    # both of dard's seeds, and the seed left out was not named
    from dard.report import build_report

    runs = [r for r in _three_rows(tmp_path, monkeypatch) if r.name != "sat-s1"]
    md = build_report(runs, tmp_path / "r").read_text()
    paired = md.split("## Paired comparisons", 1)[1].split("\n## ", 1)[0]
    assert "| dard | sat | PGD-20 | s0: 9/1 of 100, p=0.0215 |" in paired
    # one line per row and the seeds it has alone, naming the rows that lack them
    assert "- dard: seed 1 is in its main-table mean but not paired with sat, which lacks it" in paired
    assert "- pgdard: seed 1 is in its main-table mean but not paired with sat, which lacks it" in paired
    assert paired.count("main-table mean") == 2  # dard vs pgdard share their seeds


def test_outcomes_are_read_from_the_record(tmp_path) -> None:
    """record_outcomes reads the evaluation record's own outcomes (clean, an attack, AutoAttack and its subset's
    clean), and a report pairs two real run folders by them."""
    import numpy as np
    from tests.test_report import _make_run, _table

    from dard.evaluation.outcomes import encode_outcomes
    from dard.report import build_report
    from dard.report.columns import AA_CLEAN, AA_KEY
    from dard.report.paired_section import record_outcomes
    from dard.run_dir import RunDir, RunRecord

    def write(path, pgd: list[bool]) -> None:
        run = RunDir(path)
        rec = run.read_eval("best")
        rec.clean.outcomes = encode_outcomes(np.array([True] * 80 + [False] * 20))
        rec.attacks["pgd20"].correct, rec.attacks["pgd20"].outcomes = sum(pgd), encode_outcomes(np.array(pgd))
        rec.worst_case.correct = min(rec.worst_case.correct, sum(pgd))  # it is taken over pgd20 too
        sub = rec.autoattack_subset
        # the subset is the record's first 20 images: its clean outcomes are the record's there
        sub.clean.correct, sub.clean.outcomes = 20, encode_outcomes(np.array([True] * 20))
        run.write_eval("best", rec)

    a, b = _bits(20, 0, 30)  # dard 50 right, sat 30, sat's all among dard's: b = 20, c = 0, p = 2^-19
    paths = [_make_run(tmp_path, f"{m}-s0", 0, m, 0.8, 0.5, teacher=None, aa=0.4) for m in ("dard", "sat")]
    write(paths[0], a)
    write(paths[1], b)
    rec = RunRecord.load(paths[0]).evals["best"]
    images, bits = record_outcomes(rec, "pgd20")
    assert images == ("cifar10", "test", 100, None) and bits.tolist() == a
    assert record_outcomes(rec, "clean")[1].sum() == 80
    assert record_outcomes(rec, AA_CLEAN)[0] == ("cifar10", "test", 20, None)  # the subset's own images
    assert record_outcomes(rec, AA_KEY) is None  # AutoAttack's outcomes not recorded in this record
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r", formats=("md", "tex")).read_text()
    main = _table(md)
    assert main["sat"]["PGD-20"] == "30.00 †" and main["dard"]["PGD-20"] == "50.00 ‡"
    tex = (tmp_path / "r" / "results.tex").read_text()
    assert "sat & 80.0 & 30.0$^{\\dagger}$ & 100.0 & 40.0 & 30.0 \\\\" in tex
    assert "% marks: significantly different from (\\dagger dard, \\ddagger sat)" in tex
    assert "on the same images: exact McNemar p < 0.05 in every seed" in tex  # the test the marks stand for
    assert "| dard | sat | PGD-20 | s0: 20/0 of 100, p=1.9e-06 | +20.00 | — | yes |" in md


def _dard_and_sat_report(tmp_path, edit) -> str:
    """The report.md of a dard and a sat run of seed 0 on the same 100 images (80 correct clean, the first 20 the
    AutoAttack subset's), each record changed by ``edit(name, record, outcomes)`` first; ``outcomes`` leave 40 more
    images standing for sat."""
    import numpy as np
    from tests.test_report import _make_run

    from dard.evaluation.outcomes import encode_outcomes
    from dard.report import build_report
    from dard.run_dir import RunDir, RunRecord

    paths = [_make_run(tmp_path, f"{m}-s0", 0, m, 0.8, 0.5, teacher=None, aa=0.4) for m in ("dard", "sat")]
    for path, bits in zip(paths, _bits(0, 40, 10)):
        run = RunDir(path)
        rec = run.read_eval("best")
        rec.clean.outcomes = encode_outcomes(np.array([True] * 80 + [False] * 20))
        rec.autoattack_subset.clean.correct = 20  # the record's first 20 images, all correct clean
        edit(path.name, rec, bits)
        run.write_eval("best", rec)
    return build_report([RunRecord.load(p) for p in paths], tmp_path / "r").read_text()


def test_worst_cases_over_other_attacks_are_not_paired_and_are_said(tmp_path) -> None:
    # a worst case over FGSM alone against one over the whole suite: McNemar marked the suite's difference as the
    # models', and the main table's Worst case column put the two side by side without a word
    import numpy as np

    from dard.evaluation.outcomes import encode_outcomes

    def edit(name, rec, worst):  # sat's weaker suite leaves 40 more images standing
        rec.worst_case.correct, rec.worst_case.outcomes = sum(worst), encode_outcomes(np.array(worst))
        if name == "sat-s0":
            rec.attacks = {k: v for k, v in rec.attacks.items() if k in ("fgsm", "pgd-large")}

    md = _dard_and_sat_report(tmp_path, edit)
    assert "seed 0: worst case over other attacks (bim, cw-linf, dpgd, fgsm, pgd-ll, pgd20 \\| fgsm)" in md
    assert "**The worst case is over different attacks in different rows**" in md
    assert "sat: fgsm." in md and "| dard | sat | Worst case |" not in md


def test_an_attack_recorded_with_other_settings_is_not_paired_and_is_said(tmp_path) -> None:
    # PGD-20 of 10 steps in one run (another dard version, a hand-made record) against the suite's 20: McNemar
    # marked the attacks' difference as the models', and so did the worst case taken over it
    import numpy as np

    from dard.evaluation.outcomes import encode_outcomes

    def edit(name, rec, pgd):  # sat's weaker PGD leaves 40 more images standing
        rec.attacks["pgd20"].correct, rec.attacks["pgd20"].outcomes = sum(pgd), encode_outcomes(np.array(pgd))
        rec.worst_case.correct, rec.worst_case.outcomes = 0, encode_outcomes(np.zeros(100, dtype=bool))
        if name == "sat-s0":
            rec.attacks["pgd20"].config["steps"] = 10

    md = _dard_and_sat_report(tmp_path, edit)
    assert "dard vs sat, pgd20: seed 0: the attack was recorded with other settings (steps)" in md
    assert "dard vs sat, worst_case: seed 0: the attack was recorded with other settings (pgd20.steps)" in md
    assert "| dard | sat | PGD-20 |" not in md and "| dard | sat | Worst case |" not in md
    assert "| dard | sat | Clean |" in md  # the images are the same: clean still pairs
    assert "**Attacks recorded with other settings in some runs**" in md  # said above the main table, as before


def test_printed_p_values_and_bounds_keep_their_side_of_the_threshold() -> None:
    # a p-value of 0.04996 was printed p=0.05 beside "yes" (p < 0.05), and an interval bound of +0.004 points (the
    # interval excludes 0: "yes") as +0.00, the same text as a bound of -0.004 ("no"); the seeds' image counts
    # were not said
    from dard.report.paired import SeedTest
    from dard.report.paired_section import PairedSection
    from dard.report.sections import _pct, paired_lines

    cmp = PairedComparison("dard", "sat", "pgd20", [SeedTest(0, 30, 14, 10_000, 0.04996)])
    lines = paired_lines(PairedSection(comparisons=[cmp], headers={"pgd20": "PGD-20"}))
    row = next(ln for ln in lines if ln.startswith("| dard | sat |"))
    assert "s0: 30/14 of 10,000, p=0.04996 |" in row and row.endswith("| yes |")
    assert (_pct(0.00004), _pct(-0.00004), _pct(0.0), _pct(0.09)) == ("+0.004", "-0.004", "+0.00", "+9.00")


def test_a_p_value_below_what_a_float_holds_is_printed_as_a_bound_never_as_zero() -> None:
    # DARD against the natural student on 10,000 images, 3013 discordant images all one way: the exact p-value
    # (2 / 2**3013) rounds to 0.0, and the report printed p=0.0e+00
    from dard.report.paired_section import PairedSection
    from dard.report.sections import paired_lines

    p = mcnemar_p(3013, 0)
    assert p == 0.0 and mcnemar_p(900, 0) == 2.0 / 2**900 > 0  # the float's limit, and a p printed as it is
    cmp = PairedComparison(
        "dard", "natural", "pgd20", [SeedTest(0, 3013, 0, 10_000, p), SeedTest(1, 900, 0, 10_000, mcnemar_p(900, 0))]
    )
    lines = paired_lines(PairedSection(comparisons=[cmp], headers={"pgd20": "PGD-20"}))
    assert "each row is its own test, not corrected for the number of rows" in lines[2]  # a reader weighs many rows
    row = next(ln for ln in lines if "| dard |" in ln)
    assert "s0: 3013/0 of 10,000, p below 1e-300; s1: 900/0 of 10,000, p=2.4e-271 |" in row and "p=0" not in row
