"""Report tables that are correct by construction: rows are recorded configs but for the seed, a table holds one
dataset and threat model, a row holds each seed once; and the outputs a paper takes (CSV, TeX, RobustBench JSON,
Wilson intervals, AutoAttack stages, attack times), on run folders written through dard.run_dir's writers."""

from __future__ import annotations

import copy
import csv
import json
import math
import re
import shutil
import unicodedata
from pathlib import Path

import pytest
from tests.test_report import _autoattack, _make_run, _record, _table

from dard.config import dump_config, parse_config
from dard.errors import DardError
from dard.evaluation.intervals import wilson_interval
from dard.report import build_report
from dard.report.groups import group_runs
from dard.run_dir import EvalFile, RunDir, RunRecord


def _with_config(path: Path, **cfg) -> Path:
    """Record a run config in a finished run folder (as `dard train` does)."""
    RunDir(path).write_config(dump_config(parse_config({"data": {"name": "cifar10"}, **cfg})))
    return path


def _lam_runs(tmp_path: Path) -> list[RunRecord]:
    """The issue's case: two runs named `run`, seed 0, differing only in method.params.lam."""
    paths = []
    for lam in (0.0, 1.0):
        p = _make_run(tmp_path / f"lam{lam}", "run", 0, "dard", 0.8 + 0.1 * lam, 0.5, teacher="r56", aa=0.4)
        paths.append(_with_config(p, name="run", method={"name": "dard", "params": {"lam": lam}}))
    return [RunRecord.load(p) for p in paths]


def test_runs_differing_only_in_lam_are_two_rows_with_unique_names(tmp_path: Path) -> None:
    runs = _lam_runs(tmp_path)
    groups = group_runs(runs)
    assert [g.name for g in groups] == ["run (method.params.lam=0.0)", "run (method.params.lam=1.0)"]
    assert [len(g.members) for g in groups] == [1, 1] and groups[0].key != groups[1].key
    out = tmp_path / "report"
    build_report(runs, out)
    res = json.loads((out / "results.json").read_text())
    assert [g["name"] for g in res["groups"]] == [g.name for g in groups]
    assert [r["group"] for r in res["runs"]] == [g.name for g in groups]
    md = (out / "report.md").read_text()
    assert "| run (method.params.lam=0.0) | dard |" in md and "| run (method.params.lam=1.0) | dard |" in md


def test_seeds_of_one_config_share_a_row_whatever_device_threads_or_data_folder(tmp_path: Path) -> None:
    base = {"method": {"name": "sat"}, "optim": {"epochs": 3}}
    a = _with_config(_make_run(tmp_path, "sat-s0", 0, "sat", 0.8, 0.4, teacher=None, aa=0.3), name="sat-s0", **base)
    b = _make_run(tmp_path, "sat-s1", 1, "sat", 0.9, 0.5, teacher=None, aa=0.4)
    _with_config(b, name="sat-s1", seed=1, device="cpu", speed={"threads": 1}, **base)
    # an older config.yaml: fewer keys (options added since count at their defaults), another data folder
    RunDir(b).write_config(
        "name: sat-s1\nseed: 1\ndata: {name: cifar10, dir: /elsewhere}\nmethod: {name: sat}\noptim: {epochs: 3}\n"
    )
    groups = group_runs([RunRecord.load(a), RunRecord.load(b)])
    assert [(g.name, [m.seed for m in g.members]) for g in groups] == [("sat", [0, 1])]


def test_a_seed_twice_in_a_row_is_refused(tmp_path: Path) -> None:
    a = _with_config(_make_run(tmp_path, "sat-s0", 0, "sat", 0.8, 0.4, teacher=None, aa=0.3), name="sat-s0")
    copy = shutil.copytree(a, tmp_path / "copy" / "sat-s0")
    with pytest.raises(DardError, match=r"'sat' has seed 0 more than once .*copy/sat-s0"):
        build_report([RunRecord.load(a), RunRecord.load(copy)], tmp_path / "r")


