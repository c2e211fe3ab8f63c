"""Training methods (losses): ``create_method(name, **params) -> Method``; ``method(student, teacher, x, y)``.

Registered: natural, sat (Madry PGD-AT), trades, ard, rslad, adaad, dard, pgdard. See each module's docstring for its
source paper and every deviation from it.
"""

from __future__ import annotations

from typing import Any

from dard.errors import DardError

# each module registers its method on import (dard.registry)
from dard.methods import adaad, ard, dard, natural, pgdard, rslad, sat, trades  # noqa: F401
from dard.methods.base import LossOutput, Method
from dard.methods.losses import kl_batchmean, soft_targets
from dard.registry import METHODS, register_method


def method_params(name: str) -> list[str]:
    """The parameter names ``create_method(name, ...)`` accepts."""
    return METHODS.params(name)


def create_method(name: str, **params: Any) -> Method:
    """Build the method registered as ``name``; unknown names, unknown parameters and bad values raise DardError."""
    if "attack_mode" in params and name in METHODS and "attack_mode" not in METHODS.params(name):
        offered = [m for m in METHODS.names() if "attack_mode" in METHODS.params(m)]
        raise DardError(
            f"method '{name}' has no parameter 'attack_mode': the train-mode training attack is offered only for "
            f"{', '.join(offered)}, whose official code crafts its attack in train mode (docs/baselines.md)"
        )
    return METHODS.create(name, **params)


def list_methods() -> list[str]:
    """Sorted names of the registered methods."""
    return METHODS.names()


__all__ = [
    "METHODS",
    "LossOutput",
    "Method",
    "create_method",
    "kl_batchmean",
    "list_methods",
    "method_params",
    "register_method",
    "soft_targets",
]
