"""The report section of the soft-label gap extra (``label_gap``): how far the teacher's soft labels move between a
test image and the run's own training attack on it (:func:`dard.experiment.extras.label_gap`), per run group, and
which runs it left out and why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dard.experiment.left_out import label_gap_skip, left_out_lines
from dard.experiment.spec import LabelGapSpec
from dard.report import format_summary, markdown_table, seedless_name, summarize
from dard.report.markdown import md_text
from dard.run_dir import RunDir, RunRecord

_GAP_COLUMNS = {
    "tv": "TV(teacher(x), teacher(x_adv))",
    "top1_agreement": "same teacher top-1",
    "teacher_top_prob_clean": "teacher top prob, x",
    "teacher_top_prob_adv": "teacher top prob, x_adv",
}


def label_gap_table(runs: Sequence[RunRecord], checkpoint: str = "best") -> dict[str, dict[str, Any]]:
    """Teacher soft-label gap per run group, mean ± std over seeds (runs without a cached gap are skipped)."""
    per_group: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        cached = RunDir(run.path).read_label_gap(checkpoint)
        if cached is not None:
            g = per_group.setdefault(seedless_name(run.path.name), {})
            for key in _GAP_COLUMNS:
                g.setdefault(key, []).append(float(cached.gap[key]))
    return {g: {k: summarize(v) for k, v in cols.items()} for g, cols in per_group.items()}


def label_gap_section(spec: LabelGapSpec, runs: Sequence[RunRecord], extra: dict[str, Any]) -> str:
    """The section's Markdown: the gap per run group, the runs whose attack was crafted against the teacher (as
    their training's was) and the runs left out, each with its reason."""
    gaps = label_gap_table(runs, spec.checkpoint)
    extra["label_gap"] = gaps
    rows = [[g, *(format_summary(row[k]) for k in _GAP_COLUMNS)] for g, row in gaps.items()]
    lines = [
        "## Teacher soft-label gap",
        "",
        f"How far the teacher's soft labels move between a test image and the run's own training "
        f"attack on it (first {spec.n} test images, `{spec.checkpoint}` student "
        "checkpoint; mean ± std over seeds, all in %, total variation distance between the two softmax outputs). "
        "The targets of two lambdas differ "
        "by |d lambda| x TV, so a small TV means lambda cannot change the target much.",
        "",
        *markdown_table(["Run", *_GAP_COLUMNS.values()], rows, text_columns=1),
    ]
    on_teacher = [md_text(r.path.name) for r in runs if _against(r, spec.checkpoint) == "teacher"]
    if on_teacher:  # their training attacked the teacher (attack_target: teacher), and so does the measurement
        lines += ["", f"Attacked against the teacher, as their training was: {', '.join(on_teacher)}."]
    return "\n".join(
        lines
        + left_out_lines(
            runs,
            lambda f: f.read_label_gap(spec.checkpoint) is not None,
            lambda cfg, f: label_gap_skip(cfg, f, spec.checkpoint),
        )
    )


def _against(run: RunRecord, checkpoint: str) -> str | None:
    cached = RunDir(run.path).read_label_gap(checkpoint)
    return None if cached is None else str(cached.attack.get("against", "student"))
