"""The report section of the teacher-quality extra (``teacher_quality``): each distilled run beside the teacher it
learned from, measured on its own (:func:`dard.experiment.extras.teacher_quality`), as a table and as a plot of the
student's robust accuracy against its teacher's (``teacher_quality.png``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dard.evaluation.record import Count, EvalRecord
from dard.evaluation.rounding import percent
from dard.experiment.extras import TEACHER_ATTACK
from dard.experiment.left_out import left_out_lines, teacher_quality_skip
from dard.experiment.spec import TeacherQualitySpec
from dard.models import library_prefix
from dard.report import markdown_table, save_png
from dard.report.plots import plot_text
from dard.run_dir import RunDir, RunRecord

DASH = "—"
_COLUMNS = ["Run", "Teacher", "Teacher clean", "Teacher PGD-20", "Clean", "PGD-20", "AutoAttack (first images)"]


def _pct(count: Count | None) -> str:
    return percent(count.accuracy) if count is not None and count.total else DASH


def _robust(record: EvalRecord | None) -> Count | None:
    result = record.attacks.get(TEACHER_ATTACK) if record is not None else None
    return result.count if result is not None else None


def _rows(runs: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per run whose teacher was measured: the teacher's and the student's (best checkpoint) counts."""
    rows = []
    for run in runs:
        measured = RunDir(run.path).read_teacher_quality()
        student = run.evals.get("best")
        if measured is None or student is None:
            continue
        subset = student.autoattack_subset
        aa = subset.attacks.get("autoattack") if subset is not None else None
        rows.append(
            {
                "run": run.name,
                "path": run.path,
                "teacher": _teacher_name(measured.teacher),
                "teacher_clean": measured.record.clean,
                "teacher_robust": _robust(measured.record),
                "clean": student.clean,
                "robust": _robust(student),
                "autoattack": aa.count if aa is not None else None,
            }
        )
    return sorted(rows, key=lambda r: (r["teacher_robust"].accuracy if r["teacher_robust"] else -1.0, r["run"]))


def _teacher_name(teacher: dict[str, Any]) -> str:
    """The teacher's column: a dard checkpoint's file and epoch, a zoo model's name, external weights' file."""
    if teacher.get("checkpoint"):
        epoch = teacher.get("epoch")
        return Path(str(teacher["checkpoint"])).name + (f" (epoch {epoch})" if epoch else "")
    if library_prefix(teacher.get("arch")) == "robustbench:":
        return str(teacher["arch"])
    return f"{Path(str(teacher.get('source', ''))).name} ({teacher.get('arch')})"


def teacher_quality_section(
    spec: TeacherQualitySpec, runs: Sequence[RunRecord], results_dir: Path, extra: dict[str, Any]
) -> str:
    """The section's Markdown (and ``teacher_quality.png`` when a run has its teacher measured)."""
    rows = _rows(runs)
    extra["teacher_quality"] = [
        {k: (asdict(v) if isinstance(v, Count) else v) for k, v in row.items() if k != "path"} for row in rows
    ]
    cells = [
        [
            r["run"],
            r["teacher"],
            *(_pct(r[k]) for k in ("teacher_clean", "teacher_robust", "clean", "robust", "autoattack")),
        ]
        for r in rows
    ]
    lines = [
        "## Student against teacher quality",
        "",
        f"Each distilled run beside the teacher it learned from, measured on its own (clean and PGD-20 on "
        f"the first {spec.n} test images); the student's numbers are its `best` checkpoint's (the suite, AutoAttack "
        "on the first images). Test accuracy in %, weakest teacher first.",
        "",
        *(markdown_table(_COLUMNS, cells, text_columns=2) if rows else ["No run has its teacher measured yet."]),
        # a run is named by its row: one measured whose best evaluation is gone has none
        *left_out_lines(runs, lambda f: any(r["path"] == f.path for r in rows), teacher_quality_skip),
    ]
    if rows:
        _plot(rows, results_dir / "teacher_quality.png")
        lines += ["", "![student PGD-20 against teacher PGD-20](teacher_quality.png)"]
    return "\n".join(lines)


def _plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    points = [r for r in rows if r["teacher_robust"] is not None and r["robust"] is not None]
    xs = [100 * r["teacher_robust"].accuracy for r in points]
    ax.plot(xs, [100 * r["robust"].accuracy for r in points], marker="o", label="student PGD-20")
    with_aa = [(x, r) for x, r in zip(xs, points) if r["autoattack"] is not None]
    if with_aa:
        ax.plot([x for x, _ in with_aa], [100 * r["autoattack"].accuracy for _, r in with_aa], marker="s",
                label="student AutoAttack (first images)")  # fmt: skip
    for x, r in zip(xs, points):
        point = (x, 100 * r["robust"].accuracy)
        ax.annotate(plot_text(r["teacher"]), point, fontsize=7, textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("teacher PGD-20 accuracy (%)")
    ax.set_ylabel("student robust accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_png(fig, path, tight=False)
