"""Reports over finished training runs: a Markdown table (mean ± std over seeds), ``results.json`` and plots.

Run folders are read through :mod:`dard.run_dir` (:class:`~dard.run_dir.RunRecord`); :mod:`.groups` puts runs
whose recorded configs differ only in their seed in one row (and refuses mixed datasets, threat models and repeated
seeds), :mod:`.stats` computes the numbers, :mod:`.markdown` renders ``report.md`` (and holds the one Markdown
table helper), :mod:`.export` writes the CSV and TeX tables and the RobustBench entries, :mod:`.plots` draws
``curves.png`` and ``eps_curve.png``, and :func:`build_report` writes them all into one folder.
"""

from dard.report.build import build_report
from dard.report.export import FORMATS, robustbench_entry
from dard.report.groups import RunGroup, group_runs
from dard.report.markdown import markdown_table
from dard.report.plots import save_png, write_curves, write_eps_curve
from dard.report.stats import (
    DASH,
    format_summary,
    group_name,
    record_accuracies,
    seedless_name,
    summarize,
)

__all__ = [
    "DASH",
    "FORMATS",
    "RunGroup",
    "build_report",
    "format_summary",
    "group_name",
    "group_runs",
    "markdown_table",
    "record_accuracies",
    "robustbench_entry",
    "save_png",
    "seedless_name",
    "summarize",
    "write_curves",
    "write_eps_curve",
]
