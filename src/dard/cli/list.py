"""`dard list`: the registered models, datasets, attacks and methods, the suite labels, experiments and configs."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "list registered models, datasets, attacks and methods"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dard list` takes no options of its own."""


def run(args: argparse.Namespace) -> int:
    """Print one line per kind of name."""
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
    from dard.evaluation.labels import DEFAULT_SUITE

    print(f"suite labels (dard eval --attacks, eval.attacks): {', '.join(DEFAULT_SUITE)}")
    from dard.experiment import list_experiments
    from dard.packaged import list_configs

    print("experiments: " + ", ".join(f"{n} ({'/'.join(scales)})" for n, scales in list_experiments().items()))
    print("configs: " + ", ".join(list_configs()))
    return 0
