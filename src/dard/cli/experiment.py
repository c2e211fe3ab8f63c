"""`dard experiment`: every run of an experiment file, their evaluation and report (or, with --plan, what would
run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dard.errors import DardError

if TYPE_CHECKING:
    from dard.experiment import Experiment
    from dard.experiment.budget import BudgetOptions

__all__ = ["HELP", "add_arguments", "run"]

HELP = "run an experiment (experiments/NAME/SCALE.yaml): all runs, evaluation, report"


def add_arguments(x: argparse.ArgumentParser) -> None:
    """`dard experiment`'s options."""
    x.add_argument("name", help="experiment name (main, lambda, attacks, ...) or the path of an experiment YAML")
    x.add_argument(
        "--scale",
        help="cpu (default: 2 CPU cores, hours), gpu (short GPU jobs), paper (the authors' setup); `dard list` names "
        "each one's; not with a file's path",
    )
    x.add_argument(
        "--runs",
        help="run folders (default: the experiment's runs_dir, else runs/experiments/<scale>; shared by the "
        "experiments of a scale)",
    )
    x.add_argument("--results", help="report folder (default results/<name>/<scale>)")
    x.add_argument("--data-dir", help="data folder for every run (default $DARD_DATA_DIR or ./data)")
    x.add_argument("--download", action="store_true", help="download the official archives if absent")
    x.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    x.add_argument("--jobs", type=int, help="runs at a time on CPU (default: min(2, cores))")
    x.add_argument(
        "--plan",
        action="store_true",
        help="check every config, reusable run folder and dataset, print what would run, train nothing",
    )
    x.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="wall time (8m, 1h30m, 480): start only runs that fit, stop cleanly when it ends (docs/gpu.md)",
    )
    x.add_argument(
        "--partial-under",
        type=float,
        metavar="MIB",
        help="with --time-budget: a run whose weights and resume state fit in MIB may start and stop part-way",
    )
    x.add_argument("--export", metavar="DIR", help="with --time-budget: write each run's archive here as it ends")
    x.add_argument(
        "--no-training",
        action="store_true",
        help="with --time-budget: train nothing, only finish the test evaluations and extras of trained runs",
    )


def run(args: argparse.Namespace) -> int:
    """Run the experiment (or print its plan) and say where its report is."""
    from dard.experiment import load_experiment, run_experiment

    if args.scale is not None and Path(args.name).suffix in (".yaml", ".yml"):
        # a file is run as it is: `mine/e.yaml --scale gpu` ran e.yaml's settings under a scale it did not say
        raise DardError(f"--scale picks a named experiment's file; {args.name} is a file, run as it is: drop --scale")
    exp = load_experiment(args.name, args.scale or "cpu")
    budget = _budget_options(args)  # before the plan's checks, which load the data: a typo fails in a second
    runs = Path(args.runs or exp.spec.runs_dir or Path("runs") / "experiments" / exp.scale)
    exp.use_data(args.data_dir, args.download)
    results = Path(args.results or Path("results") / exp.name / exp.scale)
    if args.plan:
        from dard.experiment.status import check_results_folder

        check_results_folder(results)  # as the experiment itself checks it first
        _print_plan(args, exp, runs, budget)
        return 0
    command = "dard experiment " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    path = run_experiment(exp, runs, results, device=args.device, jobs=args.jobs, command=command, budget=budget)
    print(f"experiment report: {path}" if path else "experiment: no run finished yet, no report")
    return 0


def _print_plan(args: argparse.Namespace, exp: Experiment, runs: Path, budget: BudgetOptions | None) -> None:
    """--plan: each run's status, the compute left, and what fits a --time-budget; trains nothing."""
    from dard.experiment import plan_experiment
    from dard.experiment.pool import jobs_for

    rows = plan_experiment(exp, runs)
    width = max(len(r.name) for r in rows)
    for r in rows:
        c = r.config
        print(
            f"{r.name:<{width}}  {r.role:<7}  {c.method.name:<8} {c.model.arch:<10} {c.data.name} "
            f"x {c.optim.epochs} epochs  {r.status}"
        )
    todo = sum(not r.done for r in rows)
    print(f"{len(rows)} runs in {runs}: {len(rows) - todo} done, {todo} to train or evaluate")
    jobs = jobs_for(args.device, args.jobs)
    if todo:
        from dard.experiment.status import at_a_time, campaign_status, hours_left

        hours = hours_left(campaign_status(exp, runs, args.device, jobs), jobs)
        print(f"estimated compute left on this device, {at_a_time(jobs)}: {hours:.1f} h")
    if budget is not None:
        from dard.experiment.budget import plan_budget

        print(f"within --time-budget {args.time_budget} ({budget.seconds:.0f} s), in the order it takes them:")
        for line in plan_budget(exp, runs, budget, args.device, jobs):
            print(f"  {line}")


def _budget_options(args: argparse.Namespace) -> BudgetOptions | None:
    """The experiment's time budget from its flags (None without --time-budget)."""
    from dard.durations import parse_duration
    from dard.experiment.budget import BudgetOptions

    if args.time_budget is None:
        if args.partial_under is not None or args.export or args.no_training:
            raise DardError("--partial-under, --export and --no-training go with --time-budget")
        return None
    export = Path(args.export) if args.export else None
    return BudgetOptions(parse_duration(args.time_budget), args.partial_under, export, train=not args.no_training)
