"""The teachers of a report: the teacher's row (the run folder each student's run.json names as its teacher, when
it is at hand), which teacher file each distilled row learned from (:func:`teachers_section`) and the warning when
the rows of one table learned from different ones (:func:`teacher_note`).

A student records its teacher's checkpoint path (``teacher.source`` in run.json, as given when it was trained:
relative to the working folder of that time). The teacher's run folder is the one enclosing that path, looked up
beside the student's own folder (run folders moved or copied together) and else as recorded; a run of the report
with the teacher folder's name is taken to be it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dard.errors import DardError
from dard.io import sha256_file
from dard.report.groups import check_one_table
from dard.report.markdown import ReportContent, markdown_table, md_code, md_text
from dard.report.stats import DASH
from dard.run_dir import RunDir, RunRecord, enclosing_run
from dard.run_dir.files import own_file

__all__ = ["FoundTeachers", "find_teachers", "row_teacher_sha256", "teacher_folder", "teacher_note", "teachers_section"]

#: hex digits of a teacher's SHA-256 shown (as git shows a commit): enough to tell two files apart by eye
SHORT_SHA = 12


@dataclass
class FoundTeachers:
    """The teachers' runs added to a report, every teacher run folder found (added or given), and notes."""

    added: list[RunRecord] = field(default_factory=list)
    paths: set[Path] = field(default_factory=set)  # resolved folders of every teacher found
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Preamble lines (Markdown list items) saying which teacher rows were added and which were not found."""
        out = [
            f"- Teacher row {md_code(t.name)}: the teacher named in the students' run.json ({md_code(t.path)})."
            for t in self.added
        ]
        return out + [f"- {n}" for n in self.notes]


def teacher_folder(run: RunRecord) -> RunDir | None:
    """The run folder of ``run``'s teacher checkpoint, beside ``run``'s folder or else as recorded; None if not
    found (or ``run`` has no teacher, or its teacher is an external weights file)."""
    source = (run.teacher or {}).get("source") if isinstance(run.teacher, dict) else None
    if not source:
        return None
    recorded = Path(str(source))
    # beside the student first: a copied or moved campaign's own teacher, not the original it was trained with
    for candidate in (run.path.parent / recorded.parent.name / recorded.name, recorded):
        folder = enclosing_run(candidate)
        if folder is not None and folder.path.resolve() != run.path.resolve():
            return folder
    return None


def find_teachers(runs: Sequence[RunRecord], checkpoint: str) -> FoundTeachers:
    """The teachers of ``runs`` not among them, loaded (each once), when evaluated at ``checkpoint`` on the same
    dataset and threat model as the runs; a note for each teacher that is not found or cannot share the table."""
    out = FoundTeachers()
    given = {r.path.resolve(): r for r in runs}
    digests: dict[Path, str | None] = {}  # each teacher file hashed once
    other: dict[Path, list[str]] = {}  # teacher file -> the students whose run.json records another SHA-256
    for run in runs:
        source = (run.teacher or {}).get("source") if isinstance(run.teacher, dict) else None
        if not source:
            continue
        folder = teacher_folder(run)
        if folder is None:
            out.notes.append(
                f"The teacher {md_code(source)} named in the students' run.json was not found: no teacher row."
            )
            continue
        # a given run of the same folder name is that teacher (a copy of the campaign), not a second row of it
        same = next((p for p, r in given.items() if r.path.name == folder.path.name), None)
        path = same or folder.path.resolve()
        _compare_weights(run, path, str(source), digests, other)
        if path in out.paths:
            continue
        out.paths.add(path)
        if path in given:
            continue
        try:
            teacher = RunRecord.load(folder.path)
            if checkpoint not in teacher.evals:
                raise DardError(f"it has no `{checkpoint}` evaluation")
            check_one_table([run, teacher], checkpoint)
        except DardError as e:
            out.notes.append(
                f"The teacher {md_code(folder.path)} named in the students' run.json is not shown: {md_text(e)}"
            )
            continue
        out.added.append(teacher)
    out.notes += [
        f"The teacher row {md_code(file.parent.name)} is not the teacher {md_text(', '.join(names))} learned from: "
        f"its {md_code(file.name)} has another SHA-256 than their run.json records (trained again since?)."
        for file, names in other.items()
    ]
    out.notes = list(dict.fromkeys(out.notes))
    return out


def _compare_weights(
    run: RunRecord, folder: Path, source: str, digests: dict[Path, str | None], other: dict[Path, list[str]]
) -> None:
    """Add ``run`` to ``other`` under its teacher's file in ``folder`` when that file's SHA-256 is not the one its
    run.json records: the teacher row shown would be another model than the one the student learned from. A file
    that is not there or not the run's own (a link) is not compared (the teacher row's own checks say so)."""
    sha = run.info.teacher_sha256
    file = folder / Path(source).name
    if not sha:
        return
    if file not in digests:
        try:
            digests[file] = sha256_file(file) if own_file(file, folder, "teacher weights") else None
        except (DardError, OSError):
            digests[file] = None
    if digests[file] is not None and digests[file] != sha:
        other.setdefault(file, []).append(run.name)


def _distilled(run: RunRecord) -> bool:
    return isinstance(run.teacher, dict) and bool(run.teacher)


def row_teacher_sha256(rep: ReportContent, name: str) -> str:
    """The SHA-256 of the teacher weights row ``name``'s seeds learned from, as their run.json records it (what
    results.csv says beside the teacher's name): one hash, or each once separated by ``; `` where the seeds learned
    from different files (``not recorded`` for an older run.json); empty for a row that distils from no teacher."""
    shas = [
        run.info.teacher_sha256 or "not recorded"
        for run, row in zip(rep.runs, rep.run_rows)
        if row["group"] == name and _distilled(run)
    ]
    return "; ".join(dict.fromkeys(shas))


def _seed_text(seeds: Sequence[int | None]) -> str:
    return ", ".join(str(s) for s in seeds)


def _row_names(entries: Sequence[tuple[str, int | None]], split: set[str], text: Callable[[Any], str]) -> str:
    """``a, b (seed 1)``: the rows of ``entries`` (row name, seed) once each, with the seeds of a row in ``split``
    (one whose seeds learned from different teachers)."""
    rows: dict[str, list[int | None]] = {}
    for name, seed in entries:
        rows.setdefault(name, []).append(seed)
    return ", ".join(
        text(name) + (f" (seed{'s' * (len(seeds) > 1)} {_seed_text(seeds)})" if name in split else "")
        for name, seeds in rows.items()
    )


def teacher_note(rep: ReportContent, text: Callable[[Any], str] = md_text) -> list[tuple[str, str]]:
    """The caveats about teachers said above the main table (and in results.tex's comments), each ``(what,
    detail)``: rows (or seeds of one row) distilled from teacher files of different SHA-256, whatever the teacher's
    name, and rows whose teacher cannot be told (run.json from before the hash was recorded) beside rows whose
    teacher is known or named by another file. Comparing distillation methods is comparing them under one teacher."""
    runs = [(run, row["group"]) for run, row in zip(rep.runs, rep.run_rows) if _distilled(run)]
    hashed: dict[str, list[tuple[str, int | None]]] = {}
    unknown: list[tuple[str, int | None]] = []
    for run, name in runs:
        sha = run.info.teacher_sha256
        (hashed.setdefault(sha, []) if sha else unknown).append((name, run.seed))
    notes = []
    if len(hashed) > 1:
        by_row: dict[str, set[str]] = {}
        for sha, entries in hashed.items():
            for name, _ in entries:
                by_row.setdefault(name, set()).add(sha)
        split = {name for name, shas in by_row.items() if len(shas) > 1}
        arch = {run.info.teacher_sha256: str((run.teacher or {}).get("arch") or "?") for run, _ in runs}
        parts = "; ".join(
            f"{text(arch.get(sha, '?'))} {sha[:SHORT_SHA]} ({_row_names(entries, split, text)})"
            for sha, entries in hashed.items()
        )
        notes.append(("Rows distilled from different teacher files", f" (SHA-256 of the weights): {parts}"))
    sources = {str((run.teacher or {}).get("source")) for run, _ in runs if not run.info.teacher_sha256}
    if unknown and (hashed or len(sources) > 1):
        names = _row_names(unknown, set(), text)
        notes.append(
            (
                "Which teacher file some rows learned from cannot be told",
                f" (their run.json records no teacher SHA-256, from before dard recorded it): {names}",
            )
        )
    return notes


def teachers_section(rep: ReportContent) -> list[str]:
    """The "Teachers" section of ``report.md``: for each distilled row, the teacher it learned from (name, file as
    recorded, epoch, short SHA-256 of the weights), one line per teacher file and the row's seeds of it; empty
    when no row was distilled."""
    lines: dict[tuple[Any, ...], list[int | None]] = {}
    for run, row in zip(rep.runs, rep.run_rows):
        if not _distilled(run):
            continue
        t = run.teacher or {}
        sha = run.info.teacher_sha256
        # as text: run.json's teacher is free-form (a hand-made list there is no key of a dict)
        arch, source, epoch = (None if t.get(k) is None else str(t.get(k)) for k in ("arch", "source", "epoch"))
        key = (row["group"], arch, source, epoch, sha[:SHORT_SHA] if sha else None)
        lines.setdefault(key, []).append(run.seed)
    if not lines:
        return []
    rows = [
        [name, arch or DASH, source or DASH, DASH if epoch is None else epoch, sha or "not recorded", _seed_text(seeds)]
        for (name, arch, source, epoch, sha), seeds in lines.items()
    ]
    header = ["Run", "Teacher", "Weights file (as recorded)", "Epoch", "SHA-256", "Seeds"]
    intro = (
        "The teacher each distilled row learned from, as its run.json records it: the file read, its epoch and the "
        f"first {SHORT_SHA} hex digits of the SHA-256 of its weights (`sha256sum`; not recorded by older runs)."
    )
    return ["## Teachers", "", intro, "", *markdown_table(header, rows, text_columns=5), ""]
