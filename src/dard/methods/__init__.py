"""Training methods (losses): ``create_method(name, **params) -> Method``; ``method(student, teacher, x, y)``.

Registered: natural, sat (Madry PGD-AT), trades, ard, rslad, adaad, dard, pgdard. See each module's docstring for its
source paper and every deviation from it.
"""

from __future__ import annotations

import inspect
from typing import Any

from dard.errors import DardError
from dard.registry import Registry

METHODS: Registry[type] = Registry("method")
register_method = METHODS.register

from dard.methods import adaad, ard, dard, natural, pgdard, rslad, sat, trades  # noqa: E402,F401
from dard.methods.base import LossOutput, Method, eval_mode  # noqa: E402
from dard.methods.losses import kl_batchmean, soft_targets  # noqa: E402


def method_params(name: str) -> list[str]:
    """The parameter names ``create_method(name, ...)`` accepts."""
    cls = METHODS.get(name)
    sig = inspect.signature(cls.__init__)
    return [
        p.name
        for p in sig.parameters.values()
        if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def create_method(name: str, **params: Any) -> Method:
    """Build the method registered as ``name``; unknown names, unknown parameters and bad values raise DardError."""
    cls = METHODS.get(name)
    valid = method_params(name)
    for key in params:
        if key not in valid:
            listed = ", ".join(valid) if valid else "none"
            raise DardError(f"method '{name}' has no parameter '{key}'; valid: {listed}")
    return cls(**params)


def list_methods() -> list[str]:
    """Sorted names of the registered methods."""
    return METHODS.names()


__all__ = [
    "METHODS",
    "LossOutput",
    "Method",
    "create_method",
    "eval_mode",
    "kl_batchmean",
    "list_methods",
    "method_params",
    "register_method",
    "soft_targets",
]