@pytest.mark.parametrize("what", ["data", "split", "copy", "threat"])
def test_runs_on_other_datasets_or_threat_models_are_refused(tmp_path: Path, what: str) -> None:
    a = _make_run(tmp_path, "sat-s0", 0, "sat", 0.8, 0.4, teacher=None, aa=0.3)
    b = _make_run(tmp_path, "trades-s0", 0, "trades", 0.8, 0.4, teacher=None, aa=0.3)
    rec = RunDir(b).read_eval("best")
    datas = [rec.data, *([rec.autoattack_subset.data] if rec.autoattack_subset else [])]  # a record of its images
    if what == "data":
        for d in datas:
            d["name"] = "digits"
    elif what == "split":  # a record of the validation images beside test accuracies: another test set, same name
        for d in datas:
            d["split"] = "val"
    elif what == "copy":  # CIFAR-10's official files beside the development copy rebuilt from JPEGs: one name
        for run, fingerprint, official in ((a, "a" * 64, "yes"), (b, "b" * 64, "no")):
            r = rec if run == b else RunDir(a).read_eval("best")
            r.data.update(fingerprint=fingerprint, official=official)
            RunDir(run).write_eval("best", r)
    else:
        rec.threat_model["eps"] = 0.1
    RunDir(b).write_eval("best", rec)
    needle = {
        "data": "different datasets",
        "split": "different splits",
        "copy": "different copies of the data",
        "threat": "threat models",
    }[what]
    with pytest.raises(DardError, match=needle) as exc:
        build_report([RunRecord.load(a), RunRecord.load(b)], tmp_path / "r")
    assert "\n" not in str(exc.value) and "sat-s0" in str(exc.value) and "trades-s0" in str(exc.value)
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_wilson_interval_matches_the_closed_form() -> None:
    # 50 of 100 at z = 1.96: centre 0.5, half-width z / (1 + z^2/n) * sqrt(1/4n + z^2/4n^2)
    z, n = 1.959963984540054, 100
    half = z / (1 + z * z / n) * math.sqrt(0.25 / n + z * z / (4 * n * n))
    assert wilson_interval(0.5, n) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert wilson_interval(0.5, n) == pytest.approx((0.4038, 0.5962), abs=1e-4)  # the tabulated value
    # 0 of 10: [0, (z^2/n) / (1 + z^2/n)], not the empty interval of the normal approximation
    assert wilson_interval(0.0, 10) == pytest.approx((0.0, (z * z / 10) / (1 + z * z / 10)), abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0.5, 0))


def _tex_rows(tex: str) -> list[str]:
    body = tex.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    return [ln for ln in body.splitlines() if ln.strip()]


def test_csv_and_tex_tables_parse(tmp_path: Path) -> None:
    runs = _lam_runs(tmp_path)
    runs.append(RunRecord.load(_make_run(tmp_path, "my_run-s0", 0, "sat", 0.85, 0.4, teacher=None, aa=0.35)))
    out = tmp_path / "report"
    build_report(runs, out, formats=("md", "csv", "tex"))
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert [r["run"] for r in rows] == ["run (method.params.lam=0.0)", "run (method.params.lam=1.0)", "my_run"]
    sat = rows[2]
    assert float(sat["clean_pct"]) == pytest.approx(85.0) and sat["clean_std_pct"] == "" and sat["seeds"] == "1"
    lo, hi = wilson_interval(0.85, 100)
    assert float(sat["clean_ci95_low_pct"]) == pytest.approx(100 * lo, abs=1e-3)
    assert float(sat["clean_ci95_high_pct"]) == pytest.approx(100 * hi, abs=1e-3) and sat["clean_points"] == "100"
    assert float(sat["autoattack_subset_pct"]) == pytest.approx(35.0) and sat["autoattack_subset_points"] == "20"
    tex = (out / "results.tex").read_text(encoding="utf-8")
    assert tex.count("{") == tex.count("}") and "\\begin{tabular}{lrrrrr}" in tex and tex.rstrip().endswith("}")
    # one paper column: the row, clean, PGD-20, AutoAttack beside its subset's clean, the worst case
    assert "Method & Clean & PGD-20 & Clean$_{\\mathrm{AA}}$ & AA & Worst \\\\" in tex
    rows_tex = _tex_rows(tex)
    assert len(rows_tex) == 3 and all(r.endswith("\\\\") and r.count(" & ") == 5 for r in rows_tex)
    assert rows_tex[2] == "my\\_run & 85.0 & 40.0 & 90.0 & 35.0 & 35.0 \\\\"  # the underscore escaped
    assert "first 20 test images" in tex and "pgd-large" not in tex
    with pytest.raises(DardError, match="unknown report format pdf"):
        build_report(runs, out, formats=("md", "pdf"))


