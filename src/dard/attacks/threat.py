"""The threat model's norm applied to an attack spec: one norm for the training attack, validation and evaluation.

A run sets ``norm`` once (``linf`` or ``l2``); every attack spec built for it goes through :func:`apply_norm`, which
gives the norm to attacks that take one and refuses, in one line, an attack fixed to another norm (``cw``: Linf
only) or a spec that names another norm itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from dard.attacks.base import attack_norms, check_norm
from dard.errors import DardError, shown
from dard.registry import ATTACKS, param_names

__all__ = ["EPS_TOL", "NORM_NAMES", "apply_norm", "budget_text"]

#: how a norm is written for people (and AutoAttack)
NORM_NAMES = {"linf": "Linf", "l2": "L2"}
#: two eps closer than this are one (a budget read back from JSON, 8/255 computed two ways)
EPS_TOL = 1e-6


def apply_norm(spec: Mapping[str, Any], norm: str) -> dict[str, Any]:
    """``spec`` (``{"name": ..., **params}``) with the threat model's ``norm``; a one-line DardError for an attack
    that cannot run in it or a spec that names another norm."""
    norm = check_norm(norm, owner="threat model")
    name = spec.get("name")
    cls = ATTACKS.get(cast(str, name))  # no name: Registry.get's unknown-name error
    given = spec.get("norm")
    if given is not None and (not isinstance(given, str) or given.lower() != norm):
        raise DardError(
            f"attack '{name}' is set to norm {shown(given)}, but the threat model is {NORM_NAMES[norm]}: one norm "
            f"governs every attack, set it at the top of the config instead (--set norm={given}; dard eval --norm)"
        )
    allowed = attack_norms(cls)
    if norm not in allowed:
        raise DardError(f"attack '{name}' is {NORM_NAMES[allowed[0]]} only, but the threat model is {NORM_NAMES[norm]}")
    return {**spec, "norm": norm} if "norm" in param_names(cls) else dict(spec)


def budget_text(size: float, norm: str, *, levels: str = ".4g", named: bool = False) -> str:
    """A budget or perturbation size as people read it: Linf in pixel levels (``8/255``, ``levels`` its format), L2
    as the plain norm of [0, 1] pixels (``0.5``; ``0.5 (L2)`` when ``named``): an L2 radius in /255 (``127.5/255``)
    meant nothing."""
    if str(norm).lower() == "l2":
        return f"{size:.4g}" + (" (L2)" if named else "")
    return f"{size * 255:{levels}}/255"
