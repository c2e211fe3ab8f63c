"""Rendering a report as Markdown: the one table helper (cells escaped) and the sections of ``report.md``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dard.report.columns import AA_CLEAN, AA_KEY, AA_PGD, Column, eps_text
from dard.report.paired import ALPHA
from dard.report.paired_section import SECTION_KEYS, PairedSection
from dard.report.stats import DASH, format_summary, ordered_union
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
    columns: Sequence[Column]  # the main table's accuracy columns
    sanity: Sequence[Column]  # the attacks outside the threat model (pgd-large)
    aa_ns: Sequence[str]  # the AutoAttack subset sizes, as text
    has_aa: bool  # whether any run has an AutoAttack subset evaluation at the report's checkpoint
    plots: Sequence[tuple[str, str]]  # (caption, file name)
    preamble: Sequence[str] = ()
    sections: Sequence[str] = ()
    paired: PairedSection | None = None

    @property
    def other(self) -> str:
        return "last" if self.checkpoint == "best" else "best"


def render(rep: ReportContent) -> str:
    """The whole ``report.md``."""
    lines = [f"# {rep.title}", "", *rep.preamble]
    if rep.preamble:
        lines.append("")
    lines += _main_table(rep)
    lines += _sanity_table(rep)
    lines += paired_lines(rep.paired) if rep.paired else []
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


#: what a main-table cell shows for AutoAttack when a run has none
NOT_RUN = "not run"


def cell_text(g: Mapping[str, Any], checkpoint: str, key: str, marks: str = "") -> str:
    """A main-table cell: mean ± std (and interval) over the row's seeds with ``marks`` after the number,
    ``(k of n seeds)`` when only some seeds have the number, and ``not run`` for AutoAttack where no seed ran it."""
    s = g[checkpoint].get(key)
    ran = g[checkpoint].get(AA_CLEAN)  # the subset's clean accuracy: there whenever AutoAttack ran
    if key in (AA_KEY, AA_CLEAN) and (not ran or not ran["n"]):
        return NOT_RUN
    text = format_summary(s, marks=marks)
    if s and 0 < s["n"] < g["n"]:
        text += f" ({s['n']} of {g['n']} seeds)"
    return text


def _main_table(rep: ReportContent) -> list[str]:
    lines = [
        f"{len(rep.runs)} run(s) in {len(rep.group_rows)} group(s); runs whose recorded configs differ only in "
        f"seed are one row (mean ± sample std over seeds). Test-split accuracy in %, `{rep.checkpoint}` "
        "checkpoint; [lo, hi]: the Wilson 95% interval at the mean for the test points of one run (shown below "
        "10,000 points). Every robust accuracy is measured on the images of a clean accuracy beside it: the "
        "attacks and the worst case on all the images of `Clean`, AutoAttack on the first images only, beside "
        "their own clean accuracy.",
        "",
    ]
    if not rep.has_aa:
        lines += [
            "**AutoAttack was not run** for this report: every robust accuracy here comes from the suite's own "
            "attacks and is an upper bound that AutoAttack may lower.",
            "",
        ]
    if rep.paired and rep.paired.legend:
        lines += [rep.paired.legend, ""]
    header = ["Run", "Method", "Student", "Teacher", "Seeds (n)", *(c.header for c in rep.columns)]
    rows = []
    for g in rep.group_rows:
        marks = [rep.paired.mark(g["name"], c.key) if rep.paired else "" for c in rep.columns]
        cells = [cell_text(g, rep.checkpoint, c.key, m) for c, m in zip(rep.columns, marks)]
        rows.append([*_identity_cells(g), str(g["n"]), *cells])
    return lines + markdown_table(header, rows) + [""]


def _sanity_table(rep: ReportContent) -> list[str]:
    """The checks outside the threat model: attacks at another eps (pgd-large) and the PGD-20 eps sweep."""
    eps_keys = ordered_union((g.get("eps_sweep") or {}).keys() for g in rep.group_rows)
    if not rep.sanity and not eps_keys:
        return []
    lines = [
        "## Sanity checks",
        "",
        f"Outside the threat model, so not in the main table or the worst case (`{rep.checkpoint}` checkpoint, "
        "accuracy in %, mean ± std over seeds): an attack at a much larger eps must take accuracy to about 0 "
        "(points that survive suggest gradient masking or a broken attack), and PGD-20 accuracy must fall as eps "
        "grows (the eps sweep, on the checkpoint that ran it).",
        "",
    ]
    header = [
        "Run",
        "Seeds (n)",
        *(c.header for c in rep.sanity),
        *(f"PGD-20 at eps {_eps_short(e)}" for e in eps_keys),
    ]
    rows = []
    for g in rep.group_rows:
        row = [g["name"], str(g["n"]), *(cell_text(g, rep.checkpoint, c.key) for c in rep.sanity)]
        row += [format_summary((g.get("eps_sweep") or {}).get(e)) for e in eps_keys]
        rows.append(row)
    return lines + markdown_table(header, rows, text_columns=1) + [""]


def _eps_short(key: str) -> str:
    try:
        eps = float(key)
    except ValueError:
        return key
    return eps_text(eps, 2e-3)  # the sweep's keys have 6 decimals: 8/255 is 0.031373, 255 times which is 8.0001


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
    show_aa = any(g[other][AA_KEY]["n"] for g in present)
    show = [
        c
        for c in rep.columns
        if c.key == "pgd20" and any(g[other][c.key]["n"] for g in present) or (show_aa and c.key in (AA_CLEAN, AA_KEY))
    ]
    header = ["Run", "Method", "Student", "Teacher", "Seeds (n)", "Epoch (best / last)", "Clean"]
    header += [c.header for c in show]
    rows = []
    for g in present:
        s = g[other]
        epochs = " / ".join(_epochs_text(g[w]) for w in CHECKPOINTS)
        row = [*_identity_cells(g), str(s["clean"]["n"]), epochs, format_summary(s["clean"])]
        row += [cell_text(g, other, c.key) for c in show]
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
        "attacks only the points still robust, so the last column is the AutoAttack accuracy), beside the clean "
        "(and PGD-20) accuracy of the same images.",
        "",
    ]
    # the same images' clean and PGD-20 accuracy first, where the record ran PGD-20 on the subset too
    same = [AA_CLEAN, *([AA_PGD] if any(g[rep.checkpoint].get(AA_PGD, {}).get("n") for g in present) else [])]
    header = [
        "Run",
        "Seeds (n)",
        "Clean",
        *(["PGD-20"] if AA_PGD in same else []),
        *(_STAGES.get(s, s) for s in stages),
    ]
    rows = [
        [
            g["name"],
            str(g["n"]),
            *(cell_text(g, rep.checkpoint, k) for k in same),
            *(format_summary(g["autoattack_stages"].get(s)) for s in stages),
        ]
        for g in present
    ]
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
    headers = {c.key: c.header for c in (*rep.columns, *rep.sanity)}
    header = ["Run", "Device", *(headers.get(k, k) for k in labels)]
    return lines + markdown_table(header, rows, text_columns=2) + [""]


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
    aa_text = (
        f"AutoAttack runs on the first {'/'.join(rep.aa_ns)} test images only, shown beside the clean accuracy of "
        "those images; "
        if rep.has_aa
        else "AutoAttack was not run; "
    )
    return [
        "## Setup",
        "",
        "- Checkpoints were selected on the validation split (`best`: highest validation score during "
        "training; `last`: final epoch); every number above is measured on the test split.",
        f"- Threat model: {'; '.join(threat_models)}.",
        f"- Data: {'; '.join(datas)}.",
        f"- {aa_text}the worst case counts test points that survive every threat-model attack of the main suite "
        "(not the sanity checks).",
        "",
    ]


def _flags_section(run_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every flag once per run: a flag both checkpoints raise (the same weights, or the same finding) is one line
    naming both."""
    flag_lines = []
    for rr in run_rows:
        where: dict[str, list[str]] = {}
        for w, fl in rr["flags"].items():
            for f in fl:
                where.setdefault(f, []).append(w)
        flag_lines += [f"- {rr['name']} (seed {rr['seed']}, {', '.join(ws)}): {f}" for f, ws in where.items()]
    return ["## Flags", "", *(flag_lines or ["none"]), ""]


