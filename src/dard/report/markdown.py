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

#: characters that are markup wherever they stand in a line: code spans, emphasis (``*`` also inside a word), links,
#: HTML and autolinks, a table's cells, GitHub's ``~`` strikethrough and ``$`` math
_INLINE = frozenset("`*[]<|~$")
#: CommonMark's backslash escapes: a backslash before one of these is an escape, before anything else a backslash
_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
#: ``&`` that starts an entity or a character reference (``&amp;``, ``&#60;``): anywhere else it is an ampersand
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]*);")
#: a first character that starts a block (heading, list, quote, setext line) at the start of a line or list item
_BLOCK = frozenset("#+-=>")
_ORDERED = re.compile(r"(\d+)([.)])")


def _markup(line: str, i: int) -> bool:
    """Whether ``line[i]`` would be read as Markdown where it stands (outside a block's first character)."""
    c, before, after = line[i], line[i - 1 : i], line[i + 1 : i + 2]
    if c == "\\":  # an escape before punctuation; at the end, before whatever the report puts after the text
        return not after or after in _PUNCT
    if c == "_":  # emphasis, except inside a word (``x86_64``, ``batch_size``)
        return not (before.isalnum() and after.isalnum())
    if c == "&":
        return _ENTITY.match(line, i) is not None
    return c in _INLINE


def md_text(value: Any, *, start: bool = False) -> str:
    """``value`` (a run name, an attack label, a path, a message) as literal text in a line of ``report.md``: one
    line (:func:`dard.errors.one_line`: line breaks become spaces, control characters and bidirectional overrides
    are shown escaped) with a backslash before each character Markdown would read as markup where it stands, and
    before no other (``torch 2.13.0``, ``x86_64`` and ``R&D`` read the same raw and rendered), so a name such as
    ``a|b``, ``*x*``, ``<b>`` or one with backticks is shown as it is and never adds a table cell or markup.
    ``start``: the text begins a line or a list item, where ``# ``, ``- ``, ``> `` or ``1.`` would start a block."""
    line = one_line(value)
    text = "".join("\\" + c if _markup(line, i) else c for i, c in enumerate(line))
    if not start:
        return text
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
