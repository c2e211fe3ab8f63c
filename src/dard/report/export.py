"""A report's tables for a paper: the main table as CSV and as a LaTeX tabular, and a RobustBench-style JSON entry
(``model_info/<dataset>/<threat>/<name>.json`` fields) per run.

CSV cells are plain numbers in percent (mean, sample std over seeds, the Wilson 95% interval at the mean for fewer
than 10,000 test points, the test points, and the seeds behind the number); TeX cells read ``mean $\\pm$ std`` with
``(k of n seeds)`` in small type where only some of the row's seeds have the number, as ``report.md`` says it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dard.evaluation.intervals import CI_BELOW, wilson_interval
from dard.evaluation.rounding import percent
from dard.io import write_json, write_text
from dard.report.columns import AA_CLEAN, AA_KEY, Column, eps_text
from dard.report.markdown import ReportContent
from dard.report.paired import ALPHA
from dard.report.paired_section import REFERENCES
from dard.report.stats import above_clean, autoattack_result
from dard.report.tables import table_notes
from dard.report.teachers import row_teacher_sha256
from dard.report.tex import tex_escape
from dard.run_dir import RunRecord

__all__ = [
    "FORMATS",
    "csv_text",
    "robustbench_entry",
    "table_columns",
    "tex_escape",
    "write_csv",
    "write_robustbench",
    "write_tex",
]

#: what `dard report --format` accepts (md is always written)
FORMATS = ("md", "csv", "tex")
# CSV cells a spreadsheet reads as a formula (OWASP's list): shown as text, behind a quote
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def table_columns(rep: ReportContent) -> list[tuple[str, str]]:
    """The accuracy columns of the main table: (metric key, header); the AutoAttack pair only when it was run."""
    aa = (AA_KEY, AA_CLEAN)
    return [(c.key, c.header) for c in rep.columns if rep.has_aa or c.key not in aa]


def tex_columns(rep: ReportContent) -> list[Column]:
    """The TeX table's few columns, narrow enough for one column of a paper: clean, PGD-20 (the first threat-model
    attack when there is no ``pgd20``), AutoAttack beside its subset's clean accuracy (when run) and the worst case
    over the whole suite; the other attacks are in ``report.md`` and ``results.csv``."""
    attacks = [c for c in rep.columns if c.clean_key == "clean" and c.key != "worst_case"]
    pgd = next((c for c in attacks if c.key == "pgd20"), attacks[0] if attacks else None)
    keep = {"clean", "worst_case", *((AA_CLEAN, AA_KEY) if rep.has_aa else ()), *((pgd.key,) if pgd else ())}
    return [c for c in rep.columns if c.key in keep]


def _interval(summary: Mapping[str, Any]) -> tuple[float, float] | None:
    points, mean = summary.get("points"), summary.get("mean")
    if mean is None or not points or points >= CI_BELOW:
        return None
    return wilson_interval(mean, points)


def _pct(value: float | None) -> str:
    return "" if value is None else percent(value, 4)


def _versus(rep: ReportContent) -> list[str]:
    """The reference methods the rows are compared with (``dard``, ``sat``: the marks of report.md and TeX)."""
    if rep.paired is None:
        return []
    return [method for method, mark in REFERENCES.items() if mark in rep.paired.references]


def _compared(rep: ReportContent, name: str, method: str, key: str) -> list[Any]:
    """``[significant, largest p]`` of row ``name`` against ``method``'s row on ``key``: ``yes``/``no`` and the
    largest per-seed McNemar p-value (what "p < 0.05 in every seed" reads, with one row ahead in all), blank where
    nothing was paired."""
    cmp = rep.paired.against(name, method, key) if rep.paired else None
    if cmp is None:
        return ["", ""]
    return ["yes" if cmp.significant else "no", repr(max(s.p for s in cmp.seeds))]


def write_csv(rep: ReportContent, path: Path) -> Path:
    """The main table, one row per group: identity columns (the teacher's name and the SHA-256 of the weights file
    its seeds learned from, as report.md's Teachers section gives it), then per accuracy its mean, std, 95% interval
    (%), the test points per run and the seeds behind the mean, and per reference row (DARD, SAT: report.md's ``†``,
    ``‡``) whether the row differs from it significantly on the same images and the largest per-seed p-value."""
    cols = table_columns(rep)
    versus = _versus(rep)
    header = ["run", "method", "student", "teacher", "teacher_sha256", "seeds"]
    for key, _ in cols:
        header += [f"{key}_pct", f"{key}_std_pct", f"{key}_ci95_low_pct", f"{key}_ci95_high_pct", f"{key}_points"]
        header += [f"{key}_seeds"]  # a row's mean may stand on fewer seeds than the row has (a pending attack)
        if key != AA_CLEAN:  # the clean accuracy of AutoAttack's subset is not compared (its robust one is)
            header += [f"{key}_{what}_vs_{m}" for m in versus for what in ("significant", "p")]
    header = [csv_text(h) for h in header]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for g in rep.group_rows:
        sha = row_teacher_sha256(rep, g["name"])
        names = [g["name"], g["method"] or "", g["student"] or "", g["teacher"] or "", sha]
        row: list[Any] = [*map(csv_text, names), g["n"]]
        for key, _ in cols:
            s = g[rep.checkpoint].get(key) or {}
            ci = _interval(s) or (None, None)
            row += [_pct(s.get("mean")), _pct(s.get("std")), _pct(ci[0]), _pct(ci[1]), s.get("points") or ""]
            row += [s.get("n", 0)]  # 0: no seed of the row has it (blank read as "not counted")
            if key != AA_CLEAN:
                row += [cell for m in versus for cell in _compared(rep, g["name"], m, key)]
        writer.writerow(row)
    return write_text(path, buf.getvalue())


def csv_text(text: Any) -> str:
    """A text cell of ``results.csv``: ``'`` before one that a spreadsheet would run as a formula (``=``, ``+``,
    ``-``, ``@``, a tab or carriage return first: a run named ``=HYPERLINK(...)``)."""
    value = str(text)
    return "'" + value if value.startswith(_FORMULA_START) else value


def _tex_cell(s: Mapping[str, Any] | None, seeds: int, marks: str = "") -> str:
    """``mean $\\pm$ std`` of a summary, its significance marks, and ``(k of n seeds)`` when it stands on fewer
    than the row's ``seeds``."""
    if not s or s.get("mean") is None:
        return "--"
    text = percent(s["mean"], 1)
    if s.get("n", 0) >= 2 and s.get("std") is not None:
        text += f"{{\\scriptsize $\\pm${percent(s['std'], 1)}}}"
    sup = "".join(_TEX_MARKS.get(m, "") for m in marks)
    text += f"$^{{{sup}}}$" if sup else ""
    return text + (f"{{\\scriptsize\\ ({s['n']} of {seeds} seeds)}}" if 0 < s.get("n", 0) < seeds else "")