def test_csv_and_tex_say_when_a_mean_stands_on_fewer_seeds_than_its_row(tmp_path: Path) -> None:
    # report.md said "(2 of 3 seeds)" for an attack one seed had not run; results.csv gave the 2-seed mean beside
    # seeds=3 and results.tex the bare number, read in a paper as a mean over the row's three seeds
    paths = [_make_run(tmp_path, f"sat-s{s}", s, "sat", 0.8 + 0.01 * s, 0.4, teacher=None, aa=0.3) for s in range(3)]
    rec = RunDir(paths[2]).read_eval("best")
    del rec.attacks["pgd20"]
    RunDir(paths[2]).write_eval("best", rec)
    out = tmp_path / "report"
    md = build_report([RunRecord.load(p) for p in paths], out, formats=("md", "csv", "tex")).read_text()
    assert "(2 of 3 seeds)" in md
    (row,) = csv.DictReader((out / "results.csv").open(encoding="utf-8"))
    assert row["seeds"] == "3" and row["pgd20_seeds"] == "2" and row["clean_seeds"] == "3"
    (tex_row,) = _tex_rows((out / "results.tex").read_text(encoding="utf-8"))
    cells = tex_row.removesuffix(" \\\\").split(" & ")
    assert "(2 of 3 seeds)" in cells[2] and "seeds" not in cells[1]


def test_markdown_cells_carry_wilson_intervals_below_10000_points(tmp_path: Path) -> None:
    run = RunRecord.load(_make_run(tmp_path, "sat-s0", 0, "sat", 0.85, 0.4, teacher=None, aa=0.35))
    md = build_report([run], tmp_path / "r").read_text()
    lo, hi = wilson_interval(0.85, 100)
    assert f"| 85.00 [{100 * lo:.1f}, {100 * hi:.1f}] |" in md
    lo, hi = wilson_interval(0.35, 20)  # AutoAttack on 20 images: a wide interval
    assert f"| 35.00 [{100 * lo:.1f}, {100 * hi:.1f}] |" in md


def test_robustbench_entry_per_run(tmp_path: Path) -> None:
    run = RunRecord.load(_make_run(tmp_path, "sat-s0", 0, "sat", 0.85, 0.4, teacher=None, aa=0.35))
    build_report([run], tmp_path / "r")
    entry = json.loads((tmp_path / "r" / "robustbench" / "sat-s0.json").read_text())
    for key in ("link", "name", "authors", "additional_data", "number_forward_passes", "venue", "reported"):
        assert key in entry  # RobustBench's model_info fields, the bibliographic ones to fill in
    assert (entry["dataset"], entry["architecture"], entry["eps"], entry["threat_model"]) == (
        "cifar10",
        "resnet18",
        "8/255",
        "Linf",
    )
    # AutoAttack ran on the first 20 images: clean_acc is those images' (18 of 20), not the 100 images' 85%
    assert (entry["clean_acc"], entry["autoattack_acc"], entry["n_clean"], entry["n_autoattack"]) == (
        "90.00",
        "35.00",
        20,
        20,
    )
    assert entry["subset"] is True and (entry["clean_acc_all"], entry["n_all"]) == ("85.00", 100)
    assert (
        "AutoAttack (standard) and clean accuracy on the first 20 test images (a subset of the 100" in entry["footnote"]
    )


