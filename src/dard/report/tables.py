"""The accuracy tables of ``report.md``: the main table, the sanity attacks, the other checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dard.evaluation.record import worst_case_attacks
from dard.report.columns import AA_CLEAN, AA_KEY, EPS_TOL, Column, eps_text, other_settings
from dard.report.markdown import ReportContent, markdown_table, md_code, md_text
from dard.report.paired import ALPHA
from dard.report.paired_section import PairedSection
from dard.report.stats import DASH, autoattack_result, format_summary, ordered_union
from dard.report.teachers import teacher_note
from dard.run_dir import CHECKPOINTS


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


def main_table(rep: ReportContent) -> list[str]:
    """The main table: its caption, then a row per group at the report's checkpoint."""
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
    if rep.paired and (legend := _marks_legend(rep.paired)):
        lines += [legend, ""]
    for what, detail in table_notes(rep):
        lines += [f"**{what}**{detail}.", ""]
    header = ["Run", "Method", "Student", "Teacher", "Seeds (n)", *(c.header for c in rep.columns)]
    rows = []
    for g in rep.group_rows:
        marks = [rep.paired.mark(g["name"], c.key) if rep.paired else "" for c in rep.columns]
        cells = [cell_text(g, rep.checkpoint, c.key, m) for c, m in zip(rep.columns, marks)]
        rows.append([*_identity_cells(g), str(g["n"]), *cells])
    return lines + markdown_table(header, rows) + [""]


def _marks_legend(paired: PairedSection) -> str:
    """What the marks in the main table mean: the test, its level and the images each column pairs."""
    if not paired.references or not any(c.seeds for c in paired.comparisons):
        return ""
    refs = ", ".join(f"{m} from {md_code(name)}" for m, name in paired.references.items())
    return (
        f"Marks: a significant difference ({refs}) on the same images: p < {ALPHA:g} by the exact McNemar test "
        "in every seed both rows have, the same row ahead in each, or a 95% interval of the mean paired difference "
        "across seeds (their spread and the test images' sampling error) that excludes 0 (section Paired "
        "comparisons, which gives the images of each seed). Each column pairs its own images: every test image of "
        "`Clean` for the attacks and the worst case, the first images for AutoAttack."
    )


#: a note's text: names and labels as literal text of the output (Markdown by default, TeX for results.tex)
Text = Callable[[Any], str]


def table_notes(rep: ReportContent, text: Text = md_text) -> list[tuple[str, str]]:
    """The caveats said above the main table (and in results.tex's comments), each ``(what, detail)``: rows on
    different numbers of test images or AutoAttack subsets, worst cases over different attacks, one attack label
    with other settings, rows distilled from different teacher files (:func:`dard.report.teachers.teacher_note`)."""
    notes = [_images_note(rep, text), _autoattack_note(rep, text)]
    notes += [_worst_case_note(rep, text), _settings_note(rep, text), _training_eps_note(rep, text)]
    return [n for n in notes if n is not None] + teacher_note(rep, text)


def _training_eps_note(rep: ReportContent, text: Text) -> tuple[str, str] | None:
    """A line above the main table for rows whose training attack ran at another eps than the threat model's
    (training at a larger eps than the evaluation's is a deliberate choice, ``method.params.attack.eps``): run.json
    records it, and nothing in the report said it, so such a row read as trained at the eps it is measured at."""
    parts: list[str] = []
    for run, row in zip(rep.runs, rep.run_rows):
        attack, threat = run.method.get("attack"), run.evals[rep.checkpoint].threat_model
        trained = attack.get("eps") if isinstance(attack, Mapping) else None
        measured, norm = threat.get("eps"), str(threat.get("norm", "linf"))
        if not isinstance(trained, (int, float)) or not isinstance(measured, (int, float)):
            continue  # no training attack (natural), or a record without the numbers
        if abs(trained - measured) > EPS_TOL:
            at, measured_at = eps_text(trained, norm=norm), eps_text(measured, norm=norm)
            part = f"{text(row['group'])} at {at}, measured at {measured_at}"
            parts += [] if part in parts else [part]
    return ("Rows trained at another eps than the threat model's", f": {'; '.join(parts)}") if parts else None


def _images_note(rep: ReportContent, text: Text) -> tuple[str, str] | None:
    """A line above the main table when its rows were measured on different numbers of test images: a column then
    sets a number on 1,000 images beside one on 10,000 (the intervals say so only below 10,000 points)."""
    totals = [run.evals[rep.checkpoint].clean.total for run in rep.runs]
    parts = _rows_by(rep, totals, text)
    return ("Rows measured on different numbers of test images", f": {parts}") if parts else None


