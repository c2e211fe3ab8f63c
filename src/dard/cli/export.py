"""`dard export`: finished runs' records (and small weights) packed into one .tar.gz."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "pack finished runs' records (and small weights) into one .tar.gz"


def add_arguments(ex: argparse.ArgumentParser) -> None:
    """`dard export`'s options."""
    ex.add_argument("runs", nargs="+", help="run folders")
    ex.add_argument("--out", required=True, help="archive to write (.tar.gz)")
    ex.add_argument(
        "--weights",
        choices=["auto", "all", "best", "none"],
        default="auto",
        help="which weights travel: auto (each file up to --max-weights-mib), all, best (the best checkpoint), none",
    )
    ex.add_argument("--max-weights-mib", type=float, default=8.0, help="with --weights auto (default 8)")


def run(args: argparse.Namespace) -> int:
    """Write the archive and say how large it is."""
    from dard.run_dir.archive import ExportOptions, export_runs

    path = export_runs(args.runs, args.out, ExportOptions(args.weights, args.max_weights_mib))
    print(f"exported {len(args.runs)} run(s) to {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0