def test_autoattack_stages_and_attack_times_in_the_report(tmp_path: Path) -> None:
    path = _make_run(tmp_path, "sat-s0", 0, "sat", 0.85, 0.4, teacher=None, aa=0.35)
    rec = RunDir(path).read_eval("best")
    rec.autoattack_subset.attacks["autoattack"].stages = {"apgd-ce": 9, "apgd-t": 8, "fab-t": 8, "square": 7}
    pgd = copy.deepcopy(rec.autoattack_subset.attacks["autoattack"])
    pgd.config, pgd.correct, pgd.stages = {"name": "pgd", "steps": 20}, 10, None  # PGD-20 on the subset: 10 of 20
    rec.autoattack_subset.attacks = {"pgd20": pgd, **rec.autoattack_subset.attacks}
    rec.attacks["pgd20"].seconds = 12.5
    RunDir(path).write_eval("best", rec)
    out = tmp_path / "r"
    md = build_report([RunRecord.load(path)], out).read_text()
    stages = md.split("## AutoAttack stages", 1)[1].split("\n## ", 1)[0]
    assert "| Run | Seeds (n) | Clean | PGD-20 | APGD-CE | APGD-T | FAB-T | Square |" in stages
    # the subset's clean (18 of 20) and PGD-20 (10 of 20), then the stages: k / 20 images
    assert re.search(
        r"\| sat \| 1 \| 90\.00 \[.*\] \| 50\.00 \[.*\] \| 45\.00 \[[\d.]+, [\d.]+\] \| 40\.00 .* \| 35\.00 \[", stages
    )
    times = md.split("## Evaluation time", 1)[1].split("\n## ", 1)[0]
    assert "| PGD-20 |" in times and "| 12.5 |" in times and "| AutoAttack (first 20) |" in times
    res = json.loads((out / "results.json").read_text())
    assert res["runs"][0]["autoattack_stages"] == {"apgd-ce": 0.45, "apgd-t": 0.4, "fab-t": 0.4, "square": 0.35}


def test_eval_records_written_before_the_new_fields_still_parse(tmp_path: Path) -> None:
    """Records from before robust accuracy required clean correctness: no `corrected`, no AutoAttack `stages`."""
    path = _make_run(tmp_path, "sat-s0", 0, "sat", 0.85, 0.4, teacher=None, aa=0.35)
    file = RunDir(path).eval_file("best")
    old = json.loads(file.read_text())
    for res in [*old["attacks"].values(), *old["autoattack_subset"]["attacks"].values()]:
        del res["corrected"], res["stages"]
    file.write_text(json.dumps(old))
    rec = EvalFile.from_dict(old)
    assert rec.attacks["pgd20"].corrected is None and rec.autoattack_subset.attacks["autoattack"].stages is None
    md = build_report([RunRecord.load(path)], tmp_path / "r").read_text()
    assert "## AutoAttack stages" not in md and "| sat |" in md


def test_an_attack_recorded_with_other_settings_is_said_above_the_table(tmp_path: Path) -> None:
    # one label's column is headed by the first run's settings: a PGD-50 recorded as pgd20 (another dard version,
    # a hand-made record) sat in the PGD-20 column without a word
    paths = [_make_run(tmp_path, f"{m}-s0", 0, m, 0.8, 0.4, teacher=None, aa=0.3) for m in ("sat", "trades")]
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r1").read_text()
    assert "other settings" not in md  # seeds differ, settings do not
    rec = RunDir(paths[1]).read_eval("best")
    rec.attacks["pgd20"].config.update(steps=50, seed=7)
    RunDir(paths[1]).write_eval("best", rec)
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r2", formats=("md", "tex")).read_text()
    assert "**Attacks recorded with other settings in some runs** (their column holds both): pgd20 (steps)." in md
    tex = (tmp_path / "r2" / "results.tex").read_text(encoding="utf-8")
    assert "% Attacks recorded with other settings in some runs (their column holds both): pgd20 (steps)." in tex


def test_a_row_trained_at_another_eps_than_it_is_measured_at_is_said_above_the_table(tmp_path: Path) -> None:
    # method.params.attack.eps: 16/255 beside a threat model of 8/255 (a deliberate choice) is in run.json, and
    # the report said nothing of it: the row read as trained at the eps it is measured at
    paths = [_make_run(tmp_path, f"{m}-s0", 0, m, 0.8, 0.4, teacher=None, aa=0.3) for m in ("sat", "trades")]
    for path, eps in zip(paths, (8 / 255, 16 / 255)):
        info = RunDir(path).read_info()
        info.method = {**info.method, "attack": {"name": "pgd", "eps": eps, "steps": 10}}
        RunDir(path).write_info(info)
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r", formats=("md", "tex")).read_text()
    what, detail = "Rows trained at another eps than the threat model's", ": trades at 16/255, measured at 8/255."
    assert f"**{what}**{detail}" in md and "sat at" not in md
    assert f"% {what}{detail}" in (tmp_path / "r" / "results.tex").read_text(encoding="utf-8")


