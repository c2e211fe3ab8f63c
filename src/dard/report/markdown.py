"""The one Markdown table helper (cells escaped) and :class:`ReportContent`, what ``report.md`` shows; the sections
are rendered by :mod:`dard.report.tables` (the accuracy tables) and :mod:`dard.report.sections` (the rest and the
whole document)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dard.report.columns import Column
from dard.report.paired_section import PairedSection
from dard.run_dir import RunRecord


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
