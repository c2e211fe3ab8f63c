"""A report's tables for a paper: the main table as CSV and as a LaTeX tabular, and a RobustBench-style JSON entry
(``model_info/<dataset>/<threat>/<name>.json`` fields) per run.

CSV cells are plain numbers in percent (mean, sample std over seeds, the Wilson 95% interval at the mean for fewer
than 10,000 test points, and the test points); TeX cells read ``mean $\\pm$ std`` with the interval in small type.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dard.evaluation.intervals import CI_BELOW, wilson_interval
from dard.evaluation.report.markdown import ReportContent
from dard.evaluation.report.stats import DASH, autoattack_result
from dard.io import write_json, write_text
from dard.run_dir import RunRecord

__all__ = ["FORMATS", "robustbench_entry", "table_columns", "write_csv", "write_robustbench", "write_tex"]

#: what `dard report --format` accepts (md is always written)
FORMATS = ("md", "csv", "tex")
_TEX_SPECIAL = {c: "\\" + c for c in "&%$#_{}"} | {"\\": r"\textbackslash{}", "~": r"\~{}", "^": r"\^{}"}


def table_columns(rep: ReportContent) -> list[tuple[str, str]]:
    """The accuracy columns of the main table: (metric key, header)."""
    cols = [("clean", "Clean"), *((k, k) for k in rep.attack_labels)]
    cols += [("autoattack_subset", rep.aa_head)] if rep.has_aa else []
    return [*cols, ("worst_case", "Worst-case")]


def _interval(summary: Mapping[str, Any]) -> tuple[float, float] | None:
    points, mean = summary.get("points"), summary.get("mean")
    if mean is None or not points or points >= CI_BELOW:
        return None
    return wilson_interval(mean, points)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.4f}"


def write_csv(rep: ReportContent, path: Path) -> Path:
    """The main table, one row per group: identity columns, then per accuracy its mean, std, 95% interval (%) and
    the test points per run."""
    cols = table_columns(rep)
    header = ["run", "method", "student", "teacher", "seeds"]
    for key, _ in cols:
        header += [f"{key}_pct", f"{key}_std_pct", f"{key}_ci95_low_pct", f"{key}_ci95_high_pct", f"{key}_points"]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for g in rep.group_rows:
        row: list[Any] = [g["name"], g["method"] or "", g["student"] or "", g["teacher"] or "", g["n"]]
        for key, _ in cols:
            s = g[rep.checkpoint].get(key) or {}
            ci = _interval(s) or (None, None)
            row += [_pct(s.get("mean")), _pct(s.get("std")), _pct(ci[0]), _pct(ci[1]), s.get("points") or ""]
        writer.writerow(row)
    return write_text(path, buf.getvalue())


def tex_escape(text: Any) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_TEX_SPECIAL.get(c, c) for c in str(text))


def _tex_cell(s: Mapping[str, Any] | None) -> str:
    if not s or s.get("mean") is None:
        return "--"
    text = f"{100 * s['mean']:.2f}"
    if s.get("n", 0) >= 2 and s.get("std") is not None:
        text += f" $\\pm$ {100 * s['std']:.2f}"
    ci = _interval(s)
    return text + (f" {{\\scriptsize [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]}}" if ci else "")


def write_tex(rep: ReportContent, path: Path) -> Path:
    """The main table as a LaTeX ``tabular`` (booktabs rules), ready to ``\\input``."""
    cols = table_columns(rep)
    header = ["Run", "Method", "Student", "Teacher", "Seeds", *(h for _, h in cols)]
    lines = [
        f"% dard report: {tex_escape(rep.title)}; test accuracy in %, `{rep.checkpoint}' checkpoint; mean $\\pm$ "
        "sample std over seeds; [95% Wilson interval] for fewer than 10,000 test points",
        "\\begin{tabular}{" + "l" * 4 + "r" * (len(header) - 4) + "}",
        "\\toprule",
        " & ".join(tex_escape(h) for h in header) + " \\\\",
        "\\midrule",
    ]
    for g in rep.group_rows:
        ident = [g["name"], g["method"] or DASH, g["student"] or DASH, g["teacher"] or DASH, g["n"]]
        cells = [tex_escape(c) if c != DASH else "--" for c in ident]
        cells += [_tex_cell(g[rep.checkpoint].get(key)) for key, _ in cols]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return write_text(path, "\n".join(lines))


def _eps_text(eps: float) -> str:
    k = eps * 255
    return f"{round(k)}/255" if abs(k - round(k)) < 1e-6 else f"{eps:g}"


def robustbench_entry(run: RunRecord, checkpoint: str) -> dict[str, Any]:
    """A RobustBench model-info entry for a run (accuracies as strings in %, as RobustBench writes them; the
    bibliographic fields left empty to fill in), plus the test points behind each number."""
    rec = run.evals[checkpoint]
    aa_res = rec.attacks.get("autoattack")
    aa = {"accuracy": aa_res.accuracy, "n": aa_res.total} if aa_res is not None else autoattack_result(rec)
    n_clean = rec.clean.total
    eps = float(rec.threat_model.get("eps", 0.0))
    aa_text = f"AutoAttack (standard) on the first {aa['n']}" if aa else "no AutoAttack evaluation"
    return {
        "link": "",
        "name": run.name,
        "authors": "",
        "additional_data": False,
        "number_forward_passes": 1,
        "dataset": str(rec.data.get("name") or run.data.get("name") or ""),
        "venue": "",
        "architecture": str(run.student.get("arch", "")),
        "eps": _eps_text(eps),
        "clean_acc": f"{100 * rec.clean.accuracy:.2f}",
        "reported": "",
        "autoattack_acc": f"{100 * aa['accuracy']:.2f}" if aa else None,
        "footnote": f"dard run, {checkpoint} checkpoint: clean accuracy on the first {n_clean} test images, {aa_text}.",
        "threat_model": {"linf": "Linf", "l2": "L2"}.get(str(rec.threat_model.get("norm")), "Linf"),
        "n_clean": n_clean,
        "n_autoattack": int(aa["n"]) if aa else None,
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
        while name in used:
            i += 1
            name = f"{stem}-{i}"
        used.add(name)
        paths.append(write_json(folder / f"{name}.json", robustbench_entry(run, checkpoint)))
    return paths
