"""The teacher's row of a report: the run folder each student's run.json names as its teacher, when it is at hand.

A student records its teacher's checkpoint path (``teacher.source`` in run.json, as given when it was trained:
relative to the working folder of that time). The teacher's run folder is the one enclosing that path, looked up
beside the student's own folder (run folders moved or copied together) and else as recorded; a run of the report
with the teacher folder's name is taken to be it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dard.errors import DardError
from dard.report.groups import check_one_table
from dard.report.markdown import md_code, md_text
from dard.run_dir import RunDir, RunRecord, enclosing_run

__all__ = ["FoundTeachers", "find_teachers", "teacher_folder"]


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
    out.notes = list(dict.fromkeys(out.notes))
    return out
