"""Step sizes as a fraction of eps: the one resolution of ``step_ratio`` / ``step_size`` in an attack spec.

Training, validation and evaluation attacks are written as specs (``{"name": "pgd", "eps": ..., "steps": 10}``).
An iterative attack's step is ``step_ratio * eps`` unless the spec gives an absolute ``step_size``; with neither,
the ratio is :data:`DEFAULT_STEP_RATIO` (0.25: the field's 2/255 at eps 8/255). So ``eps=0.1`` gives steps of
0.025 and ``steps * step_size`` still reaches the boundary. ``0.25 * fl(8/255) == fl(2/255)`` exactly (a power-of-two
scaling is exact in binary floating point), so runs made with an absolute 2/255 keep bit-identical attacks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, cast

from dard.errors import DardError
from dard.registry import ATTACKS
from dard.registry import signature as cached_signature
from dard.validate import check_budget

__all__ = ["DEFAULT_STEP_RATIO", "check_step", "merge_step", "resolve_step"]

#: step = 0.25 * eps unless a spec says otherwise (2/255 at 8/255, as Madry et al. and the suite use it)
DEFAULT_STEP_RATIO = 0.25


def check_step(step_size: Any, eps: float, *, owner: str) -> float:
    """An iterative attack's step: 0 or in [1e-6, 1], the image's range (as eps: :func:`dard.validate.check_budget`),
    and above 0 when eps is: a step of 0 never
    leaves the start (the attack and a training against it do nothing), and one of 2 is 2/255 in pixel levels (every
    step lands on the ball's corners)."""
    step = check_budget("step_size", step_size, owner=owner)
    if step == 0 and eps > 0:
        raise DardError(f"{owner}: step_size must be above 0 when eps is ({eps:g}); a step of 0 never moves")
    return step


def merge_step(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` (a default spec: a method's training attack, a suite entry) with ``override``'s keys on top; an
    absolute ``step_size`` in ``override`` (and no ``step_ratio``) replaces ``base``'s ratio, so the step given
    wins over the default's fraction of eps."""
    merged = {**base, **override}
    if "step_size" in override and "step_ratio" not in override:
        merged.pop("step_ratio", None)
    return merged


#: the keys of an attack spec in the image's units, which the field writes as fractions of 255 (8/255, 2/255)
_BUDGETS = ("eps", "step_size")


def _fraction(value: Any) -> Any:
    """``"8/255"`` as the float it writes (as the run's ``eps`` takes it); anything else as it is, for the attack's
    own validation to name."""
    if not (isinstance(value, str) and "/" in value and len(value) <= 40):
        return value
    try:
        return float(Fraction(value.strip()))
    except (ValueError, ZeroDivisionError):
        return value


def resolve_step(spec: Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
    """``(params, ratio)``: ``spec`` (``{"name": ..., **params}``) with its step resolved for ``create_attack``, and
    the ratio used (None when the step is absolute or the attack takes no step).

    ``eps`` and ``step_size`` may be fractions (``"8/255"``, as the run's eps); ``step_ratio`` is removed;
    ``step_size`` is set to ``step_ratio * eps`` when absent (eps: the spec's, else the
    attack's default). A spec giving both must agree (as a recorded config does); a ``step_ratio`` for an attack
    without a step size (``fgsm``, ``autoattack``) is an error. Errors are one-line :class:`DardError`\\ s.
    """
    params = {k: _fraction(v) if k in _BUDGETS else v for k, v in spec.items()}
    ratio = params.pop("step_ratio", None)
    name = params.get("name")
    cls = ATTACKS.get(cast(str, name))  # no name: Registry.get's unknown-name error
    signature = cached_signature(cls)
    if "step_size" not in signature.parameters:
        if ratio is not None:
            raise DardError(f"attack '{name}' has no step size, so step_ratio does not apply")
        return params, None
    if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0):
        raise DardError(f"attack '{name}': step_ratio must be a positive number, got {ratio!r}")
    eps = params.get("eps", signature.parameters["eps"].default)
    size = params.get("step_size")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (eps, size or 0.0)):
        return params, None  # a malformed eps or step_size: the attack's own validation names it
    if size is not None:
        if ratio is not None and not math.isclose(float(size), float(ratio) * float(eps), rel_tol=1e-9):
            raise DardError(
                f"attack '{name}': give step_size or step_ratio, not both (step_size {size} is not "
                f"step_ratio {ratio} x eps {eps})"
            )
        return params, None if ratio is None else float(ratio)
    ratio = DEFAULT_STEP_RATIO if ratio is None else float(ratio)
    params["step_size"] = ratio * float(eps)
    return params, ratio