def test_rows_measured_on_different_numbers_of_images_are_said_above_the_table(tmp_path: Path) -> None:
    # a row evaluated with `dard eval --n 50` sat beside rows on 100 images in one column without a word
    paths = [_make_run(tmp_path, f"{m}-s0", 0, m, 0.8, 0.4, teacher=None, aa=0.3) for m in ("sat", "trades")]
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r1").read_text()
    assert "different numbers of test images" not in md
    RunDir(paths[1]).write_eval("best", EvalFile.of(_record("best", 2, 0.8, 0.4, seed=0, n=50)))
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r2", formats=("md", "tex")).read_text()
    assert "**Rows measured on different numbers of test images**: 100 (sat); 50 (trades)." in md
    # results.tex, the table a paper takes, said none of it
    assert "% Rows measured on different numbers of test images: 100 (sat); 50 (trades)." in (
        tmp_path / "r2" / "results.tex"
    ).read_text(encoding="utf-8")


def test_autoattack_on_different_first_images_is_said_above_the_table(tmp_path: Path) -> None:
    # seeds whose AutoAttack ran on the first 20 and the first 50 images were one mean under "first 20/50", and
    # nothing said which row (or seed) was measured on which
    paths = [_make_run(tmp_path, f"sat-s{s}", s, "sat", 0.8, 0.4, teacher=None, aa=0.3) for s in (0, 1)]
    paths.append(_make_run(tmp_path, "dard-s0", 0, "dard", 0.8, 0.4, teacher=None, aa=0.3))
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r1").read_text()
    assert "different numbers of first test images" not in md  # all on the first 20
    for path in paths[1:]:
        rec = _record("best", 2, 0.8, 0.4, seed=0)
        RunDir(path).write_eval("best", EvalFile.of(rec, autoattack_subset=_autoattack(rec, 0.3, 50)))
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r2", formats=("md", "tex")).read_text()
    assert "**AutoAttack measured on different numbers of first test images**: 50 (sat, dard); 20 (sat)." in md
    tex = (tmp_path / "r2" / "results.tex").read_text(encoding="utf-8")
    assert "% AutoAttack measured on different numbers of first test images: 50 (sat, dard); 20 (sat)." in tex


def test_every_table_rounds_a_number_the_same_way(tmp_path: Path) -> None:
    # 4001 of 20,000 images is 20.005%: report.md and `dard eval` said 20.00 (the float 100 * 0.20005 lies below)
    # beside results.csv's 20.0050, while 4801 (24.005%) went up to 24.01; two seeds at 20.03% and 29.00% on 10,000
    # images (mean 24.515%) were 24.51, fmean's float a hair below the half
    from dard.evaluation.table import format_table

    def evaluated(path: Path, clean: float, pgd: float, n: int) -> Path:
        rec = _record("best", 2, clean, pgd, seed=0, n=n)
        RunDir(path).write_eval("best", EvalFile.of(rec))
        return path

    sat = evaluated(_make_run(tmp_path, "sat-s0", 0, "sat", 0.8, 0.4, teacher=None, aa=0.3), 0.29995, 0.20005, 20_000)
    dard = [_make_run(tmp_path, f"dard-s{s}", s, "dard", 0.8, 0.4, teacher=None, aa=0.3) for s in (0, 1)]
    evaluated(dard[0], 0.2003, 0.15, 10_000)
    evaluated(dard[1], 0.29, 0.15, 10_000)
    out = tmp_path / "r"
    md = build_report([RunRecord.load(p) for p in (sat, *dard)], out, formats=("md", "csv", "tex")).read_text()
    table = _table(md)
    assert (table["sat"]["Clean"], table["sat"]["FGSM"], table["sat"]["PGD-20"]) == ("30.00", "25.01", "20.01")
    assert table["dard"]["Clean"] == "24.52 ± 6.34"
    rows = {r["run"]: r for r in csv.DictReader((out / "results.csv").open(encoding="utf-8"))}
    assert (rows["sat"]["clean_pct"], rows["sat"]["pgd20_pct"], rows["dard"]["clean_pct"]) == (
        "29.9950",
        "20.0050",
        "24.5150",
    )
    tex = _tex_rows((out / "results.tex").read_text(encoding="utf-8"))
    assert tex[0].startswith("sat & 30.0 & 20.0 &") and tex[1].startswith("dard & 24.5{")
    assert json.loads((out / "robustbench" / "sat-s0.json").read_text())["clean_acc"] == "30.00"
    table = format_table(RunDir(sat).read_eval("best"))
    assert re.search(r"^clean +30\.00% ", table, re.M) and re.search(r"^pgd20 +20\.01% ", table, re.M)