def _pct(x: float) -> str:
    return f"{100 * x:+.2f}"


def _p_text(p: float) -> str:
    return f"{p:.3g}" if p >= 1e-4 else f"{p:.1e}"


def paired_lines(section: PairedSection) -> list[str]:
    """The "Paired comparisons" section of ``report.md``: clean, PGD-20, AutoAttack and the worst case of every
    compared pair (``results.json`` holds every column), then what could not be paired."""
    shown = [c for c in section.comparisons if c.metric in SECTION_KEYS and c.seeds]
    notes = list(
        dict.fromkeys(
            [*section.notes, *(f"{c.a} vs {c.b}, {c.metric}: {n}" for c in section.comparisons for n in c.notes)]
        )
    )
    if not shown and not notes:
        return []
    lines = ["## Paired comparisons", ""]
    if shown:
        lines += [
            "A minus B on the same test images, in accuracy points. Per seed: `b` images right for A only, `c` "
            "right for B only, and the two-sided exact McNemar p-value (a binomial test of b against b + c at "
            "1/2). Across seeds: the mean paired difference and its 95% t interval (two seeds or more). "
            f"Significant: p < {ALPHA:g} in every seed, or an interval that excludes 0. results.json holds every "
            "column.",
            "",
        ]
        rows = [
            [
                c.a,
                c.b,
                section.headers.get(c.metric, c.metric),
                "; ".join(f"s{s.seed}: {s.b}/{s.c}, p={_p_text(s.p)}" for s in c.seeds),
                _pct(c.mean) if c.mean is not None else "",
                f"[{_pct(ci[0])}, {_pct(ci[1])}]" if (ci := c.interval) else DASH,
                "yes" if c.significant else "no",
            ]
            for c in shown
        ]
        header = ["A", "B", "Accuracy", "Per seed (b/c, p)", "Mean A − B", "95% interval", "Significant"]
        lines += [*markdown_table(header, rows, text_columns=4), ""]
    if notes:
        lines += ["Not paired:" if shown else "Nothing paired:", "", *(f"- {n}" for n in notes[:20])]
        lines += [f"- ... and {len(notes) - 20} more (results.json)"] if len(notes) > 20 else []
        lines.append("")
    return lines
