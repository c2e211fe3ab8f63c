"""The one Markdown table helper (cells escaped) and :class:`ReportContent`, what ``report.md`` shows; the sections
are rendered by :mod:`dard.report.tables` (the accuracy tables) and :mod:`dard.report.sections` (the rest and the
whole document)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dard.errors import one_line
from dard.report.columns import Column
from dard.report.paired_section import PairedSection
from dard.run_dir import RunRecord

#: characters with a meaning inside a line of Markdown (GitHub's ``~`` strikethrough and ``$`` math included, ``&``
#: entities, ``<`` HTML and autolinks, ``|`` a table's cells): escaped wherever a record's text is shown
_INLINE = frozenset("\\`*_[]<>|~&$^")
#: a first character that starts a block (heading, list, quote, setext line) at the start of a line or list item
_BLOCK = frozenset("#+-=>")
_ORDERED = re.compile(r"(\d+)([.)])")


def md_text(value: Any) -> str:
    """``value`` (a run name, an attack label, a path, a message) as literal text in a line of ``report.md``: one
    line (:func:`dard.errors.one_line`: line breaks become spaces, control characters and bidirectional overrides
    are shown escaped) with every character that Markdown reads as markup backslash-escaped, so a name such as
    ``a|b``, ``*x*``, ``<b>`` or one with backticks is shown as it is and never adds a table cell or markup."""
    text = "".join("\\" + c if c in _INLINE else c for c in one_line(value))
    if text[:1] in _BLOCK:
        return "\\" + text
    return _ORDERED.sub(r"\1\\\2", text, count=1) if _ORDERED.match(text) else text


def md_code(value: Any) -> str:
    """``value`` as an inline code span (a path, a row named in prose): one line, fenced by more backticks than
    it holds, so a backtick in it cannot end the span."""
    text = one_line(value)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _cell(text: Any) -> str:
    """A number cell (dard's own text: digits, ±, an interval, marks): one line, ``|`` escaped."""
    return one_line(text).replace("|", "\\|")


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]], *, text_columns: int = 4) -> list[str]:
    """A Markdown table, one line per list item: the first ``text_columns`` columns left-aligned, the (number)
    columns after them right-aligned. The headers and the text columns are shown as they are (:func:`md_text`),
    the number columns on one line with ``|`` escaped."""
    lines = [
        "| " + " | ".join(md_text(h) for h in header) + " |",
        "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(header))) + "|",
    ]
    lines += [
        "| " + " | ".join(md_text(c) if i < text_columns else _cell(c) for i, c in enumerate(r)) + " |" for r in rows
    ]
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