# what results.tex writes for a character LaTeX would read as markup, and what it then prints
_TEX_TOKEN = re.compile(
    r"\\text(?:backslash|asciitilde|asciicircum|less|greater|bar|asciigrave)\{\}|\\[&%$#_{}]|-\{\}|\{\}"
    r"|\\[`'^\"~=.uvHrcdb]\{(?:\\[ij]\{\}|[A-Za-z])\}|\\(?:ss|ae|AE|oe|OE|o|O|l|L|i|j)\{\}|\$[^$]+\$|\[U\+[0-9A-F]+\]|."
)
# how LaTeX prints the accent commands, letters and math of dard's ASCII TeX (a few, enough for the names tested)
_TEX_ACCENT = {"`": "\u0300", "'": "\u0301", "^": "\u0302", '"': "\u0308", "~": "\u0303", "c": "\u0327", "r": "\u030a"}
_TEX_LETTER = {"ss": "ß", "ae": "æ", "AE": "Æ", "oe": "œ", "OE": "Œ", "o": "ø", "O": "Ø", "l": "ł", "L": "Ł"}
_TEX_MATH = {"\\rightarrow": "→", "\\alpha": "α", "\\pm": "±", "\\Omega": "Ω"}


def _tex_token(token: str) -> str:
    """What LaTeX prints for one token of :data:`_TEX_TOKEN` beyond :data:`_TEX_CHAR`."""
    if token.startswith("[U+"):
        return chr(int(token[3:-1], 16))
    if token.startswith("$"):
        return _TEX_MATH[token.strip("$")]
    if token == "{}":
        return ""
    name = token[1:].removesuffix("{}")
    if name in _TEX_LETTER or name in ("i", "j"):
        return _TEX_LETTER.get(name, name)
    base = token[3:-1].replace("\\i{}", "i").replace("\\j{}", "j")
    return unicodedata.normalize("NFC", base + _TEX_ACCENT[token[1]])


_TEX_CHAR = {
    "\\textbackslash{}": "\\",
    "\\textasciitilde{}": "~",
    "\\textasciicircum{}": "^",
    "\\textless{}": "<",
    "\\textgreater{}": ">",
    "\\textbar{}": "|",
    "\\textasciigrave{}": "`",
    "-{}": "-",
}


def _tex_plain(cell: str) -> str:
    """What LaTeX prints for a cell of dard's escaped text; an AssertionError where it would read markup."""
    out, tokens = [], _TEX_TOKEN.findall(cell.removeprefix("{}"))
    for token, after in zip(tokens, [*tokens[1:], ""]):
        assert token not in "&%$#_{}~^\\<>|`" and (token, after) != ("-", "-"), (token, cell)  # "--": a dash
        out.append(_TEX_CHAR[token] if token in _TEX_CHAR else token[-1] if len(token) <= 2 else _tex_token(token))
    return "".join(out)


def test_names_with_markup_are_text_in_csv_and_tex(tmp_path: Path) -> None:
    # results.csv wrote a run named =HYPERLINK(...), +1, -2 or @SUM(A1) as a cell a spreadsheet runs as a formula;
    # results.tex left < > | ` to OT1's other glyphs, -- to an en dash, and a row named [0pt] or *star to the \\
    # before it (its optional argument and star form)
    from tests.test_report import HOSTILE, _hostile_runs

    out = tmp_path / "r"
    build_report(_hostile_runs(tmp_path), out, formats=("md", "csv", "tex"))
    with (out / "results.csv").open(encoding="utf-8", newline="") as f:
        header, *rows = list(csv.reader(f))
    cells = [*header, *(c for r in rows for c in r)]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    quoted = {n: ("'" + n if n.startswith(("=", "+", "-", "@")) else n) for n in HOSTILE}
    assert [r[:4] for r in rows] == [[quoted[n]] * 4 for n in HOSTILE]  # run, method, student, teacher
    assert all(len(r) == len(header) for r in rows)
    assert [f"{quoted[n]}_pct" in header for n in HOSTILE] == [True] * len(HOSTILE)  # each attack's columns
    tex = (out / "results.tex").read_text(encoding="utf-8")
    body = _tex_rows(tex)
    assert len(body) == len(HOSTILE) and all(r.endswith(" \\\\") and r.count(" & ") == 5 for r in body)
    assert [_tex_plain(r.split(" & ", 1)[0]) for r in body] == [unicodedata.normalize("NFKC", n) for n in HOSTILE]
    assert all(ln.startswith(("%", "\\", "Method & ")) for ln in tex.splitlines() if ln and ln not in body)


