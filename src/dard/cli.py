"""Command-line interface: `dard train | eval | report | demo | experiment | export | import | list | config`.

Errors caused by input (DardError) print one line and exit with status 2; no traceback. Anything else is a bug:
one line naming the command and the error type, exit status 1, the traceback in a log file (:mod:`dard.crash`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from dard.crash import crash_line, debug_wanted
from dard.errors import DardError, one_line

#: the longest error line printed (each echoed value is capped at dard.errors.SHOWN_CHARS already)
ERROR_CHARS = 1000


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", nargs="?", help="dard checkpoint (.safetensors with its .json) or a run folder")
    p.add_argument(
        "--model",
        help="architecture (a `dard list` name, timm:NAME or user code module:function) of the --weights, or of a "
        "checkpoint built from user code; robustbench:NAME alone evaluates that RobustBench model",
    )
    p.add_argument("--weights", help="external weights file (.pt/.pth/.safetensors state dict), loaded weights-only")
    p.add_argument(
        "--model-dir",
        help="RobustBench's model folder for --model robustbench:NAME (default $DARD_MODEL_DIR, else "
        "~/.cache/dard/robustbench); offline, put <dataset>/<threat>/<NAME>.pt there",
    )
    p.add_argument(
        "--normalization",
        choices=["dataset", "none"],
        help="required with --weights: 'dataset' (trained on inputs normalised with the dataset mean/std) or "
        "'none' (trained on raw [0, 1] pixels); a dard checkpoint records its own",
    )
    p.add_argument("--data", help="dataset name (default: a run's own dataset, else cifar10)")
    p.add_argument("--data-dir", help="data folder (official CIFAR layout, or an image folder)")
    p.add_argument("--download", action="store_true", help="download the official archive if absent")
    p.add_argument("--n", type=int, help="evaluate the first N test images (default: all)")
    from dard.evaluation.suite import QUICK_SUITE

    p.add_argument(
        "--attacks",
        help=f"comma-separated suite labels (fgsm,pgd20,pgd-ll,tpgd-kl,bim,cw-linf,dpgd,pgd-large,autoattack) or "
        f"attack names (default: {','.join(QUICK_SUITE)}; under L2 without the Linf-only cw-linf)",
    )
    p.add_argument("--eps", help="budget, a number or fraction (default: a run's own eps, else 8/255)")
    p.add_argument(
        "--norm",
        type=str.lower,
        choices=["linf", "l2"],
        help="threat-model norm of every attack (default: a run's own norm, else linf)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="images per attack batch (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    p.add_argument(
        "--out", help="write the JSON record here (never over a file that is not an eval record; in a run: eval/)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_set_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def _add_train_args(t: argparse.ArgumentParser) -> None:
    """`dard train`'s options (the shortcuts map to config keys in _TRAIN_SHORTCUTS)."""
    t.add_argument("--config", help="YAML run config: a file, or a packaged config's name (dard list)")
    _add_set_arg(t, "override a config value, e.g. --set optim.epochs=5 (repeatable)")
    t.add_argument("--method", help="shortcut for --set method.name=...")
    t.add_argument("--model", help="shortcut for --set model.arch=... (a `dard list` name or module:function)")
    t.add_argument("--data", help="shortcut for --set data.name=...")
    t.add_argument("--data-dir", help="shortcut for --set data.dir=...")
    t.add_argument(
        "--teacher",
        metavar="RUN",
        help="teacher run folder, dard checkpoint or robustbench:NAME (a RobustBench zoo model; its weights in "
        "$DARD_MODEL_DIR, else ~/.cache/dard/robustbench) (--set teacher.checkpoint=...)",
    )
    t.add_argument("--epochs", type=int, help="shortcut for --set optim.epochs=...")
    t.add_argument("--seed", type=int, help="shortcut for --set seed=...")
    t.add_argument("--out", help="run folder; the run is named after it (default runs/<name>, name from the config)")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N (shortcut for --set device=...)")
    t.add_argument(
        "--download", action="store_true", help="download the official dataset archive if absent (data.download)"
    )
    t.add_argument(
        "--time-budget",
        metavar="DURATION",
        help="wall time (8m, 1h30m, 480): stop with a snapshot when it ends (exit 3), evaluate only if that fits",
    )
    t.add_argument(
        "--resume",
        metavar="RUN",
        help="continue a run folder as recorded; it may change only --epochs, --set eval.*, --device, --data-dir",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    from dard import __version__

    parser = argparse.ArgumentParser(prog="dard", description="Adversarially robust knowledge distillation (DARD).")
    parser.add_argument("--version", action="version", version=f"dard {__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model with one method (`dard list` names them all)")
    _add_train_args(t)

    e = sub.add_parser("eval", help="evaluate a model's robustness with the attack suite")
    _add_eval_args(e)

    r = sub.add_parser("report", help="build a Markdown table and plots from finished runs")
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

    d = sub.add_parser("demo", help="the embedded-data demo: teacher + five students, evaluated and reported")
    d.add_argument("--out", default="runs/demo", help="runs and report folder (default runs/demo)")
    d.add_argument("--seeds", default="0", help="comma-separated seeds (e.g. 0,1,2)")
    d.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    d.add_argument("--jobs", type=int, help="student runs at a time on CPU (default: min(2, cores))")

    x = sub.add_parser(
        "experiment", help="run an experiment (experiments/NAME/SCALE.yaml): all runs, evaluation, report"
    )
    x.add_argument("name", help="experiment name (main, lambda, attacks, ...) or the path of an experiment YAML")
    x.add_argument(
        "--scale",
        default="cpu",
        help="cpu (2 CPU cores, hours), gpu (short GPU jobs), paper (the authors' setup); `dard list` names each one's",
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

    ex = sub.add_parser("export", help="pack finished runs' records (and small weights) into one .tar.gz")
    ex.add_argument("runs", nargs="+", help="run folders")
    ex.add_argument("--out", required=True, help="archive to write (.tar.gz)")
    ex.add_argument(
        "--weights",
        choices=["auto", "all", "best", "none"],
        default="auto",
        help="which weights travel: auto (each file up to --max-weights-mib), all, best (the best checkpoint), none",
    )
    ex.add_argument("--max-weights-mib", type=float, default=8.0, help="with --weights auto (default 8)")

    im = sub.add_parser("import", help="add runs from archives (dard export) or run folders to a runs folder")
    im.add_argument("sources", nargs="+", help=".tar.gz archives or run folders")
    im.add_argument("--runs", required=True, help="runs folder, e.g. runs/experiments/gpu")

    sub.add_parser("list", help="list registered models, datasets, attacks and methods")

    c = sub.add_parser("config", help="show a run config with every key (dard config show)")
    c.add_argument("action", choices=["show"], help="show: print the resolved config as commented YAML")
    c.add_argument(
        "source", nargs="?", help="a config file, a packaged config's name or a run folder (default: the defaults)"
    )
    _add_set_arg(c, "override a config value before showing it (repeatable)")
    for command in sub.choices.values():  # `dard train --debug ...` works as well as `dard --debug train ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser


_DEBUG_HELP = "print the traceback of an unexpected error instead of writing it to a log (or set DARD_DEBUG=1)"
# `dard train` shortcuts: flag -> config key; with --resume only the last four are accepted (dard.training.resume)
_TRAIN_SHORTCUTS = [
    ("method", "method.name"),
    ("model", "model.arch"),
    ("data", "data.name"),
    ("teacher", "teacher.checkpoint"),
    ("seed", "seed"),
    ("epochs", "optim.epochs"),
    ("device", "device"),
    ("data_dir", "data.dir"),
    ("download", "data.download"),
]
_NOT_ON_RESUME = ["config", "method", "model", "data", "teacher", "seed", "out"]


def _cmd_train(args: argparse.Namespace) -> int:
    from dard.config import load_config
    from dard.training.naming import name_run
    from dard.training.resume import resume_config

    stop_at = None
    if args.time_budget is not None:
        from dard.experiment.budget import parse_duration

        stop_at = time.time() + parse_duration(args.time_budget)
    overrides = list(args.overrides)
    for flag, key in _TRAIN_SHORTCUTS:
        value = getattr(args, flag)
        if value is not None and value is not False:
            overrides.append(f"{key}={value}")
    if args.resume:
        refused = [f"--{flag.replace('_', '-')}" for flag in _NOT_ON_RESUME if getattr(args, flag) is not None]
        if refused:
            raise DardError(
                f"--resume continues {args.resume} as recorded: {', '.join(refused)} cannot change it (a resume may "
                "change --epochs, --set eval.*, --device, --data-dir, --download); start a new run for the rest"
            )
        cfg = resume_config(args.resume, overrides)
        run = _train_until(cfg, args.resume, True, stop_at)
    else:
        cfg = load_config(args.config, overrides)
        name_given = any(o.partition("=")[0].strip() == "name" for o in overrides)
        cfg, folder = name_run(cfg, load_config(args.config), args.out, name_given)
        run = _train_until(cfg, folder, False, stop_at)
    if run is None:
        return 3
    if os.environ.get("RANK", "0") == "0":  # under torchrun, say it once
        from dard.evaluation.table import format_evaluations
        from dard.run_dir import RunDir

        print(format_evaluations(RunDir(run).read_evals()))
        print(f"run finished: {run}")
    return 0


def _train_until(cfg, folder: str | Path, resume: bool, stop_at: float | None) -> Path | None:
    """Train (or resume); None when stopped at ``stop_at`` (said on stderr, with how to continue)."""
    from dard.training import train
    from dard.training.deadline import TrainingStopped

    try:
        return train(cfg, folder, resume=resume, stop_at=stop_at)
    except TrainingStopped as stop:
        if os.environ.get("RANK", "0") == "0":
            _stderr_line(f"dard: {stop}; continue with: dard train --resume {stop.run_dir}")
        return None


def _cmd_eval(args: argparse.Namespace) -> int:
    from dard.evaluation.cli import run_eval

    run_eval(args)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from dard.evaluation.output import check_report_out
    from dard.evaluation.report import build_report
    from dard.run_dir import RunRecord

    check_report_out(args.out)
    runs = [RunRecord.load(r) for r in args.runs]
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    path = build_report(runs, Path(args.out), checkpoint=args.checkpoint, formats=formats)
    print(f"report written: {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
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


def _cmd_experiment(args: argparse.Namespace) -> int:
    from dard.experiment import load_experiment, run_experiment

    exp = load_experiment(args.name, args.scale)
    runs = Path(args.runs or exp.spec.runs_dir or Path("runs") / "experiments" / exp.scale)
    exp.use_data(args.data_dir, args.download)
    if args.plan:
        from dard.experiment import plan_experiment

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
        if todo:
            from dard.experiment.status import campaign_status, hours_left

            hours = hours_left(campaign_status(exp, runs, args.device))
            print(f"estimated compute left on this device, one run at a time: {hours:.1f} h")
        if args.time_budget is not None:
            from dard.experiment.budget import plan_budget

            budget = _budget_options(args)
            print(f"within --time-budget {args.time_budget} ({budget.seconds:.0f} s), in the order it takes them:")
            for line in plan_budget(exp, runs, budget, args.device):
                print(f"  {line}")
        return 0
    results = Path(args.results or Path("results") / exp.name / exp.scale)
    command = "dard experiment " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else ""
    budget = _budget_options(args)
    path = run_experiment(exp, runs, results, device=args.device, jobs=args.jobs, command=command, budget=budget)
    print(f"experiment report: {path}" if path else "experiment: no run finished yet, no report")
    return 0


def _budget_options(args: argparse.Namespace):
    """The experiment's time budget from its flags (None without --time-budget)."""
    from dard.experiment.budget import BudgetOptions, parse_duration

    if args.time_budget is None:
        if args.partial_under is not None or args.export:
            raise DardError("--partial-under and --export go with --time-budget")
        return None
    export = Path(args.export) if args.export else None
    return BudgetOptions(parse_duration(args.time_budget), args.partial_under, export)


def _cmd_export(args: argparse.Namespace) -> int:
    from dard.run_dir.archive import ExportOptions, export_runs

    path = export_runs(args.runs, args.out, ExportOptions(args.weights, args.max_weights_mib))
    print(f"exported {len(args.runs)} run(s) to {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from dard.run_dir.merge import import_runs

    for source in args.sources:
        for r in import_runs(source, args.runs):
            print(f"{r.name}: {r.action}{f' ({r.detail})' if r.detail else ''} -> {r.path}")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from dard.attacks import list_attacks
    from dard.data import list_datasets
    from dard.methods import list_methods
    from dard.models import list_models

    for kind, names in [
        ("models", list_models()),
        ("datasets", list_datasets()),
        ("attacks", list_attacks()),
        ("methods", list_methods()),
    ]:
        print(f"{kind}: {', '.join(names)}")
    print(
        "model prefixes: timm:NAME (a timm model, model.kwargs for its arguments; dard[timm]), robustbench:NAME "
        "(a RobustBench zoo model: dard eval --model, --teacher; dard[robustbench]), module:function (your code)"
    )
    from dard.evaluation.suite import DEFAULT_SUITE

    print(f"suite labels (dard eval --attacks, eval.attacks): {', '.join(DEFAULT_SUITE)}")
    from dard.experiment import list_experiments
    from dard.packaged import list_configs

    print("experiments: " + ", ".join(f"{n} ({'/'.join(scales)})" for n, scales in list_experiments().items()))
    print("configs: " + ", ".join(list_configs()))
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from dard.config import apply_overrides, load_config, parse_config
    from dard.config.show import show_config
    from dard.run_dir import RunDir
    from dard.training.setup import build_method

    folder = RunDir(args.source) if args.source else None
    if folder is not None and folder.path.is_dir() and folder.config.is_file():  # a run folder: what it recorded
        data = folder.read_config()
        apply_overrides(data, args.overrides)
        cfg = parse_config(data)
    else:
        cfg = load_config(args.source, args.overrides)
    sys.stdout.write(show_config(cfg, build_method(cfg).config(), args.source))
    return 0


COMMANDS = {
    "train": _cmd_train,
    "eval": _cmd_eval,
    "report": _cmd_report,
    "demo": _cmd_demo,
    "experiment": _cmd_experiment,
    "export": _cmd_export,
    "import": _cmd_import,
    "list": _cmd_list,
    "config": _cmd_config,
}


# options naming files or folders: checked for what a file system takes before any command runs
_PATH_ARGS = ("out", "runs", "results", "export", "resume", "config", "checkpoint", "weights", "data_dir", "teacher")
# numeric options: (least, most); floats must be finite as well
_NUMBER_ARGS = {
    "jobs": (1, 256),
    "n": (1, 10**9),
    "batch_size": (1, 10**9),
    "seed": (0, 2**32 - 1),
    "partial_under": (0, 10**9),
    "max_weights_mib": (0, 10**9),
}


def _check_args(args: argparse.Namespace) -> None:
    """Paths a file system can take (UTF-8, names of at most 255 bytes) and numbers in range, before any work."""
    from dard.io import check_path

    for key in (*_PATH_ARGS, "sources", "overrides", "name"):
        values = getattr(args, key, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str):
                check_path(value, f"--{key.replace('_', '-')}", components=key not in ("overrides", "name"))
    for key, (least, most) in _NUMBER_ARGS.items():
        value = getattr(args, key, None)
        if value is not None and not (math.isfinite(value) and least <= value <= most):
            raise DardError(f"--{key.replace('_', '-')} must be a number from {least} to {most}; got {value}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)  # imports torch (the suite's labels): Ctrl-C may come here
    except KeyboardInterrupt:
        _stderr_line("dard: interrupted")
        return 130
    debug = debug_wanted(args.debug)
    try:
        _check_args(args)
        return COMMANDS[args.command](args)
    except DardError as e:  # bad input: one line and exit 2, with --debug too (it only unmasks unexpected errors)
        _stderr_line(f"dard: error: {one_line(e, ERROR_CHARS)}")
        return 2
    except KeyboardInterrupt:
        _stderr_line("dard: interrupted")
        return 130
    except Exception as e:  # the net: a bug, not the input (each input error has its own DardError line)
        if debug:
            raise
        _stderr_line(crash_line(args.command, e))
        return 1


def _stderr_line(text: str) -> None:
    # One write with the newline included: under torchrun every rank shares the same stderr pipe, and print()'s
    # separate write of "\n" let two ranks' messages run together on one line.
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


if __name__ == "__main__":
    raise SystemExit(main())
