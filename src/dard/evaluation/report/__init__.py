"""Reports over finished training runs: a Markdown table (mean ± std over seeds), ``results.json`` and plots.

Run folders are read through :mod:`dard.run_dir` (:class:`~dard.run_dir.RunRecord`); :mod:`.stats` groups runs
that differ only in their seed and computes the numbers, :mod:`.markdown` renders ``report.md`` (and holds the
one Markdown table helper), :mod:`.plots` draws ``curves.png`` and ``eps_curve.png``, and :func:`build_report`
writes them all into one folder.
"""

from dard.evaluation.report.build import build_report
from dard.evaluation.report.markdown import markdown_table
from dard.evaluation.report.plots import save_png, write_curves, write_eps_curve
from dard.evaluation.report.stats import (
    DASH,
    format_summary,
    group_name,
    record_accuracies,
    seedless_name,
    summarize,
)

__all__ = [
    "DASH",
    "build_report",
    "format_summary",
    "group_name",
    "markdown_table",
    "record_accuracies",
    "save_png",
    "seedless_name",
    "summarize",
    "write_curves",
    "write_eps_curve",
]
