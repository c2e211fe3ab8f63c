"""Rendering a report as Markdown: the one table helper (cells escaped) and the sections of ``report.md``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dard.evaluation.report.stats import DASH, format_summary, ordered_union
from dard.run_dir import CHECKPOINTS, RunRecord


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], *, text_columns: int = 4) -> list[str]:
    """A Markdown table, one line per list item: the first ``text_columns`` columns left-aligned, the (number)
    columns after them right-aligned. ``|`` and newlines in cells are escaped."""
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines


@dataclass
class ReportContent:
    """What ``report.md`` shows: the runs, the rows of ``results.json`` and the plots written beside it."""

    title: str
    checkpoint: str
    runs: Sequence[RunRecord]
    run_rows: Sequence[Mapping[str, Any]]
    group_rows: Sequence[Mapping[str, Any]]
    attack_labels: Sequence[str]
    aa_ns: Sequence[str]  # the AutoAttack subset sizes, as text
    has_aa: bool  # whether any run has an AutoAttack subset evaluation at the report's checkpoint
    plots: Sequence[tuple[str, str]]  # (caption, file name)
    preamble: Sequence[str] = ()
    sections: Sequence[str] = ()

    @property
    def other(self) -> str:
        return "last" if self.checkpoint == "best" else "best"

    @property
    def aa_head(self) -> str:
        return f"AutoAttack (subset {'/'.join(self.aa_ns)})" if self.aa_ns else "AutoAttack (subset)"


def render(rep: ReportContent) -> str:
    """The whole ``report.md``."""
    lines = [f"# {rep.title}", "", *rep.preamble]
    if rep.preamble:
        lines.append("")
    lines += _main_table(rep)
    lines += _other_checkpoint_table(rep)
    lines += _cost_section(rep.group_rows)
    lines += _stages_section(rep)
    lines += _attack_time_section(rep)
    for section in rep.sections:
        lines += [section.rstrip(), ""]
    lines += _setup_section(rep)
    lines += _flags_section(rep.run_rows)
    lines += ["## Plots", ""]
    for caption, fname in rep.plots:
        lines += [f"![{caption}]({fname})", ""]
    lines += ["## Runs", ""]
    lines += [f"- {rr['name']} (seed {rr['seed']}): `{rr['path']}`" for rr in rep.run_rows]
    lines.append("")
    return "\n".join(lines)


def _identity_cells(g: Mapping[str, Any]) -> list[str]:
    return [g["name"], g["method"] or DASH, g["student"] or DASH, g["teacher"] or DASH]


def _main_table(rep: ReportContent) -> list[str]:
    has_aa = rep.has_aa
    lines = [
        f"{len(rep.runs)} run(s) in {len(rep.group_rows)} group(s); runs whose recorded configs differ only in "
        f"seed are one row (mean ± sample std over seeds). Test-split accuracy in %, `{rep.checkpoint}` "
        "checkpoint; [lo, hi]: the Wilson 95% interval at the mean for the test points of one run (shown below "
        "10,000 points).",
        "",
    ]
    header = ["Run", "Method", "Student", "Teacher", "Seeds (n)", "Clean", *rep.attack_labels]
    header += [rep.aa_head] if has_aa else []
    header.append("Worst-case")
    rows = []
    for g in rep.group_rows:
        s = g[rep.checkpoint]
        row = [*_identity_cells(g), str(g["n"]), format_summary(s["clean"])]
        row += [format_summary(s[k]) for k in rep.attack_labels]
        row += [format_summary(s["autoattack_subset"])] if has_aa else []
        row.append(format_summary(s["worst_case"]))
        rows.append(row)
    return lines + markdown_table(header, rows) + [""]


def _other_checkpoint_table(rep: ReportContent) -> list[str]:
    """The groups at the other checkpoint, so `best` and `last` can be compared; empty when none has it."""
    other = rep.other
    present = [g for g in rep.group_rows if g[other]]
    if not present:
        return []
    lines = [
        f"## `{other}` checkpoint",
        "",
        f"The same runs evaluated at their `{other}` checkpoint, so `best` (selected on validation) "
        f"and `last` (final epoch) can be compared.",
        "",
    ]
    show = [k for k in ("pgd20",) if any(k in g[other] and g[other][k]["n"] for g in present)]
    show_aa = any(g[other]["autoattack_subset"]["n"] for g in present)
    header = ["Run", "Method", "Student", "Teacher", "Seeds (n)", "Epoch (best / last)", "Clean", *show]
    header += [rep.aa_head] if show_aa else []
    rows = []
    for g in present:
        s = g[other]
        epochs = " / ".join(_epochs_text(g[w]) for w in CHECKPOINTS)
        row = [*_identity_cells(g), str(s["clean"]["n"]), epochs, format_summary(s["clean"])]
        row += [format_summary(s[k]) for k in show]
        row += [format_summary(s["autoattack_subset"])] if show_aa else []
        rows.append(row)
    return lines + markdown_table(header, rows) + [""]


def _epochs_text(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return DASH
    eps = [e for e in summary.get("epochs", []) if e is not None]
    return ", ".join(str(e) for e in eps) if eps else DASH


def _cost_section(group_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Training wall time and throughput per group; empty when no run recorded its training time."""
    if not any(g["train_minutes"]["n"] for g in group_rows):
        return []
    lines = [
        "## Training cost",
        "",
        "Wall time of the training loop (adversarial example generation and teacher passes included; "
        "validation and test evaluation excluded), mean ± std over seeds. Runs that shared a machine or ran "
        "with fewer threads are slower, so compare rows made on the same device.",
        "",
    ]
    rows = [
        [
            g["name"],
            g["method"] or DASH,
            ", ".join(g["devices"]),
            str(g["train_minutes"]["n"]),
            format_summary(g["train_minutes"], scale=1, digits=1),
            format_summary(g["train_images_per_s"], scale=1, digits=0),
        ]
        for g in group_rows
    ]
    header = ["Run", "Method", "Device", "Seeds (n)", "Train time (min)", "Train images/s"]
    return lines + markdown_table(header, rows, text_columns=3) + [""]


