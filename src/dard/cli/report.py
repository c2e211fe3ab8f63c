"""`dard report`: a Markdown table (and CSV, TeX, plots) from finished runs."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = "build a Markdown table and plots from finished runs"


def add_arguments(r: argparse.ArgumentParser) -> None:
    """`dard report`'s options."""
    r.add_argument("runs", nargs="+", help="run folders")
    r.add_argument("--out", default="report", help="output folder (default report)")
    r.add_argument(
        "--checkpoint", choices=["best", "last"], default="best", help="checkpoint of the main table (default best)"
    )
    r.add_argument(
        "--format",
        default="md",
        help="comma-separated table formats: md (report.md, always written), csv (results.csv), tex (results.tex)",
    )


def run(args: argparse.Namespace) -> int:
    """Check --out, read the runs, write the report."""
    from dard.report import build_report
    from dard.report.out import check_report_out
    from dard.run_dir import RunRecord

    check_report_out(args.out)
    runs = [RunRecord.load(r) for r in args.runs]
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    path = build_report(runs, Path(args.out), checkpoint=args.checkpoint, formats=formats)
    print(f"report written: {path}")
    return 0
