"""The checks every command's options get before any work: paths a file system takes, numbers in range."""

from __future__ import annotations

import argparse
import math

from dard.errors import DardError

__all__ = ["check_args", "check_launch"]

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


def check_args(args: argparse.Namespace) -> None:
    """Paths a file system can take (UTF-8, names of at most 255 bytes) and numbers in range, before any work."""
    from dard.names import check_path

    for key in (*_PATH_ARGS, "sources", "overrides", "name"):
        values = getattr(args, key, None)
        for value in values if isinstance(values, list) else [values]:
            if isinstance(value, str):
                what = "a run folder argument" if key == "sources" else f"--{key.replace('_', '-')}"
                is_path = key not in ("overrides", "name")
                if not value and is_path:  # '' is the current folder to the OS
                    raise DardError(f"{what} is empty; give a path (an unset shell variable?)")
                check_path(value, what, components=is_path)
    for key, (least, most) in _NUMBER_ARGS.items():
        value = getattr(args, key, None)
        if value is not None and not (math.isfinite(value) and least <= value <= most):
            raise DardError(f"--{key.replace('_', '-')} must be a number from {least} to {most}; got {value}")


def check_launch(command: str) -> None:
    """Only `dard train` runs as one of torchrun's processes (:mod:`dard.training.distributed`): any other command
    ran once per process, each writing the same report, archive or evaluation record."""
    from dard.training.distributed import from_environment

    info = from_environment()
    if info.enabled and command != "train":
        raise DardError(
            f"dard {command} runs in one process, and torchrun started {info.world_size} (WORLD_SIZE): each would "
            f"do all of its work and write the same files; run dard {command} without torchrun (dard train alone "
            "shares its work among processes)"
        )
