"""The paper-ready report: headers from the attack configs, sanity checks apart, robust never above its clean, the
teacher's row from run.json, a report without AutoAttack saying so, each flag once, the attack plot's averages, and
report.md, results.csv and results.tex saying the same numbers."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from tests.test_report import _make_run, _table

from dard.errors import DardError
from dard.evaluation.intervals import wilson_interval
from dard.evaluation.record import Count
from dard.experiment.report import attack_averages
from dard.experiment.spec import ExperimentSpec
from dard.report import build_report
from dard.report.columns import AA_CLEAN, AA_KEY, attack_title
from dard.run_dir import RunDir, RunInfo, RunRecord


@pytest.mark.parametrize(
    ("config", "title"),
    [
        ({"name": "pgd", "steps": 20, "random_start": True, "loss": "ce", "restarts": 1}, "PGD-20"),
        ({"name": "pgd", "steps": 10, "random_start": False}, "PGD-10 (clean start)"),
        ({"name": "pgd", "steps": 50, "restarts": 5, "loss": "margin"}, "PGD-50 (5 restarts, margin loss)"),
        ({"name": "fgsm", "eps": 8 / 255}, "FGSM"),
        ({"name": "cw", "steps": 30}, "CW-inf-30"),
        ({"name": "tpgd", "steps": 10, "target": "least_likely"}, "PGD-LL-10 (targeted, least-likely)"),
        ({"name": "pgd", "steps": 20, "eps": 0.5}, "PGD-20 (eps 0.5)"),
        ({"name": "pgd", "steps": 20, "eps": 16 / 255}, "PGD-20 (eps 16/255)"),
        ({"name": "autoattack", "version": "standard"}, "AutoAttack (standard)"),
        ({"name": "trades_pgd", "steps": 10, "init": "normal"}, "TPGD-KL-10"),
        ({"name": "someone_elses", "steps": 3}, "someone_elses-3"),
    ],
)
def test_headers_come_from_the_recorded_attack_config(config: dict, title: str) -> None:
    assert attack_title(config, threat_eps=8 / 255) == title


def test_sanity_attacks_have_their_own_table(tmp_path: Path) -> None:
    run = RunRecord.load(_make_run(tmp_path, "sat-s0", 0, "sat", 0.85, 0.40, teacher=None, aa=0.35, large=0.02))
    md = build_report([run], tmp_path / "r").read_text()
    assert not any("eps 0.5" in h for h in _table(md)["sat"])  # pgd-large is not in the main table
    sanity = _table(md, "## Sanity checks")["sat"]
    assert sanity["PGD-20 (eps 0.5)"] == "2.00"
    assert sanity["PGD-20 at eps 8/255"] == "40.00" and sanity["PGD-20 at eps 16/255"] == "20.00"


def test_robust_above_its_clean_is_never_printed(tmp_path: Path) -> None:
    """An old record (robust accuracy not yet requiring clean correctness) with more images robust than clean."""
    path = _make_run(tmp_path, "sat-s0", 0, "sat", 0.30, 0.40, teacher=None, aa=0.35)
    rec = RunDir(path).read_eval("best")
    rec.autoattack_subset.clean = Count(6, 20)  # 7 of 20 robust, 6 of the same 20 clean
    RunDir(path).write_eval("best", rec)
    out = tmp_path / "r"
    md = build_report([RunRecord.load(path)], out).read_text()
    row = _table(md)["sat"]
    assert row["Clean"] == "30.00" and row["FGSM"] == "—" and row["PGD-20"] == "—"  # 45 and 40 of 100 > 30
    assert row["AutoAttack (first 20)"] == "—" and row["Clean (first 20)"] == "30.00"
    flags = md.split("## Flags", 1)[1]
    assert "pgd20: 40 robust above 30 clean of the same 100 images: not shown" in flags
    assert "autoattack: 7 robust above 6 clean of the same 20 images: not shown" in flags
    entry = json.loads((out / "robustbench" / "sat-s0.json").read_text())
    assert entry["autoattack_acc"] is None and "AutoAttack left out" in entry["footnote"]
    assert entry["clean_acc"] == "30.00" and entry["n_clean"] == 20


def test_robustbench_entries_of_names_differing_in_case_are_two_files(tmp_path: Path) -> None:
    # SAT-s0.json and sat-s0.json are one file on a case-insensitive file system: the second replaced the first
    runs = [
        RunRecord.load(_make_run(tmp_path / d, name, seed, "sat", 0.85, 0.40, teacher=None, aa=0.35))
        for d, name, seed in (("a", "SAT-s0", 0), ("b", "sat-s1", 1), ("c", "sat-s0", 2))
    ]
    build_report(runs, tmp_path / "r")
    names = sorted(p.name.casefold() for p in (tmp_path / "r" / "robustbench").iterdir())
    assert names == ["sat-s0-2.json", "sat-s0.json", "sat-s1.json"]


def test_a_tie_between_robust_and_clean_is_printed(tmp_path: Path) -> None:
    path = _make_run(tmp_path, "sat-s0", 0, "sat", 0.40, 0.35, teacher=None, aa=0.35)  # FGSM 40 of 100 = clean
    md = build_report([RunRecord.load(path)], tmp_path / "r").read_text()
    assert _table(md)["sat"]["FGSM"] == "40.00"
    assert "robust above" not in md


def _without_autoattack(path: Path) -> Path:
    for which in ("best", "last"):
        rec = RunDir(path).read_eval(which)
        rec.autoattack_subset = None
        RunDir(path).write_eval(which, rec)
    return path


def test_a_report_without_autoattack_says_so(tmp_path: Path) -> None:
    path = _without_autoattack(_make_run(tmp_path, "sat-s0", 0, "sat", 0.85, 0.40, teacher=None, aa=0.35))
    out = tmp_path / "r"
    md = build_report([RunRecord.load(path)], out, formats=("md", "tex")).read_text()
    assert "**AutoAttack was not run**" in md and "- AutoAttack was not run;" in md
    row = _table(md)["sat"]
    assert row["AutoAttack"] == "not run" and row["Clean"] == "85.00"
    tex = (out / "results.tex").read_text()
    assert "% AutoAttack was not run" in tex and "Method & Clean & PGD-20 & Worst \\\\" in tex
    entry = json.loads((out / "robustbench" / "sat-s0.json").read_text())
    assert entry["autoattack_acc"] is None and entry["clean_acc"] == "85.00" and entry["subset"] is False


def _teacher_and_student(tmp_path: Path) -> tuple[Path, Path]:
    teacher = _make_run(tmp_path, "teacher-s0", 0, "sat", 0.90, 0.45, teacher=None, aa=0.40)
    RunDir(teacher).write_config("name: teacher-s0\n")  # a run folder: config.yaml and run.json
    student = _make_run(tmp_path, "dard-s0", 0, "dard", 0.80, 0.50, teacher="resnet18", aa=0.45)
    info = RunDir(student).read_info()
    info.teacher = {**info.teacher, "source": str(teacher / "best.safetensors")}
    RunDir(student).write_info(info)
    return teacher, student


def test_the_teachers_row_comes_from_run_json(tmp_path: Path) -> None:
    teacher, student = _teacher_and_student(tmp_path)
    md = build_report([RunRecord.load(student)], tmp_path / "r").read_text()
    table = _table(md)
    assert list(table) == ["teacher", "dard"]  # the teacher first
    assert table["teacher"]["Clean"] == "90.00" and table["teacher"]["PGD-20"] == "45.00"
    assert f"- Teacher row `teacher-s0`: the teacher named in the students' run.json (`{teacher}`)." in md
    # given explicitly too: one row, not two
    both = build_report([RunRecord.load(teacher), RunRecord.load(student)], tmp_path / "r2").read_text()
    assert list(_table(both)) == ["teacher", "dard"] and "Teacher row" not in both
    # moved with its student: found beside it, whatever the recorded path
    moved = tmp_path / "moved"
    moved.mkdir()
    for p in (teacher, student):
        p.rename(moved / p.name)
    md = build_report([RunRecord.load(moved / "dard-s0")], tmp_path / "r3").read_text()
    assert list(_table(md)) == ["teacher", "dard"]


def test_a_teacher_row_of_other_weights_than_the_students_learned_from_is_said(tmp_path: Path) -> None:
    # the teacher row was the teacher folder as it is now: one trained again in place after its students was shown
    # as the teacher they learned from, though run.json's teacher_sha256 says otherwise
    teacher, student = _teacher_and_student(tmp_path)
    (teacher / "best.safetensors").write_bytes(b"the weights the student learned from")
    info = RunDir(student).read_info()
    info.teacher_sha256 = hashlib.sha256(b"the weights the student learned from").hexdigest()
    RunDir(student).write_info(info)
    md = build_report([RunRecord.load(student)], tmp_path / "r").read_text()
    assert list(_table(md)) == ["teacher", "dard"] and "is not the teacher" not in md
    (teacher / "best.safetensors").write_bytes(b"weights trained again")
    md = build_report([RunRecord.load(student)], tmp_path / "r2").read_text()
    assert (
        "- The teacher row `teacher-s0` is not the teacher dard-s0 learned from: its `best.safetensors` has another "
        "SHA-256 than their run.json records (trained again since?)."
    ) in md


def test_a_missing_teacher_is_said_once(tmp_path: Path) -> None:
    paths = [_make_run(tmp_path, f"dard-s{s}", s, "dard", 0.8, 0.5, teacher="wrn34_10", aa=0.45) for s in (0, 1)]
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r").read_text()
    assert md.count("was not found: no teacher row") == 1
    assert "- The teacher `t.safetensors` named in the students' run.json was not found: no teacher row." in md
    assert list(_table(md)) == ["dard"]


def test_each_flag_once_per_run(tmp_path: Path) -> None:
    path = _make_run(tmp_path, "sat-s0", 0, "sat", 0.85, 0.40, teacher=None, aa=0.35, large=0.3)
    last = RunDir(path).read_eval("last")
    last.flags = list(RunDir(path).read_eval("best").flags)  # the same weights: the same flag at both checkpoints
    RunDir(path).write_eval("last", last)
    md = build_report([RunRecord.load(path)], tmp_path / "r").read_text()
    flags = md.split("## Flags", 1)[1].split("\n## ", 1)[0]
    assert flags.count("pgd-large: 30.00%, 30/100, of points survive") == 1
    assert "- sat-s0 (seed 0, best, last): pgd-large" in flags


def test_attack_plot_averages_leave_out_the_natural_model() -> None:
    """Two students with seeds 0 and 1, a one-seed teacher, and a natural model (left out)."""
    table = {
        "labels": ["pgd-5", "dpgd-5", "other"],
        "methods": {"teacher": "sat", "natural": "natural", "sat": "sat", "dard": "dard"},
        "by_seed": {
            "teacher": {"0": {"pgd-5": 0.30, "dpgd-5": 0.33}},
            "natural": {"0": {"pgd-5": 1.0, "dpgd-5": 1.0}, "1": {"pgd-5": 1.0, "dpgd-5": 1.0}},
            "sat": {"0": {"pgd-5": 0.40, "dpgd-5": 0.42}, "1": {"pgd-5": 0.44, "dpgd-5": 0.45}},
            "dard": {"0": {"pgd-5": 0.50, "dpgd-5": 0.51}, "1": {"pgd-5": 0.56, "dpgd-5": 0.60}},
        },
    }
    avg = attack_averages(table)
    assert set(avg) == {"pgd", "dpgd"}  # "other" has no step count
    # seed 0: (0.30 + 0.40 + 0.50) / 3 = 0.40; seed 1: (0.30 + 0.44 + 0.56) / 3 = 0.4333 (the teacher in both)
    s0, s1 = 0.40, (0.30 + 0.44 + 0.56) / 3
    assert avg["pgd"][5]["mean"] == pytest.approx((s0 + s1) / 2)
    assert avg["pgd"][5]["std"] == pytest.approx(abs(s1 - s0) / 2**0.5)
    assert avg["dpgd"][5]["mean"] == pytest.approx(((0.33 + 0.42 + 0.51) / 3 + (0.33 + 0.45 + 0.60) / 3) / 2)


def test_experiment_pairs_name_rows() -> None:
    base = {"title": "t", "base": "b.yaml", "seeds": [0], "runs": {"dard": {}, "pgdard": {}}}
    spec = ExperimentSpec.model_validate({**base, "pairs": [["dard", "pgdard"]]})
    assert spec.pairs == [("dard", "pgdard")]
    assert ExperimentSpec.model_validate(base).pairs == []
    with pytest.raises(ValueError, match="pairs: sat is not a run of this experiment"):
        ExperimentSpec.model_validate({**base, "pairs": [["dard", "sat"]]})


def test_an_unknown_pair_in_build_report_is_a_note(tmp_path: Path) -> None:
    run = RunRecord.load(_make_run(tmp_path, "sat-s0", 0, "sat", 0.85, 0.40, teacher=None, aa=0.35))
    md = build_report([run], tmp_path / "r", pairs=[("sat", "nope")]).read_text()
    assert "- pair sat vs nope: no row named nope in this report" in md


def test_bad_teacher_folder_is_a_note_not_a_crash(tmp_path: Path) -> None:
    teacher, student = _teacher_and_student(tmp_path)
    RunDir(teacher).eval_file("best").write_text("{")  # damaged
    md = build_report([RunRecord.load(student)], tmp_path / "r").read_text()
    assert list(_table(md)) == ["dard"] and "is not shown:" in md
    RunDir(teacher).run_info.unlink()  # no longer a run folder: not found
    md = build_report([RunRecord.load(student)], tmp_path / "r").read_text()
    assert "was not found: no teacher row" in md
    with pytest.raises(DardError):  # the student's own damage is still an error
        RunDir(student).write_info(RunInfo(name="x"))
        RunDir(student).eval_file("best").write_text("[]")
        RunRecord.load(student)


# --- report.md, results.csv and results.tex say the same numbers -------------------------------------------------

_MD_CELL = re.compile(
    r"(?P<mean>\d+\.\d\d)(?: ± (?P<std>\d+\.\d\d))?(?: (?P<marks>[†‡]+))?(?: \[(?P<lo>[\d.]+), (?P<hi>[\d.]+)\])?"
    r"(?: \((?P<k>\d+) of (?P<n>\d+) seeds\))?"
)
_TEX_CELL = re.compile(
    r"(?P<mean>\d+\.\d)(?:\{\\scriptsize \$\\pm\$(?P<std>\d+\.\d)\})?(?:\$\^\{(?P<marks>[^}]*)\}\$)?"
    r"(?:\{\\scriptsize\\ \((?P<k>\d+) of (?P<n>\d+) seeds\)\})?"
)
_TEX_HEADERS = {"Clean": "clean", "Clean$_{\\mathrm{AA}}$": AA_CLEAN, "AA": AA_KEY, "Worst": "worst_case"}


def _half_up(value: float | None, digits: int) -> str:
    """``value`` (a fraction) in percent, rounded half up from its decimal form: the one rounding of the tables."""
    if value is None:
        return ""
    return str((Decimal(repr(value)) * 100).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _check_formats_agree(out: Path) -> int:
    """Every number, row and mark that report.md's main table, results.csv and results.tex share agree, and each
    is results.json's value rounded the tables' way; returns the number of TeX cells compared."""
    from tests.test_report import _plain, md_cells
    from tests.test_report_groups import _tex_plain, _tex_rows

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    groups, checkpoint = results["groups"], results["checkpoint"]
    md = (out / "report.md").read_text(encoding="utf-8")
    lines = [ln for ln in md.split(" group(s); ", 1)[1].split("\n## ", 1)[0].splitlines() if ln.startswith("|")]
    md_header = [_plain(c) for c in md_cells(lines[0])]
    md_rows = [[_plain(c) for c in md_cells(ln)] for ln in lines[2:]]
    csv_rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    tex = (out / "results.tex").read_text(encoding="utf-8")
    tex_header = tex.split("\\midrule", 1)[0].splitlines()[-1].removesuffix(" \\\\").split(" & ")
    tex_rows = [r.removesuffix(" \\\\").split(" & ") for r in _tex_rows(tex)]
    names = [g["name"] for g in groups]  # one order everywhere
    assert [r[0] for r in md_rows] == [r["run"].removeprefix("'") for r in csv_rows] == names
    assert [_tex_plain(r[0]) for r in tex_rows] == names
    keys = [k.removesuffix("_pct") for k in csv_rows[0] if k.endswith("_pct") and not k.endswith("_std_pct")]
    keys = [k for k in keys if not k.endswith(("_ci95_low", "_ci95_high"))]
    md_keys = dict(zip(md_header[5:], keys))  # report.md's columns are results.csv's, in its order
    assert len(md_header) - 5 == len(keys)
    tex_keys = {h: _TEX_HEADERS.get(h) or md_keys[h] for h in tex_header[1:]}
    assert tex_header[0] == "Method" and {"clean", "worst_case"} <= set(tex_keys.values())
    compared = 0
    for g, md_row, row, tex_row in zip(groups, md_rows, csv_rows, tex_rows):
        md_cell = dict(zip(md_header, md_row))
        tex_cell = dict(zip([tex_keys[h] for h in tex_header[1:]], tex_row[1:]))
        assert md_cell["Seeds (n)"] == row["seeds"] == str(g["n"])
        for header, key in md_keys.items():
            s = g[checkpoint][key]
            marks = "".join(
                m for m, ref in (("†", "dard"), ("‡", "sat")) if row.get(f"{key}_significant_vs_{ref}") == "yes"
            )
            assert row[f"{key}_pct"] == _half_up(s["mean"], 4) and row[f"{key}_seeds"] == str(s["n"])
            assert row[f"{key}_std_pct"] == (_half_up(s["std"], 4) if s["std"] is not None else "")
            if s["mean"] is None:
                assert md_cell[header] in ("—", "not run") and tex_cell.get(key, "--") == "--"
                continue
            cell = _MD_CELL.fullmatch(md_cell[header])
            assert cell, (header, md_cell[header])
            assert cell["mean"] == _half_up(s["mean"], 2) and (cell["std"] or "") == _half_up(s["std"], 2)
            assert (cell["marks"] or "") == (marks if key != AA_CLEAN else "")
            ci = wilson_interval(s["mean"], s["points"]) if s["points"] < 10_000 else (None, None)
            assert [cell["lo"] or "", cell["hi"] or ""] == [_half_up(b, 1) for b in ci]  # on a run's test points
            assert [row[f"{key}_ci95_low_pct"], row[f"{key}_ci95_high_pct"]] == [_half_up(b, 4) for b in ci]
            assert (cell["k"] or str(g["n"])) == row[f"{key}_seeds"]
            if key in tex_cell:
                t = _TEX_CELL.fullmatch(tex_cell[key])
                assert t, (key, tex_cell[key])
                assert t["mean"] == _half_up(s["mean"], 1) and (t["std"] or "") == _half_up(s["std"], 1)
                tex_marks = (t["marks"] or "").replace("\\dagger", "†").replace("\\ddagger", "‡")
                assert tex_marks == (cell["marks"] or "") and (t["k"] or str(g["n"])) == row[f"{key}_seeds"]
        compared += len(tex_cell)  # every TeX cell of the row was checked
    return compared


def test_report_md_csv_and_tex_agree_on_the_campaigns_records(tmp_path: Path) -> None:
    # the committed CIFAR-10 runs (real records: 10,000 test images, AutoAttack on the first 1,000, per-image
    # outcomes and so real marks): every shared number, row and mark of the three paper outputs is the same
    root = Path(__file__).resolve().parents[1] / "campaign" / "small"
    folders = sorted(p.parent.parent for p in root.glob("*/eval/best.json"))
    assert len(folders) >= 3
    for folder in folders:
        for rel in ("config.yaml", "run.json", "metrics.jsonl", "best.json", "last.json", "eval/best.json"):
            if (folder / rel).is_file():
                (tmp_path / folder.name / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folder / rel, tmp_path / folder.name / rel)
    out = tmp_path / "report"
    build_report([RunRecord.load(tmp_path / f.name) for f in folders], out, formats=("md", "csv", "tex"))
    rows = {f.name.rsplit("-s", 1)[0] for f in folders}  # one row per method, its seeds pooled (dard-s0, dard-s1)
    assert _check_formats_agree(out) == 5 * len(rows)  # clean, PGD-20, AutoAttack's pair, worst
    assert "†" in (out / "report.md").read_text(encoding="utf-8")  # the comparison of real outcomes is checked too


def test_report_md_csv_and_tex_agree_with_seeds_and_pending_attacks(tmp_path: Path, monkeypatch) -> None:
    # three seeds of spread accuracies (std), an attack one seed has not run yet ("2 of 3 seeds"), 20-image
    # AutoAttack subsets (intervals), and paired rows marked † and ‡
    from tests.test_paired import _three_rows

    from dard.report import paired_section

    paired = _three_rows(tmp_path / "paired", monkeypatch)
    known, outcomes = {id(r.evals["best"]) for r in paired}, paired_section.record_outcomes
    monkeypatch.setattr(paired_section, "record_outcomes", lambda r, k: outcomes(r, k) if id(r) in known else None)
    paths = [
        _make_run(tmp_path, f"trades-s{s}", s, "trades", 0.8 + 0.013 * s, 0.4 + 0.0071 * s, teacher=None, aa=0.3)
        for s in range(3)
    ]
    rec = RunDir(paths[2]).read_eval("best")
    del rec.attacks["bim"]
    RunDir(paths[2]).write_eval("best", rec)
    out = tmp_path / "report"
    build_report([*paired, *(RunRecord.load(p) for p in paths)], out, formats=("md", "csv", "tex"))
    assert _check_formats_agree(out) == 5 * 4
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "(2 of 3 seeds)" in md and " ± " in md and "†" in md and "‡" in md


def test_an_l2_radius_is_written_as_a_number_not_in_pixel_levels():
    """An L2 eps of 0.2 was written "51/255" in the setup line, the sweep's headers and the RobustBench entry."""
    from dard.report.columns import attack_title, eps_text
    from dard.report.sections import _threat_text

    assert eps_text(0.2, norm="l2") == "0.2" and eps_text(1.0, norm="l2") == "1"
    assert eps_text(8 / 255) == "8/255" and eps_text(0.2) == "51/255"  # Linf keeps its pixel levels
    assert _threat_text({"norm": "l2", "eps": 0.2}) == "l2, eps = 0.2"
    assert _threat_text({"norm": "linf", "eps": 8 / 255}).startswith("linf, eps = 8/255")
    pgd = {"name": "pgd", "steps": 20, "eps": 1.0, "norm": "l2"}
    assert attack_title(pgd, threat_eps=0.5) == "PGD-20 (eps 1)"