_STAGES = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square", "apgd-dlr": "APGD-DLR"}


def _stages_section(rep: ReportContent) -> list[str]:
    """AutoAttack's robust accuracy after each stage of its cascade; empty when no record has them (older runs)."""
    present = [g for g in rep.group_rows if g.get("autoattack_stages")]
    if not present:
        return []
    stages = ordered_union(g["autoattack_stages"].keys() for g in present)
    lines = [
        "## AutoAttack stages",
        "",
        f"Robust accuracy (%) after each stage of the AutoAttack cascade (`{rep.checkpoint}` checkpoint; each stage "
        "attacks only the points still robust, so the last column is the AutoAttack accuracy).",
        "",
    ]
    header = ["Run", "Seeds (n)", *(_STAGES.get(s, s) for s in stages)]
    rows = [[g["name"], str(g["n"]), *(format_summary(g["autoattack_stages"].get(s)) for s in stages)] for g in present]
    return lines + markdown_table(header, rows, text_columns=1) + [""]


def _attack_time_section(rep: ReportContent) -> list[str]:
    """Wall time of each attack of the test evaluation per group (mean ± std over seeds)."""
    labels = ordered_union(g.get("attack_seconds", {}).keys() for g in rep.group_rows)
    if not labels:
        return []
    lines = [
        "## Evaluation time",
        "",
        f"Wall time (s) of each attack over the test points of the `{rep.checkpoint}` checkpoint's evaluation, "
        "mean ± std over seeds (compare rows made on the same device).",
        "",
    ]
    rows = [
        [
            g["name"],
            ", ".join(g["devices"]),
            *(format_summary(g["attack_seconds"].get(k), scale=1, digits=1) for k in labels),
        ]
        for g in rep.group_rows
    ]
    return lines + markdown_table(["Run", "Device", *labels], rows, text_columns=2) + [""]


def _eps_text(eps: Any) -> str:
    if not isinstance(eps, (int, float)):
        return str(eps)
    k = eps * 255
    if abs(k - round(k)) < 1e-4:
        return f"{int(round(k))}/255 ({eps:.6f})"
    return f"{eps:.6f}"


def _setup_section(rep: ReportContent) -> list[str]:
    records = [(r, r.evals[rep.checkpoint]) for r in rep.runs]
    threat_models = ordered_union(
        [f"{rec.threat_model.get('norm', '?')}, eps = {_eps_text(rec.threat_model.get('eps'))}"] for _, rec in records
    )
    datas = ordered_union(
        [
            f"{rec.data.get('name', r.data.get('name', '?'))}, "
            f"{rec.data.get('split', 'test')} n = {rec.data.get('n', r.data.get('test', '?'))}"
        ]
        for r, rec in records
    )
    aa_text = f"AutoAttack runs on the first {'/'.join(rep.aa_ns)} test images only; " if rep.has_aa else ""
    return [
        "## Setup",
        "",
        "- Checkpoints were selected on the validation split (`best`: highest validation score during "
        "training; `last`: final epoch); every number above is measured on the test split.",
        f"- Threat model: {'; '.join(threat_models)}.",
        f"- Data: {'; '.join(datas)}.",
        f"- {aa_text}Worst-case counts test points that survive every threat-model attack of the main suite (not the "
        "pgd-large sanity check).",
        "",
    ]


def _flags_section(run_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    flag_lines = [
        f"- {rr['name']} (seed {rr['seed']}, {w}): {f}" for rr in run_rows for w, fl in rr["flags"].items() for f in fl
    ]
    return ["## Flags", "", *(flag_lines or ["none"]), ""]
