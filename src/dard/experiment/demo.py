"""`dard demo`: the embedded-data experiment (``experiments/demo/digits.yaml``): a SAT teacher, then SAT, ARD,
RSLAD, PGDARD and DARD students under one budget on the digits, evaluated with the suite and reported."""

from __future__ import annotations

from pathlib import Path

from dard.experiment.catalog import load_experiment
from dard.experiment.runner import run_experiment
from dard.experiment.spec import Experiment
from dard.packaged import EXPERIMENTS_DIR


def demo_experiment(seeds: list[int] | None = None) -> Experiment:
    """The demo experiment shipped with the package, optionally for other seeds."""
    exp = load_experiment("demo", "digits", root=EXPERIMENTS_DIR)
    if seeds:
        exp.spec.seeds = list(seeds)
    return exp


def run_demo(out: Path, seeds: list[int], device: str = "auto", jobs: int | None = None) -> Path:
    """Run the demo for each seed in ``out`` (runs are reused and resumed) and return the report's path."""
    exp = demo_experiment(seeds)
    command = f"dard demo --out {out} --seeds {','.join(map(str, seeds))}"
    report = run_experiment(exp, Path(out), Path(out) / "report", device=device, jobs=jobs, command=command)
    assert report is not None  # None only when a budget finished nothing, and the demo runs without one
    return report
