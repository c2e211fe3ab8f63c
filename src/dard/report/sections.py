"""The sections of ``report.md`` after its accuracy tables (paired comparison, training cost, AutoAttack stages,
attack time, setup, flags) and :func:`render`, the whole document."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dard.errors import one_line
from dard.evaluation.rounding import percent
from dard.report.columns import AA_CLEAN, AA_PGD
from dard.report.markdown import ReportContent, markdown_table, md_code, md_text
from dard.report.paired import ALPHA
from dard.report.paired_section import SECTION_KEYS, PairedSection
from dard.report.stats import DASH, format_summary, ordered_union
from dard.report.tables import cell_text, main_table, other_checkpoint_table, sanity_table
from dard.report.teachers import teachers_section


def render(rep: ReportContent) -> str:
    """The whole ``report.md``."""
    lines = [f"# {one_line(rep.title)}", "", *rep.preamble]  # the title is the author's Markdown, on one line
    if rep.preamble:
        lines.append("")
    lines += main_table(rep)
    lines += sanity_table(rep)
    lines += paired_lines(rep.paired) if rep.paired else []
    lines += other_checkpoint_table(rep)
    lines += _cost_section(rep.group_rows)
    lines += _stages_section(rep)
    lines += _attack_time_section(rep)
    for section in rep.sections:
        lines += [section.rstrip(), ""]
    lines += teachers_section(rep)
    lines += _setup_section(rep)
    lines += _flags_section(rep.run_rows)
    lines += ["## Plots", ""]
    for caption, fname in rep.plots:
        lines += [f"![{caption}]({fname})", ""]
    lines += ["## Runs", ""]
    lines += [f"- {md_text(rr['name'], start=True)} (seed {rr['seed']}): {md_code(rr['path'])}" for rr in rep.run_rows]
    lines.append("")
    return "\n".join(lines)


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


def _eps_text(eps: Any, norm: Any) -> str:
    if not isinstance(eps, (int, float)) or str(norm).lower() == "l2":  # an L2 radius in pixel levels means nothing
        return str(eps)
    k = eps * 255
    if abs(k - round(k)) < 1e-4:
        return f"{int(round(k))}/255 ({eps:.6f})"
    return f"{eps:.6f}"


def _threat_text(tm: Mapping[str, Any]) -> str:
    return f"{md_text(tm.get('norm', '?'))}, eps = {md_text(_eps_text(tm.get('eps'), tm.get('norm')))}"


def _setup_section(rep: ReportContent) -> list[str]:
    records = [(r, r.evals[rep.checkpoint]) for r in rep.runs]
    threat_models = ordered_union([_threat_text(rec.threat_model)] for _, rec in records)
    datas = ordered_union(
        [
            f"{md_text(rec.data.get('name', r.data.get('name', '?')))}, "
            f"{md_text(rec.data.get('split', 'test'))} n = {md_text(rec.data.get('n', r.data.get('test', '?')))}"
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
        flag_lines += [
            f"- {md_text(rr['name'], start=True)} (seed {rr['seed']}, {', '.join(ws)}): {md_text(f)}"
            for f, ws in where.items()
        ]
    return ["## Flags", "", *(flag_lines or ["none"]), ""]


def _pct(x: float) -> str:
    """A difference in accuracy points, signed; with more decimals where 2 would show a difference that is not 0
    as 0 (an interval's bound of +0.004 points, which excludes 0, read as +0.00 beside one of -0.004 that does not)."""
    for digits in range(2, 9):
        text = percent(x, digits, sign=True)
        if x == 0 or float(text) != 0:
            return text
    return percent(x, 8, sign=True)


def _p_text(p: float) -> str:
    """``p=`` a p-value in 3 significant digits, more where 3 would round it across ``ALPHA`` (0.04996 shown as
    0.05 beside "significant"); ``p below 1e-300`` where it is below what a float holds (it read p=0.0e+00)."""
    if p < 1e-300:  # mcnemar_p's exact value rounds to 0 below about 5e-324: never print a p-value of 0
        return "p below 1e-300"
    for digits in range(3, 18):
        text = f"{p:.{digits}g}" if p >= 1e-4 else f"{p:.{digits - 2}e}"
        if (float(text) < ALPHA) == (p < ALPHA):
            return f"p={text}"
    return f"p={p!r}"


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
            "right for B only, of the `n` images both were evaluated on (the column's: every test image of `Clean` "
            "for the attacks and the worst case, AutoAttack's first images for AutoAttack), and the two-sided exact "
            "McNemar p-value (a binomial test of b against b + c at 1/2). Across seeds: the mean paired difference "
            "and its 95% interval (two seeds or more), which counts both the spread across seeds and each seed's "
            "sampling error over its test images (a t interval, Welch-Satterthwaite's degrees of freedom). "
            f"Significant: p < {ALPHA:g} in every seed with the same side ahead in each, or an interval that "
            "excludes 0; each row is its own test, not corrected for the number of rows (of many rows at p near "
            "0.05, expect some by chance). results.json holds every column.",
            "",
        ]
        rows = [
            [
                c.a,
                c.b,
                section.headers.get(c.metric, c.metric),
                "; ".join(f"s{s.seed}: {s.b}/{s.c} of {s.n:,}, {_p_text(s.p)}" for s in c.seeds),
                _pct(c.mean) if c.mean is not None else "",
                f"[{_pct(ci[0])}, {_pct(ci[1])}]" if (ci := c.interval) else DASH,
                "yes" if c.significant else "no",
            ]
            for c in shown
        ]
        header = ["A", "B", "Accuracy", "Per seed (b/c of n, p)", "Mean A − B", "95% interval", "Significant"]
        lines += [*markdown_table(header, rows, text_columns=4), ""]
    if notes:
        lines += ["Not paired, or on some seeds only:" if shown else "Nothing paired:", ""]
        lines += [f"- {md_text(n, start=True)}" for n in notes[:20]]
        lines += [f"- ... and {len(notes) - 20} more (results.json)"] if len(notes) > 20 else []
        lines.append("")
    return lines
