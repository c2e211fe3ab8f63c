"""Files shipped inside the package: run configs (``dard/configs``) and experiment files (``dard/experiments``).

They are package data, so every install (``pip install .``, from a git URL, or editable) carries them and
``dard list`` names them. A run config can be given by its packaged name, e.g. ``cifar10/dard_resnet18``.
"""

from __future__ import annotations

import os
from pathlib import Path

from dard.errors import DardError

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIGS_DIR = PACKAGE_DIR / "configs"
EXPERIMENTS_DIR = PACKAGE_DIR / "experiments"

__all__ = ["CONFIGS_DIR", "EXPERIMENTS_DIR", "find_config", "list_configs"]


def list_configs() -> list[str]:
    """Names of the packaged run configs (``cifar10/dard_resnet18``, ...), sorted."""
    return sorted(p.relative_to(CONFIGS_DIR).with_suffix("").as_posix() for p in CONFIGS_DIR.rglob("*.yaml"))


def find_config(path: str | Path) -> Path:
    """The run config file ``path`` names: the file itself when it exists, else the packaged config of that name.

    A packaged name may carry the source tree's ``configs/`` prefix and the ``.yaml`` suffix, so
    ``configs/cifar10/dard_resnet18.yaml`` (the checkout's path) and ``cifar10/dard_resnet18`` both work anywhere.
    """
    p = Path(path)
    if os.path.lexists(p):  # a FIFO, a folder or a dangling link is the user's, said as what it is when read
        return p
    name = p.as_posix().removeprefix("./").removeprefix("configs/").removesuffix(".yaml")
    known = list_configs()
    if name in known:
        return CONFIGS_DIR / f"{name}.yaml"
    raise DardError(f"config file not found: {p} (nor a packaged config; packaged: {', '.join(known)})")
