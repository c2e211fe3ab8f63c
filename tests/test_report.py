"""The report over finished run folders: grouping by seed, mean ± std, results.json, plots, flags, errors.

The run folders are written through dard.run_dir's writers with hand-picked numbers, so every expected cell is a
closed form of them.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from dard.errors import DardError
from dard.evaluation.record import AttackResult, Count, EvalRecord
from dard.evaluation.sanity import sanity_flags
from dard.report import build_report, markdown_table
from dard.report.markdown import md_code, md_text
from dard.run_dir import EpochMetrics, EpsSweep, EvalFile, Progress, RunDir, RunInfo, RunRecord

EPS = 8 / 255
# the suite's attacks as records hold them (name and steps: what the report's headers are made of)
CONFIGS = {
    "fgsm": {"name": "fgsm"},
    "pgd20": {"name": "pgd", "steps": 20, "random_start": True, "loss": "ce"},
    "pgd-ll": {"name": "tpgd", "steps": 10, "target": "least_likely"},
    "bim": {"name": "bim", "steps": 10},
    "cw-linf": {"name": "cw", "steps": 20},
    "dpgd": {"name": "dpgd", "steps": 20},
    "pgd-large": {"name": "pgd", "steps": 20},
    "autoattack": {"name": "autoattack", "version": "standard"},
}
# the main table's headers of those attacks (pgd-large, at eps 0.5, is in the sanity table)
HEADERS = ["FGSM", "PGD-20", "PGD-LL-10 (targeted, least-likely)", "BIM-10", "CW-inf-20", "DPGD-20"]
# each attack's accuracy above the run's pgd20 accuracy (FGSM the weakest attack, as a sound suite finds)
OFFSET = {"fgsm": 0.05, "pgd20": 0.0, "pgd-ll": 0.02, "bim": 0.01, "cw-linf": 0.03, "dpgd": 0.04}


def _acc(acc: float, n: int) -> Count:
    return Count(round(acc * n), n)


def _result(label: str, acc: float, n: int, eps: float = EPS) -> AttackResult:
    return AttackResult({**CONFIGS[label], "eps": eps}, round(acc * n), n, min(eps, EPS), 0.1)


def _record(which: str, epoch: int, clean: float, pgd: float, *, seed: int, large: float = 0.0, n=100) -> EvalRecord:
    """A record with the suite's attacks around ``pgd`` and its real sanity flags (pgd-large survivors flag)."""
    attacks = {label: _result(label, pgd + off, n) for label, off in OFFSET.items()}
    attacks["pgd-large"] = _result("pgd-large", large, n, eps=0.5)
    rec = EvalRecord(
        model={"arch": "resnet18", "num_classes": 10, "checkpoint": which, "epoch": epoch},
        data={"name": "cifar10", "split": "test", "n": n},
        threat_model={"norm": "linf", "eps": EPS},
        clean=_acc(clean, n),
        attacks=attacks,
        worst_case=_acc(pgd - 0.05, n),
        flags=[],
        seed=seed,
        environment={"torch": "x"},
        seconds=1.0,
    )
    rec.flags = sanity_flags(rec)
    return rec


def _autoattack(rec: EvalRecord, acc: float, k: int = 20) -> EvalRecord:
    attacks = {"autoattack": _result("autoattack", acc, k)}  # correct: round(acc * k) of the subset's 18
    return EvalRecord(
        rec.model, {**rec.data, "n": k}, rec.threat_model, _acc(0.9, k), attacks, _acc(acc, k), [], 0, {}, 1
    )


