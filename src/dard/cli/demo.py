"""`dard demo`: the packaged digits experiment (a teacher and five students, evaluated and reported)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dard.errors import DardError

__all__ = ["HELP", "add_arguments", "run"]

HELP = "the embedded-data demo: teacher + five students, evaluated and reported"


def add_arguments(d: argparse.ArgumentParser) -> None:
    """`dard demo`'s options."""
    d.add_argument("--out", default="runs/demo", help="runs and report folder (default runs/demo)")
    d.add_argument("--seeds", default="0", help="comma-separated seeds (e.g. 0,1,2)")
    d.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    d.add_argument("--jobs", type=int, help="student runs at a time on CPU (default: min(2, cores))")


def run(args: argparse.Namespace) -> int:
    """Run the demo experiment and say where its report is."""
    from dard.experiment.demo import run_demo

    seeds = _seeds(args.seeds)
    path = run_demo(Path(args.out), seeds=seeds, device=args.device, jobs=args.jobs)
    print(f"demo report: {path}")
    return 0


def _seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` as a list of distinct seeds (DardError otherwise)."""
    from dard.config.schema import SEED_MAX
    from dard.errors import shown

    parts = [s.strip() for s in str(text).split(",") if s.strip()]
    if not parts or not all(p.isascii() and p.isdigit() and len(p) <= 10 for p in parts):
        raise DardError(f"--seeds must be comma-separated non-negative integers such as 0,1,2; got {shown(text)}")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds) or max(seeds) > SEED_MAX:
        raise DardError(f"--seeds must be distinct and at most {SEED_MAX}; got {shown(text)}")
    return seeds
