"""`dard train`: train one run from a config (or continue one with --resume), print its evaluation table."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dard.cli.common import add_set_arg, say_line
from dard.errors import DardError

if TYPE_CHECKING:
    from dard.config import RunConfig

__all__ = ["HELP", "add_arguments", "run"]

HELP = "train a model with one method (`dard list` names them all)"

# `dard train` shortcuts: flag -> config key; which of them a resume takes is dard.training.resume's to say
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


def _option(flag: str) -> str:
    return f"--{flag.replace('_', '-')}"


def _given(value: object) -> bool:
    return value is not None and value is not False  # a store_true flag left off is False


def _resume_options() -> str:
    """The options a resume takes, as its help and refusal say: the shortcuts of the keys a resume may change, and
    ``--set eval.*`` (the recorded section without a shortcut) after the first of them."""
    from dard.training.resume import shortcut_may_change

    taken = [_option(flag) for flag, key in _TRAIN_SHORTCUTS if shortcut_may_change(key)]
    return ", ".join([*taken[:1], "--set eval.*", *taken[1:]])


def add_arguments(t: argparse.ArgumentParser) -> None:
    """`dard train`'s options (the shortcuts map to config keys in _TRAIN_SHORTCUTS)."""
    t.add_argument("--config", help="YAML run config: a file, or a packaged config's name (dard list)")
    add_set_arg(t, "override a config value, e.g. --set optim.epochs=5 (repeatable)")
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
        help=f"continue a run folder as recorded; it may change only {_RESUME_OPTIONS}",
    )
    t.formatter_class = _HelpFormatter


# a placeholder in --resume's help, filled in when help is shown: building the parser (every `dard` command) then
# does not import the training layer that says what a resume may change
_RESUME_OPTIONS = "<resume options>"


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with --resume's help completed from :mod:`dard.training.resume`."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        return text.replace(_RESUME_OPTIONS, _resume_options()) if text and _RESUME_OPTIONS in text else text


def _check_resume(args: argparse.Namespace) -> None:
    """A one-line DardError for an option a resume does not take (--config, --out, a shortcut of a recorded key)."""
    from dard.training.resume import shortcut_may_change

    refused = [_option(flag) for flag in ("config",) if args.config is not None]
    refused += [_option(f) for f, key in _TRAIN_SHORTCUTS if _given(getattr(args, f)) and not shortcut_may_change(key)]
    refused += [_option(flag) for flag in ("out",) if args.out is not None]
    if refused:
        raise DardError(
            f"--resume continues {args.resume} as recorded: {', '.join(refused)} cannot change it (a resume may "
            f"change {_resume_options()}); start a new run for the rest"
        )


def run(args: argparse.Namespace) -> int:
    """Carry out `dard train`; exit status 3 when stopped by --time-budget."""
    from dard.config import load_config, read_assignments
    from dard.durations import parse_duration
    from dard.training.distributed import from_environment
    from dard.training.naming import name_run
    from dard.training.resume import resume_config

    stop_at = None if args.time_budget is None else time.time() + parse_duration(args.time_budget)
    overrides = list(args.overrides)
    # the options' own values, typed by argparse: read as YAML text, `--teacher "runs/t #1"` lost its ` #1`
    shortcuts = {key: (_option(f), getattr(args, f)) for f, key in _TRAIN_SHORTCUTS if _given(getattr(args, f))}
    if args.resume:
        _check_resume(args)
        cfg = resume_config(args.resume, overrides, shortcuts)
        run_dir = _train_until(cfg, args.resume, True, stop_at)
    else:
        cfg = load_config(args.config, overrides, shortcuts)
        # the reader load_config used: a `--set name=...` as it read it, not a second split by hand
        name_given = "name" in read_assignments(overrides, "--set", dotted=True)
        cfg, folder = name_run(cfg, load_config(args.config), args.out, name_given)
        run_dir = _train_until(cfg, folder, False, stop_at)
    if run_dir is None:
        return 3
    if from_environment().is_main:  # under torchrun, say it once
        from dard.evaluation.table import format_evaluations
        from dard.run_dir import RunDir

        print(format_evaluations(RunDir(run_dir).read_evals()))
        print(f"run finished: {run_dir}")
    return 0


def _train_until(cfg: RunConfig, folder: str | Path, resume: bool, stop_at: float | None) -> Path | None:
    """Train (or resume); None when stopped at ``stop_at`` (said on stderr, with how to continue)."""
    from dard.training import train
    from dard.training.deadline import TrainingStopped

    try:
        return train(cfg, folder, resume=resume, stop_at=stop_at)
    except TrainingStopped as stop:  # exit status 3 on every rank: torchrun's summary quotes the line too
        say_line(f"dard: {stop}; continue with: dard train --resume {stop.run_dir}")
        return None