def _make_run(
    root: Path,
    name: str,
    seed: int,
    method: str,
    clean: float,
    pgd: float,
    *,
    teacher: str | None,
    aa: float,
    large: float = 0.0,
    last_clean: float = 0.5,
    sweep: bool = True,
    train_seconds: float | None = None,
    snapshot_seconds: float | None = None,
) -> Path:
    """A finished run: run.json, 3 epochs of metrics (validation on the first two), best (epoch 2) and last
    (epoch 3) evaluations; the training time in metrics.jsonl, only in a resume snapshot, or nowhere."""
    run = RunDir(root / name)
    run.path.mkdir(parents=True)
    spec = {"arch": "resnet18", "num_classes": 10, "in_channels": 3, "mean": None, "std": None}
    run.write_info(
        RunInfo(
            name=name,
            seed=seed,
            method={"name": method, "beta": 6.0},
            student=spec,
            teacher=None if teacher is None else {"source": "t.safetensors", "arch": teacher, "num_classes": 10},
            data={"name": "cifar10", "train": 900, "val": 100, "test": 100},
        )
    )
    rows = [EpochMetrics(e, 0.1, 1.0, 0.5, 100.0, None, clean - 0.1 + 0.05 * e, pgd - 0.1 + 0.05 * e) for e in (1, 2)]
    rows.append(EpochMetrics(3, 0.01, 0.9, 0.6, 100.0))
    if train_seconds is not None:  # cumulative, as the training loop writes it
        for i, r in enumerate(rows, start=1):
            r.train_seconds = train_seconds * i / len(rows)
    if snapshot_seconds is not None:  # an older run: training time only in its final resume snapshot
        snap = run.snapshot(42)
        snap.write_progress(Progress(epoch=3, global_step=42, train_seconds=snapshot_seconds))
        run.point_at(snap)
    run.write_metrics(rows)
    sw = EpsSweep("pgd20", accuracy={f"{e:.6f}": a for e, a in {0.0: clean, EPS: pgd, 16 / 255: pgd / 2}.items()})
    best = _record("best", 2, clean, pgd, seed=seed, large=large)
    run.write_eval("best", EvalFile.of(best, autoattack_subset=_autoattack(best, aa), eps_sweep=sw if sweep else None))
    last = _record("last", 3, last_clean, pgd - 0.1, seed=seed)
    run.write_eval("last", EvalFile.of(last, autoattack_subset=_autoattack(last, aa - 0.1), eps_sweep=None))
    return run.path


def _table(md: str, heading: str | None = None, *, intervals: bool = False) -> dict[str, dict[str, str]]:
    """The first Markdown table after ``heading`` (or in the whole text): row name -> column -> cell (without the
    trailing 95% interval ``[lo, hi]`` unless ``intervals``)."""
    part = md.split(heading, 1)[1] if heading else md
    lines = [ln for ln in part.split("\n\n## ", 1)[0].splitlines() if ln.startswith("|")]
    cols = [_plain(c) for c in md_cells(lines[0])]
    rows = [[_plain(c) if intervals else _no_ci(_plain(c)) for c in md_cells(ln)] for ln in lines[2:]]
    return {r[0]: dict(zip(cols, r)) for r in rows}


def md_cells(line: str) -> list[str]:
    """The raw cells of a Markdown table row as GitHub splits them: at each ``|`` that no backslash escapes."""
    cells, cell, i = [], "", 1  # past the leading "|"
    body = line.rstrip()
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            cell, i = cell + body[i : i + 2], i + 2
        elif body[i] == "|":
            cells, cell, i = [*cells, cell.strip()], "", i + 1
        else:
            cell, i = cell + body[i], i + 1
    return cells


