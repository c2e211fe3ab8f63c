"""`dard import`: runs from archives (`dard export`) or run folders added to a runs folder (``import`` is a keyword,
hence the module's name)."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "add runs from archives (dard export) or run folders to a runs folder"


def add_arguments(im: argparse.ArgumentParser) -> None:
    """`dard import`'s options."""
    im.add_argument("sources", nargs="+", help=".tar.gz archives or run folders")
    im.add_argument("--runs", required=True, help="runs folder, e.g. runs/experiments/gpu")


def run(args: argparse.Namespace) -> int:
    """Import each source and print a line per run: what was done, and where."""
    from dard.run_dir.merge import import_runs

    for source in args.sources:
        for r in import_runs(source, args.runs):
            print(f"{r.name}: {r.action}{f' ({r.detail})' if r.detail else ''} -> {r.path}")
    return 0