_TEX_MARKS = {"†": "\\dagger", "‡": "\\ddagger"}


def _tex_header(c: Column, rep: ReportContent) -> str:
    if c.key == AA_CLEAN:
        return "Clean$_{\\mathrm{AA}}$"
    if c.key == AA_KEY:
        return "AA"
    return "Worst" if c.key == "worst_case" else tex_escape(c.header)


def write_tex(rep: ReportContent, path: Path) -> Path:
    """The main table as a LaTeX ``tabular`` (booktabs rules), ready to ``\\input``: few, short columns
    (:func:`tex_columns`) so it fits one column of a paper; comment lines say what each column is."""
    cols = tex_columns(rep)
    aa = (
        f"AA: AutoAttack (standard) on the first {'/'.join(rep.aa_ns)} test images, beside Clean$_{{AA}}$, the "
        "clean accuracy of those images"
        if rep.has_aa
        else "AutoAttack was not run"
    )
    lines = [
        f"% dard report: {tex_escape(rep.title)}; test accuracy in %, `{rep.checkpoint}' checkpoint; mean $\\pm$ "
        "sample std over seeds (intervals and every attack: report.md, results.csv)",
        f"% {aa}; Worst: images that survive every attack of the suite",
        *(f"% {what}{detail}." for what, detail in table_notes(rep, tex_escape)),  # what report.md says above it
    ]
    if rep.paired and rep.paired.references:
        refs = ", ".join(f"{_TEX_MARKS[m]} {tex_escape(name)}" for m, name in rep.paired.references.items())
        lines.append(
            f"% marks: significantly different from ({refs}) on the same images: exact McNemar p < {ALPHA:g} in "
            "every seed (one row ahead in all), or a 95% interval of the mean paired difference (seeds' spread and "
            "test images' error) that excludes 0 (report.md, Paired comparisons, gives the images and p-values)"
        )
    lines += [
        "\\begin{tabular}{l" + "r" * len(cols) + "}",
        "\\toprule",
        " & ".join(["Method", *(_tex_header(c, rep) for c in cols)]) + " \\\\",
        "\\midrule",
    ]
    for g in rep.group_rows:
        marks = [rep.paired.mark(g["name"], c.key) if rep.paired else "" for c in cols]
        cells = [_tex_cell(g[rep.checkpoint].get(c.key), g["n"], m) for c, m in zip(cols, marks)]
        lines.append(" & ".join([tex_escape(g["name"]), *cells]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return write_text(path, "\n".join(lines))


def robustbench_entry(run: RunRecord, checkpoint: str) -> dict[str, Any]:
    """A RobustBench model-info entry for a run (accuracies as strings in %, as RobustBench writes them; the
    bibliographic fields left empty to fill in), plus the test points behind each number.

    ``clean_acc`` and ``autoattack_acc`` are measured on the same images: when AutoAttack ran on the first images
    only, ``clean_acc`` is the clean accuracy of that subset (``subset`` true, ``n_clean`` its size), and the clean
    accuracy of every evaluated image is ``clean_acc_all`` on ``n_all``. An AutoAttack accuracy above the clean
    accuracy of its images (an old record) is left out (null), and the footnote says why."""
    rec = run.evals[checkpoint]
    n_all = rec.clean.total
    clean_all = percent(rec.clean.accuracy)
    aa_res = rec.attacks.get("autoattack")
    sub = autoattack_result(rec) if aa_res is None else None
    if aa_res is not None:
        aa_acc, n, clean, subset = aa_res.accuracy, aa_res.total, clean_all, False
    elif sub is not None:
        aa_acc, n, clean, subset = sub["accuracy"], int(sub["n"]), percent(sub["clean"]), True
    else:
        aa_acc, n, clean, subset = None, n_all, clean_all, False
    bad = above_clean(rec).get("autoattack" if aa_res is not None else AA_KEY)
    images = f"the first {n} test images" + (f" (a subset of the {n_all} evaluated)" if subset else "")
    if aa_acc is None:
        aa_text = f"no AutoAttack evaluation; clean accuracy on {images}"
    elif bad:
        aa_text, aa_acc = f"AutoAttack left out: {bad}", None
    else:
        aa_text = f"AutoAttack (standard) and clean accuracy on {images}"
    eps = float(rec.threat_model.get("eps", 0.0))
    return {
        "link": "",
        "name": run.name,
        "authors": "",
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": str(rec.data.get("name") or run.data.get("name") or ""),
        "venue": "",
        "architecture": str(run.student.get("arch", "")),
        "eps": eps_text(eps, 1e-6, str(rec.threat_model.get("norm", "linf"))),
        "clean_acc": clean,
        "reported": "",
        "autoattack_acc": percent(aa_acc) if aa_acc is not None else None,
        "footnote": f"dard run, {checkpoint} checkpoint: {aa_text}.",
        "threat_model": {"linf": "Linf", "l2": "L2"}.get(str(rec.threat_model.get("norm")), "Linf"),
        "subset": subset,
        "n_clean": n,
        "n_autoattack": n if aa_acc is not None else None,
        "clean_acc_all": clean_all,
        "n_all": n_all,
        "checkpoint": checkpoint,
        "epoch": rec.model.get("epoch"),
        "seed": run.seed,
        "run": str(run.path),
    }


def write_robustbench(runs: Sequence[RunRecord], folder: Path, checkpoint: str) -> list[Path]:
    """``<folder>/<run name>.json``: :func:`robustbench_entry` of every run (names made file-safe and unique)."""
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    paths = []
    for run in runs:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", run.name).strip("._") or "run"
        name, i = stem, 1
        while name.casefold() in used:  # SAT-s0 and sat-s0: one file on macOS and Windows, the second over the first
            i += 1
            name = f"{stem}-{i}"
        used.add(name.casefold())
        paths.append(write_json(folder / f"{name}.json", robustbench_entry(run, checkpoint)))
    return paths