def _plain(text: str) -> str:
    """Markdown text with its backslash escapes resolved (CommonMark's: a backslash before ASCII punctuation): what a
    reader sees."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


def _no_ci(cell: str) -> str:
    return re.sub(r" \[[0-9.]+, [0-9.]+\]$", "", cell.strip())


@pytest.fixture
def runs(tmp_path: Path) -> list[RunRecord]:
    paths = [
        _make_run(tmp_path, "dard-s0", 0, "dard", 0.80, 0.50, teacher="wrn34_10", aa=0.45, large=0.3,
                  last_clean=0.70, train_seconds=120.0),
        _make_run(tmp_path, "dard-s1", 1, "dard", 0.90, 0.54, teacher="wrn34_10", aa=0.50, last_clean=0.74,
                  train_seconds=180.0),
        _make_run(tmp_path, "sat-s0", 0, "sat", 0.85, 0.40, teacher=None, aa=0.35, last_clean=0.80, sweep=False,
                  snapshot_seconds=60.0),
    ]  # fmt: skip
    return [RunRecord.load(p) for p in paths]


@pytest.fixture
def report(runs: list[RunRecord], tmp_path: Path) -> tuple[str, dict, Path]:
    out = tmp_path / "report"
    md_path = build_report(runs, out, title="my report")
    assert md_path == out / "report.md"
    return md_path.read_text(encoding="utf-8"), json.loads((out / "results.json").read_text()), out


def test_main_table_is_mean_and_sample_std_over_seeds(report):
    md, _, _ = report
    assert md.startswith("# my report")
    table = _table(md)
    assert list(table["dard"]) == [
        "Run", "Method", "Student", "Teacher", "Seeds (n)", "Clean", *HEADERS, "Clean (first 20)",
        "AutoAttack (first 20)", "Worst case"
    ]  # fmt: skip
    dard = table["dard"]
    assert dard["Method"] == "dard" and dard["Student"] == "resnet18" and dard["Teacher"] == "wrn34_10"
    assert dard["Seeds (n)"] == "2"
    assert dard["Clean"] == "85.00 ± 7.07"  # mean(80, 90), sample std sqrt(50)
    assert dard["PGD-20"] == "52.00 ± 2.83"  # mean(50, 54), sample std sqrt(8)
    assert dard["FGSM"] == f"{57.0:.2f} ± {statistics.stdev([55, 59]):.2f}"
    assert dard["AutoAttack (first 20)"] == "47.50 ± 3.54"
    assert dard["Clean (first 20)"] == "90.00 ± 0.00"  # the subset's own clean accuracy, 18 of 20 in both seeds
    assert dard["Worst case"] == "47.00 ± 2.83"
    sat = table["sat"]
    assert sat["Teacher"] == "—" and sat["Seeds (n)"] == "1"
    assert sat["Clean"] == "85.00" and sat["PGD-20"] == "40.00" and sat["AutoAttack (first 20)"] == "35.00"
    assert "±" not in " ".join(sat.values())


def test_last_checkpoint_table(report):
    md, _, _ = report
    table = _table(md, "## `last` checkpoint")
    assert list(table["dard"])[-4:] == ["Clean", "PGD-20", "Clean (first 20)", "AutoAttack (first 20)"]
    assert table["dard"]["Clean"] == "72.00 ± 2.83"
    assert table["dard"]["PGD-20"] == "42.00 ± 2.83"
    assert table["dard"]["Epoch (best / last)"] == "2, 2 / 3, 3"
    assert table["sat"]["Clean"] == "80.00"


def test_training_cost_from_metrics_or_the_resume_snapshot(report):
    md, res, _ = report
    table = _table(md, "## Training cost")
    # dard: the cumulative train_seconds of the last metrics row; sat: only in its resume snapshot
    assert table["dard"]["Train time (min)"] == "2.5 ± 0.7"  # 2 and 3 min, sample std sqrt(0.5)
    assert table["dard"]["Train images/s"] == "19 ± 5"  # 900 images x 3 epochs / 120 s and / 180 s: 22.5, 15
    assert table["dard"]["Seeds (n)"] == "2"
    assert table["sat"]["Train time (min)"] == "1.0" and table["sat"]["Train images/s"] == "45"
    assert {g["name"]: g for g in res["groups"]}["dard"]["train_minutes"]["values"] == pytest.approx([2.0, 3.0])


def test_flags_setup_and_plot_links(report):
    md, _, _ = report
    flags = md.split("## Flags", 1)[1].split("\n## ", 1)[0]
    # the suite's own sanity check, on the one record with pgd-large survivors
    assert "- dard-s0 (seed 0, best): pgd-large: 30.00%, 30/100, of points survive PGD at eps 0.5" in flags
    assert flags.count("\n- ") == 1
    setup = md.split("## Setup", 1)[1]
    assert "validation split" in setup
    assert "linf, eps = 8/255 (0.031373)" in setup and "cifar10, test n = 100" in setup
    assert "AutoAttack runs on the first 20 test images only" in setup
    assert "(curves.png)" in md and "(eps_curve.png)" in md


def test_results_json_holds_every_number(report):
    _, res, _ = report
    by_name = {r["name"]: r for r in res["runs"]}
    assert set(by_name) == {"dard-s0", "dard-s1", "sat-s0"}
    assert by_name["dard-s1"]["seed"] == 1 and by_name["dard-s1"]["method"]["name"] == "dard"
    assert by_name["dard-s0"]["best"]["clean"] == pytest.approx(0.80)
    assert by_name["dard-s0"]["last"]["clean"] == pytest.approx(0.70)
    assert by_name["sat-s0"]["best"]["pgd20"] == pytest.approx(0.40)
    assert by_name["sat-s0"]["best"]["autoattack_subset"] == pytest.approx(0.35)
    assert by_name["sat-s0"]["train_seconds"] == pytest.approx(60.0)
    assert by_name["dard-s1"]["train_images_per_s"] == pytest.approx(15.0)
    # a float-only sweep (as older files hold) is stored as exact counts of the record's images
    assert by_name["dard-s0"]["eps_sweep"]["correct"][f"{EPS:.6f}"] == 50
    assert by_name["dard-s0"]["eps_sweep"]["total"] == 100
    groups = {g["name"]: g for g in res["groups"]}
    assert groups["dard"]["n"] == 2 and groups["dard"]["seeds"] == [0, 1]
    assert groups["dard"]["best"]["clean"]["mean"] == pytest.approx(0.85)
    assert groups["dard"]["best"]["clean"]["std"] == pytest.approx(statistics.stdev([0.8, 0.9]))
    assert groups["dard"]["best"]["clean"]["n"] == 2
    assert groups["sat"]["best"]["clean"]["std"] is None
    assert groups["sat"]["last"]["pgd20"]["mean"] == pytest.approx(0.30)


@pytest.mark.plots
def test_plots_are_pngs_and_no_temp_file_is_left(report):
    _, _, out = report
    for name in ("curves.png", "eps_curve.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_no_flags_no_sweep_no_cost(tmp_path: Path) -> None:
    run = RunRecord.load(_make_run(tmp_path, "sat_seed3", 3, "sat", 0.85, 0.40, teacher=None, aa=0.35, sweep=False))
    md = build_report([run], tmp_path / "r").read_text()
    assert "## Flags\n\nnone" in md
    assert "## Training cost" not in md  # no training time recorded: no cost table of dashes
    assert _table(md)["sat"]["Clean"] == "85.00"
    assert not (tmp_path / "r" / "eps_curve.png").exists()
    assert (tmp_path / "r" / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_run_record_reads_every_file(runs: list[RunRecord]) -> None:
    run = runs[0]
    assert run.name == "dard-s0" and run.seed == 0 and run.teacher["arch"] == "wrn34_10"
    assert set(run.evals) == {"best", "last"} and len(run.metrics) == 3
    assert run.train_seconds == pytest.approx(120.0)
    assert run.evals["best"].autoattack_subset.attacks["autoattack"].accuracy == pytest.approx(0.45)


def test_a_cpus_model_is_named_beside_its_device_where_run_json_records_it(tmp_path: Path) -> None:
    """Every CPU's device name reads 'cpu (x86_64, N threads)', while an AMD EPYC that emulates bf16 trains 30 times
    slower than an Intel CPU with native bf16: the report's Device line and column name the model where run.json
    records it (older records, without it, read as before)."""
    path = _make_run(tmp_path, "sat-s0", 0, "sat", 0.85, 0.40, teacher=None, aa=0.35, train_seconds=60.0)
    run = RunDir(path)
    cpu = {"device": "cpu", "device_name": "cpu (x86_64, 2 threads)"}
    for extra, shown in [
        ({}, "cpu (x86_64, 2 threads)"),
        (
            {"cpu_model": "AMD EPYC 7B13", "cpu_native_bf16": False},
            "cpu (x86_64, 2 threads; AMD EPYC 7B13, emulated bf16)",
        ),
        ({"cpu_model": "Intel Xeon", "cpu_native_bf16": None}, "cpu (x86_64, 2 threads; Intel Xeon)"),
    ]:
        info = run.read_info()
        info.environment = {**cpu, **extra}
        run.write_info(info)
        assert RunRecord.load(path).device == shown
    md = build_report([RunRecord.load(path)], tmp_path / "r").read_text()
    assert _table(md, "## Training cost")["sat"]["Device"] == "cpu (x86_64, 2 threads; Intel Xeon)"
    info.environment = {"device": "cuda:0", "device_name": "NVIDIA H100", "cpu_model": "AMD EPYC 7B13"}
    run.write_info(info)
    assert RunRecord.load(path).device == "NVIDIA H100"  # a GPU run's host CPU is not where it trained


def test_training_time_not_recorded_is_none(tmp_path: Path) -> None:
    plain = _make_run(tmp_path, "plain-s0", 0, "sat", 0.8, 0.4, teacher=None, aa=0.3)
    assert RunRecord.load(plain).train_seconds is None  # recorded neither in metrics.jsonl nor in a snapshot
    (plain / "resume.json").write_text(json.dumps({"snapshot": "state-gone"}))
    assert RunRecord.load(plain).train_seconds is None  # a dangling pointer is "not recorded", not a crash


def test_unfinished_or_missing_runs_are_errors(runs: list[RunRecord], tmp_path: Path) -> None:
    bare = tmp_path / "unfinished"
    RunDir(bare).path.mkdir()
    RunDir(bare).write_info(RunInfo())
    with pytest.raises(DardError, match="not a finished dard run .no eval/best.json"):
        RunRecord.load(bare)
    with pytest.raises(DardError, match="not a finished dard run"):
        RunRecord.load(tmp_path / "does-not-exist")
    with pytest.raises(DardError, match="no run folders"):
        build_report([], tmp_path / "r")
    only_last = RunDir(runs[0].path)
    only_last.eval_file("best").unlink()
    with pytest.raises(DardError, match=r"has no eval/best\.json"):
        build_report([RunRecord.load(only_last.path)], tmp_path / "r")


def test_markdown_table_escapes_pipes_and_right_aligns_numbers() -> None:
    lines = markdown_table(["Run", "a|b"], [["x|y", "1.00"], ["two\nlines", "2"]], text_columns=1)
    assert lines == ["| Run | a\\|b |", "|---|---:|", "| x\\|y | 1.00 |", "| two lines | 2 |"]


#: names a run, a method, a model or an attack may have (any printable text): Markdown, LaTeX and spreadsheet markup
HOSTILE = [
    "a|b",
    "x\\|y",
    "*bold* _it_ ~~del~~",
    "`code` ``two``",
    "<img src=x onerror=alert(1)>",
    "[link](javascript:alert(1)) ![i](x.png)",
    "$x^2$ & 50% #1 {a} \\textbf{b} ~c",
    "# heading",
    "1. list",
    '=HYPERLINK("http://x")',
    "+1",
    "-2",
    "@SUM(A1)",
    "üñí 𝛼 中文",
    "[0pt] row",
    "*star",
    "en--dash---em",
    "x" * 128,
]
#: what Markdown reads as markup inside a line once the escapes are taken out: code, emphasis (``_`` but inside a
#: word), links, HTML, cells, strikethrough, math, an entity, a backslash escape
_MARKUP = re.compile(r"[`*\[\]<|~$]|(?<![^\W_])_|_(?![^\W_])|&#?\w+;|\\[!-/:-@\[-`{-~]|\\$")


def _hostile_runs(tmp_path: Path) -> list[RunRecord]:
    """A run per hostile name (as its name, method, student and teacher), with an attack and a flag named after it."""
    paths = []
    for i, name in enumerate(HOSTILE):
        path = _make_run(tmp_path, f"run{i}", 0, "sat", 0.85, 0.40, teacher=None, aa=0.35)
        run = RunDir(path)
        info = run.read_info()
        info.name, info.method["name"], info.student["arch"] = name, name, name
        info.teacher = {"arch": name}
        run.write_info(info)
        rec = run.read_eval("best")
        rec.attacks[name] = AttackResult({"name": name, "eps": EPS}, 40, 100, EPS, 0.1)
        rec.flags = [f"flag {name}"]
        run.write_eval("best", rec)
        paths.append(path)
    return [RunRecord.load(p) for p in paths]


@pytest.mark.plots
def test_names_with_markup_are_shown_as_they_are_in_report_md(tmp_path: Path) -> None:
    # a run named `a|b` added a cell to its row, `x\|y` escaped its backslash and split the cell, backticks, `*`,
    # `<img ...>` and `[..](javascript:..)` became code, emphasis, HTML and links, `# heading` in the runs list a
    # heading: a record's text was pasted into report.md as Markdown
    md = build_report(_hostile_runs(tmp_path), tmp_path / "r").read_text(encoding="utf-8")
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    widths = {len(md_cells(ln)) for ln in lines if not ln.startswith("|---")}
    header = next(ln for ln in lines if ln.startswith("| Run | Method |"))
    for name in HOSTILE:
        rows = [md_cells(ln) for ln in lines if _plain(md_cells(ln)[0]) == name]
        assert rows, name  # the main, sanity, last-checkpoint, time tables: the name whole in its first cell
        for row in rows:
            assert _plain(row[0]) == name and not _MARKUP.search(re.sub(r"\\[!-/:-@\[-`{-~]", "", row[0])), row[0]
        main = next(r for r in rows if len(r) == len(md_cells(header)))
        assert [_plain(c) for c in main[1:4]] == [name, name, name]  # method, student, teacher
        assert name in [_plain(c) for c in md_cells(header)]  # the attack's column
    assert len(widths) <= 8  # one width per table, never one more for a row with a `|` in a name
    listed = [ln for ln in md.splitlines() if ln.startswith("- ")]
    for name in HOSTILE:
        shown = [_plain(ln[2:]) for ln in listed if _plain(ln[2:]).startswith(f"{name} (seed 0")]
        assert len(shown) == 2 and f"{name} (seed 0, best): flag {name}" in shown  # the flag and the runs list
    assert not [ln for ln in md.splitlines() if ln.startswith("#") and not ln.startswith(("# dard report", "## "))]
    assert md_code("a`b") == "``a`b``" and md_code("`x") == "`` `x ``" and md_code("p\nq") == "`p q`"


def test_text_is_escaped_only_where_markdown_would_read_it() -> None:
    # report.md showed `torch 2\.13.0+cpu` and `x86\_64`: every character Markdown can read as markup somewhere was
    # escaped everywhere, so the raw file read wrong (and `\&`, `\^` are shown with their backslash by some viewers)
    same = ["torch 2.13.0+cpu", "2.13.0", "x86_64", "batch_size_2", "R&D & co", "a > b", "2^10", "C:\\data x", "#1"]
    assert [md_text(t) for t in same] == same
    assert md_text("_x_ *y* a_ &amp; &#60; `z` [l](u) <b> |~$ end\\") == (
        "\\_x\\_ \\*y\\* a\\_ \\&amp; \\&#60; \\`z\\` \\[l\\](u) \\<b> \\|\\~\\$ end\\\\"
    )
    assert md_text("a\\*b") == "a\\\\\\*b"  # a backslash before punctuation is an escape: doubled
    starts = {"# h": "\\# h", "- x": "\\- x", "+1": "\\+1", "> q": "\\> q", "12. x": "12\\. x", "3) y": "3\\) y"}
    assert {t: md_text(t, start=True) for t in starts} == starts
    assert [md_text(t) for t in starts] == list(starts)  # inside a line or a table cell they start no block
    for name in [*HOSTILE, *same]:
        assert _plain(md_text(name)) == name == _plain(md_text(name, start=True))


@pytest.mark.plots
def test_a_character_the_font_lacks_adds_no_warning_line(tmp_path: Path) -> None:
    # matplotlib warned once per character its font lacks (a run named with U+1D6FC), a line beside the command's
    import warnings

    from matplotlib.figure import Figure

    from dard.report.plots import save_png

    fig = Figure()
    fig.add_subplot().set_title("run \U0001d6fc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_png(fig, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.plots
def test_names_are_plain_text_in_the_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a run named $\frac{$ ended `dard report` with matplotlib's mathtext parse error (an internal error), a$b$c was
    # set as math, and _under was left out of the legend (matplotlib skips labels that start with "_")
    import dard.report.plots as plots

    names = ["$\\frac{$", "a$b$c", "_under"]
    paths = [_make_run(tmp_path, f"run{i}", 0, f"m{i}", 0.85, 0.40, teacher=None, aa=0.35) for i in range(3)]
    for path, name in zip(paths, names):
        info = RunDir(path).read_info()
        info.name = name
        RunDir(path).write_info(info)
    legends: dict[str, list[str]] = {}
    save = plots.save_png

    def keep_legend(fig, path, **kw):
        fig.canvas.draw()  # mathtext is parsed when drawn
        legends[path.name] = [t.get_text() for t in fig.legends[0].get_texts()]
        return save(fig, path, **kw)

    monkeypatch.setattr(plots, "save_png", keep_legend)
    build_report([RunRecord.load(p) for p in paths], tmp_path / "r")
    assert legends["curves.png"] == legends["eps_curve.png"] == ["\\$\\frac{\\$", "a\\$b\\$c", " _under"]


@pytest.mark.plots
def test_many_runs_with_long_names_make_a_legible_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 30 runs named with 128 characters: each axis drew its own legend over its lines, wider than the plots, and the
    # 11th row had the 1st row's colour and line (matplotlib's 10-colour cycle), so two rows read as one
    import warnings

    import dard.report.plots as plots

    paths = []
    for i in range(24):
        path = _make_run(tmp_path, f"r{i}", 0, f"m{i}", 0.5 + 0.01 * i, 0.3, teacher=None, aa=0.2)
        info = RunDir(path).read_info()
        info.name = (f"run{i:02d}-" + "x" * 130)[:127] + "abc"[i % 3]  # the same middle, different ends
        RunDir(path).write_info(info)
        paths.append(path)
    seen: dict[str, tuple[list[str], list[tuple], list, list]] = {}
    save = plots.save_png

    def keep(fig, path, **kw):
        fig.canvas.draw()
        (legend,) = fig.legends
        lines = [(ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in fig.axes[0].get_lines()]
        boxes = [ax.get_window_extent() for ax in fig.axes]
        seen[path.name] = ([t.get_text() for t in legend.get_texts()], lines, boxes, [legend.get_window_extent()])
        return save(fig, path, **kw)

    monkeypatch.setattr(plots, "save_png", keep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a layout warning would be a line beside the command's
        build_report([RunRecord.load(p) for p in paths], tmp_path / "r")
    for labels, lines, boxes, (legend,) in seen.values():
        assert len(labels) == len(set(labels)) == 24 and max(map(len, labels)) <= 48
        assert labels[0].startswith("run00-x") and labels[0].endswith("xa")  # cut in the middle, its end kept
        assert len(set(lines)) == 24  # no two rows drawn alike
        assert all(legend.y1 <= box.y0 for box in boxes)  # below the plots, never over a line


def test_a_report_over_an_earlier_one_leaves_none_of_its_files(tmp_path: Path) -> None:
    # `dard report A B --format md,csv,tex --out r`, then `dard report A --out r`: the first report's results.csv,
    # results.tex, eps_curve.png and B's RobustBench entry stayed beside the new report.md with other numbers
    paths = [_make_run(tmp_path, f"{m}-s0", 0, m, 0.8, 0.4, teacher=None, aa=0.3) for m in ("sat", "dard")]
    out = tmp_path / "r"
    build_report([RunRecord.load(p) for p in paths], out, formats=("md", "csv", "tex"))
    assert {p.name for p in out.iterdir()} >= {"results.csv", "results.tex", "eps_curve.png"}
    (out / "robustbench" / "mine.json").write_text('{"footnote": "my own entry"}')  # not dard's: kept
    (out / "notes.txt").write_text("mine")
    rec = RunDir(paths[0]).read_eval("best")
    rec.eps_sweep = None  # no eps_curve.png this time
    RunDir(paths[0]).write_eval("best", rec)
    build_report([RunRecord.load(paths[0])], out)
    names = ["curves.png", "notes.txt", "report.md", "results.json", "robustbench"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert sorted(p.name for p in (out / "robustbench").iterdir()) == ["mine.json", "sat-s0.json"]
    build_report([RunRecord.load(paths[0])], out, formats=("md", "csv"))  # what it writes again, it replaces
    assert (out / "results.csv").read_text().startswith("run,method,")


def test_a_results_json_too_large_for_a_report_is_read_no_further(tmp_path: Path) -> None:
    # `--out DIR`'s results.json was read whole to tell whether DIR holds a report dard wrote: a file of gigabytes
    # was loaded into memory before the answer
    from dard.report.out import check_report_out
    from dard.run_dir.files import MAX_RECORD_BYTES

    out = tmp_path / "r"
    out.mkdir()
    with open(out / "results.json", "wb") as fh:
        fh.truncate(MAX_RECORD_BYTES + 1)  # sparse: no disk, and nothing past the bound is read
    with pytest.raises(DardError, match=r"r/results.json: over 64 MiB, not a report results file dard wrote"):
        check_report_out(out)


def test_a_report_never_lands_inside_one_of_its_runs(runs: list[RunRecord], tmp_path: Path, capsys) -> None:
    # a run dard reads without a config.yaml (hand-made, or one whose config was left behind) was no run folder to
    # the --out check: `dard report RUN --out RUN` wrote report.md, results.json and the plots among its files
    from tests.cli_checks import fails_cleanly

    run = runs[0].path
    assert not (run / "config.yaml").exists()
    (tmp_path / "link").symlink_to(run)
    for out in (run, run / "eval", run / "new", tmp_path / "link" / "r"):
        fails_cleanly(capsys, tmp_path, ["report", str(run), "--out", str(out)], "lies inside run folder")
    with pytest.raises(DardError, match="lies inside run folder"):
        build_report(runs, runs[1].path / "r")