def _autoattack_note(rep: ReportContent, text: Text) -> tuple[str, str] | None:
    """A line above the main table when AutoAttack ran on different first images in different runs: its header
    said "first 20/50" without saying which row (or which seed of a row) was measured on which."""
    subsets = [autoattack_result(run.evals[rep.checkpoint]) for run in rep.runs]
    parts = _rows_by(rep, [int(a["n"]) if a else None for a in subsets], text)
    return ("AutoAttack measured on different numbers of first test images", f": {parts}") if parts else None


def _rows_by(rep: ReportContent, sizes: Sequence[int | None], text: Text) -> str:
    """``"10,000 (a, b); 1,000 (c)"``: the rows of each size, largest first, when the runs' sizes differ (a row
    whose seeds differ is under each of its sizes); empty when they do not. None: the run has no such number."""
    rows_by_size: dict[int, list[str]] = {}
    for size, row in zip(sizes, rep.run_rows):
        if size is not None:
            names = rows_by_size.setdefault(size, [])
            names += [] if row["group"] in names else [row["group"]]
    if len(rows_by_size) < 2:
        return ""
    return "; ".join(f"{size:,} ({', '.join(map(text, names))})" for size, names in sorted(rows_by_size.items())[::-1])


def _worst_case_note(rep: ReportContent, text: Text) -> tuple[str, str] | None:
    """A line above the main table when rows' worst cases are taken over different attacks (their suites differ):
    the column would otherwise compare a worst case over FGSM alone with one over seven attacks."""
    over: dict[str, set[tuple[str, ...]]] = {}
    for run, row in zip(rep.runs, rep.run_rows):
        over.setdefault(row["group"], set()).add(worst_case_attacks(run.evals[rep.checkpoint]))
    if len(set().union(*over.values())) < 2:
        return None
    parts = "; ".join(
        f"{text(name)}: {' / '.join(text(', '.join(a)) for a in sorted(sets))}" for name, sets in over.items()
    )
    return "The worst case is over different attacks in different rows", f" (their suites differ): {parts}"


def _settings_note(rep: ReportContent, text: Text) -> tuple[str, str] | None:
    """A line above the main table when one attack label was recorded with other settings in another run (a
    record of another dard version, a hand-made one): its column, headed by the first run's settings, holds both.
    Only keys both configs record are compared, so an older record without a key added since is not flagged."""
    first: dict[str, Mapping[str, Any]] = {}
    differ: dict[str, set[str]] = {}
    for run in rep.runs:
        for label, res in run.evals[rep.checkpoint].attacks.items():
            keys = other_settings(res.config, first.setdefault(label, res.config))
            if keys:
                differ.setdefault(label, set()).update(keys)
    if not differ:
        return None
    parts = "; ".join(f"{text(label)} ({text(', '.join(sorted(keys)))})" for label, keys in differ.items())
    return "Attacks recorded with other settings in some runs", f" (their column holds both): {parts}"


def sanity_table(rep: ReportContent) -> list[str]:
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
        *(f"PGD-20 at eps {_eps_short(e, _norm_of(rep))}" for e in eps_keys),
    ]
    rows = []
    for g in rep.group_rows:
        row = [g["name"], str(g["n"]), *(cell_text(g, rep.checkpoint, c.key) for c in rep.sanity)]
        row += [format_summary((g.get("eps_sweep") or {}).get(e)) for e in eps_keys]
        rows.append(row)
    return lines + markdown_table(header, rows, text_columns=1) + [""]


def _norm_of(rep: ReportContent) -> str:
    """The runs' threat-model norm (the first run's: a report of several norms warns above its tables)."""
    records = [r.evals[rep.checkpoint] for r in rep.runs if rep.checkpoint in r.evals]
    return str(records[0].threat_model.get("norm", "linf")) if records else "linf"


def _eps_short(key: str, norm: str) -> str:
    try:
        eps = float(key)
    except ValueError:
        return key
    return eps_text(eps, 2e-3, norm)  # the sweep's keys have 6 decimals: 8/255 is 0.031373, 255 times which is 8.0001


def other_checkpoint_table(rep: ReportContent) -> list[str]:
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
    show = [c for c in rep.columns if c.key == "pgd20" and any(g[other][c.key]["n"] for g in present)]
    if any(g[other][AA_KEY]["n"] for g in present):  # headed by this checkpoint's own subset sizes
        subsets = [autoattack_result(r.evals[other]) for r in rep.runs if other in r.evals]
        ns = "/".join(ordered_union([str(a["n"])] for a in subsets if a))
        show += [Column(AA_CLEAN, f"Clean (first {ns})"), Column(AA_KEY, f"AutoAttack (first {ns})", AA_CLEAN)]
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