#: names outside ASCII: accented Latin, letters of their own, symbols, Greek, CJK, emoji, a decomposed accent
UNICODE_NAMES = ["café-über", "Straße Łódź Ørsted", "naïve→dard ±", "α-Ω", "中文模型", "🚀run", "e\u0301x", "ångström"]


def test_results_tex_is_ascii_whatever_the_names(tmp_path: Path) -> None:
    # results.tex wrote names as UTF-8: a plain pdflatex stops at → or 中 ("Unicode character not set up for use
    # with LaTeX") and one without inputenc prints é's two bytes as two other glyphs
    from dard.report.export import tex_escape

    paths = [_make_run(tmp_path, f"run{i}", 0, "sat", 0.85, 0.4, teacher=None, aa=0.35) for i in range(8)]
    for path, name in zip(paths, UNICODE_NAMES):
        info = RunDir(path).read_info()
        info.name = name
        RunDir(path).write_info(info)
    out = tmp_path / "r"
    build_report([RunRecord.load(p) for p in paths], out, title="Résumé — DARD → SAT 🚀", formats=("md", "tex"))
    tex = (out / "results.tex").read_text(encoding="utf-8")
    assert tex.isascii() and "% dard report: R\\'{e}sum\\'{e} --- DARD $\\rightarrow$ SAT [U+1F680];" in tex
    names = [_tex_plain(r.split(" & ", 1)[0]) for r in _tex_rows(tex)]
    assert names == [unicodedata.normalize("NFC", n) for n in UNICODE_NAMES]
    assert tex_escape("café") == "caf\\'{e}" and tex_escape("ï") == '\\"{\\i{}}' and tex_escape("ß") == "\\ss{}"
    assert tex_escape("a→b") == "a$\\rightarrow$b" and tex_escape("𝛼") == "$\\alpha$"  # 𝛼: α's compatibility form
    assert tex_escape("中") == "{}[U+4E2D]" and tex_escape("x🚀") == "x[U+1F680]"  # a code point: two names stay two
    assert tex_escape("–-") == "--{}-" and tex_escape("it''s") == "it'{}'s"  # no ligature across two characters


def test_a_column_no_seed_of_a_row_has_says_0_seeds(tmp_path: Path) -> None:
    # results.csv left <column>_seeds blank where none of the row's seeds has the attack, as for a count it never took
    paths = [_make_run(tmp_path, f"{m}-s0", 0, m, 0.8, 0.4, teacher=None, aa=0.3) for m in ("sat", "trades")]
    rec = RunDir(paths[1]).read_eval("best")
    del rec.attacks["bim"]
    RunDir(paths[1]).write_eval("best", rec)
    out = tmp_path / "r"
    md = build_report([RunRecord.load(p) for p in paths], out, formats=("md", "csv")).read_text()
    assert _table(md)["trades"]["BIM-10"] == "—"
    rows = {r["run"]: r for r in csv.DictReader((out / "results.csv").open(encoding="utf-8"))}
    assert (rows["trades"]["bim_pct"], rows["trades"]["bim_seeds"], rows["sat"]["bim_seeds"]) == ("", "0", "1")


def test_autoattack_headers_name_the_subset_of_their_own_checkpoint(tmp_path: Path) -> None:
    # AutoAttack on the first 40 images at `best` and the first 20 at `last`: both tables, and results.tex, said
    # "first 40/20", as if the best checkpoint's rows mixed the two subsets
    from tests.test_report import _autoattack

    path = _make_run(tmp_path, "sat-s0", 0, "sat", 0.8, 0.4, teacher=None, aa=0.3)
    best = _record("best", 2, 0.8, 0.4, seed=0)
    RunDir(path).write_eval("best", EvalFile.of(best, autoattack_subset=_autoattack(best, 0.3, k=40)))
    out = tmp_path / "r"
    md = build_report([RunRecord.load(path)], out, formats=("md", "tex")).read_text()
    assert "AutoAttack (first 40)" in _table(md)["sat"] and "AutoAttack (first 20)" in _table(md, "## `last`")["sat"]
    assert "40/20" not in md and "on the first 40 test images" in (out / "results.tex").read_text()
    rec = RunDir(path).read_eval("best")
    rec.autoattack_subset = None  # AutoAttack at `last` only: its table still shows it
    RunDir(path).write_eval("best", rec)
    md = build_report([RunRecord.load(path)], tmp_path / "r2").read_text()
    assert _table(md)["sat"]["AutoAttack"] == "not run"
    last = _table(md, "## `last`")["sat"]
    assert (last["Clean (first 20)"], last["AutoAttack (first 20)"]) == ("90.00", "20.00")


def _with_teacher_sha(path: Path, sha: str | None) -> Path:
    run = RunDir(path)
    info = run.read_info()
    info.teacher_sha256 = sha
    run.write_info(info)
    return path


def test_which_teacher_file_each_row_learned_from_is_shown_and_a_mix_is_said_above_the_table(tmp_path: Path) -> None:
    # run.json records the SHA-256 of the teacher's weights, but a report showed only the teacher's name: students
    # of two teacher files named resnet20 (a teacher trained again in place) shared a table and a row without a word
    a, b = "a" * 64, "b" * 64
    specs = [("dard-s0", 0, "dard"), ("dard-s1", 1, "dard"), ("trades-s0", 0, "trades")]
    paths = [_make_run(tmp_path, n, s, m, 0.8, 0.4, teacher="resnet20", aa=0.3) for n, s, m in specs]
    for p in paths:
        _with_teacher_sha(p, a)
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r1").read_text()
    assert "different teacher files" not in md and "cannot be told" not in md
    section = _table(md, "## Teachers")
    assert section["dard"]["SHA-256"] == a[:12] and section["dard"]["Seeds"] == "0, 1"
    assert section["trades"]["Weights file (as recorded)"] == "t.safetensors"
    assert section["trades"]["Teacher"] == "resnet20"
    runs = json.loads((tmp_path / "r1" / "results.json").read_text())["runs"]
    assert [r["teacher_sha256"] for r in runs] == [a, a, a]

    _with_teacher_sha(paths[1], b)  # seed 1 of dard learned from another file of the same name
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r2", formats=("md", "tex", "csv")).read_text()
    note = (
        "Rows distilled from different teacher files** (SHA-256 of the weights): resnet20 aaaaaaaaaaaa (dard (seed 0), "
        "trades); resnet20 bbbbbbbbbbbb (dard (seed 1))."
    )
    assert f"**{note}" in md
    tex = (tmp_path / "r2" / "results.tex").read_text(encoding="utf-8")
    assert f"% {note.replace('**', '')}" in tex
    # results.csv names the teacher file too: it had the teacher's name alone, which two files shared
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "r2" / "results.csv").open(encoding="utf-8"))}
    assert rows["dard"]["teacher_sha256"] == f"{a}; {b}" and rows["trades"]["teacher_sha256"] == a

    _with_teacher_sha(paths[1], a)
    _with_teacher_sha(paths[2], None)  # an older run.json: which file it learned from cannot be told
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r3", formats=("md", "tex", "csv")).read_text()
    note = "Which teacher file some rows learned from cannot be told** (their run.json records no teacher SHA-256, "
    assert f"**{note}from before dard recorded it): trades." in md
    assert "% " + note.replace("**", "") in (tmp_path / "r3" / "results.tex").read_text(encoding="utf-8")
    assert _table(md, "## Teachers")["trades"]["SHA-256"] == "not recorded"
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "r3" / "results.csv").open(encoding="utf-8"))}
    assert rows["trades"]["teacher_sha256"] == "not recorded" and rows["dard"]["teacher_sha256"] == a
    run = RunDir(paths[2])  # a hand-made run.json's teacher of other types is shown as text, not an internal error
    info = run.read_info()
    info.teacher = {"source": ["t", 1], "arch": {"a": 1}, "epoch": [2]}
    run.write_info(info)
    md = build_report([RunRecord.load(p) for p in paths], tmp_path / "r4", formats=("md", "tex")).read_text()
    assert _table(md, "## Teachers")["trades"]["Epoch"] == "[2]"
