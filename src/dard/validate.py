"""Parameter validation shared by attacks and methods: each check returns the value or raises a one-line DardError.

Every message starts with ``owner`` (an attack's name such as ``pgd``, or ``method 'dard'``) and names the
parameter, e.g. ``pgd: eps must be in [0, 1], got 2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeVar, get_origin

from pydantic import BaseModel

from dard.errors import DardError, shown

__all__ = [
    "MAX_ITERATIONS",
    "MIN_BUDGET",
    "check_bool",
    "check_budget",
    "check_choice",
    "check_float",
    "check_int",
    "check_plain_data",
    "check_seed",
    "without_empty_sections",
]

C = TypeVar("C")


def check_float(
    name: str,
    value: Any,
    *,
    owner: str,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float:
    """``value`` as a float, or a DardError unless it is a finite number in [lo, hi] (``(lo, hi]`` if ``lo_open``)."""
    # bool is an int subclass; `eps=True` is a config mistake, not 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DardError(f"{owner}: {name} must be a number, got {shown(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise DardError(f"{owner}: {name} must be finite, got {shown(value)}")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    if below or (hi is not None and value > hi):
        raise DardError(f"{owner}: {name} must be {_range(lo, hi, lo_open)}, got {value:g}")
    return value


#: the least budget above 0 (eps, an attack's step): images are float32 in [0, 1], 6e-8 apart just below 1, so a
#: smaller one moves a pixel by a few roundings at most; eps 1e-300 was 0 in float32, an attack (and a training
#: against it) that did nothing while the run recorded its eps
MIN_BUDGET = 1e-6


def check_budget(name: str, value: Any, *, owner: str) -> float:
    """``value`` as a float that is 0 or in [:data:`MIN_BUDGET`, 1] (an eps or a step on [0, 1] images), else a
    one-line DardError naming ``owner``'s ``name``."""
    value = check_float(name, value, lo=0.0, hi=1.0, owner=owner)
    if 0 < value < MIN_BUDGET:
        raise DardError(f"{owner}: {name} must be 0 or in [{MIN_BUDGET:g}, 1], got {value:g}")
    return value


def _range(lo: float | None, hi: float | None, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {lo:g}"
    return f"<= {hi:g}"


#: the most iterations an attack takes (steps, restarts, queries, EOT draws, each): far above any real attack
#: (AutoAttack's Square: 5,000 queries; PGD-1,000 evaluations), low enough that a typo is an error, not a run that
#: never ends (`steps: 100000000000` started training)
MAX_ITERATIONS = 100_000


def check_int(name: str, value: Any, *, owner: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int, or a DardError unless it is an integer in [``lo``, ``hi``]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DardError(f"{owner}: {name} must be an integer, got {shown(value)}")
    if lo is not None and value < lo:
        raise DardError(f"{owner}: {name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise DardError(f"{owner}: {name} must be <= {hi:,}, got {shown(value)}")
    return int(value)


def check_bool(name: str, value: Any, *, owner: str) -> bool:
    """``value`` if it is a bool, else a DardError."""
    if not isinstance(value, bool):
        raise DardError(f"{owner}: {name} must be true or false, got {shown(value)}")
    return value


def check_choice(name: str, value: C, choices: Sequence[C], *, owner: str) -> C:
    """``value`` if it is one of ``choices``, else a DardError listing them."""
    if value not in choices:
        raise DardError(f"{owner}: {name} must be one of {', '.join(map(str, choices))}; got {shown(value)}")
    return value


def check_seed(value: Any, *, owner: str) -> int | None:
    """A seed is None (draw from the global RNG stream) or a non-negative integer."""
    if value is None:
        return None
    return check_int("seed", value, owner=owner, lo=0)


def distinct(values: list[Any]) -> list[Any]:
    """``values``, or a ValueError naming the one given twice (a config's lists: a second `pgd20`, eps or checkpoint
    would run the same evaluation again, for hours, and its record keep one of them)."""
    seen: set[Any] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value} is listed twice")
        seen.add(value)
    return values


def check_plain_data(value: Any, where: str = "") -> Any:
    """``value`` if it is plain data, what a run records as JSON (its config, run.json, checkpoints): text, finite
    numbers, true/false, null, and lists (or tuples) and string-keyed mappings of them, with no list or mapping
    inside itself; else a DardError naming the item at fault by its path below ``where``. A config's free-form
    sections (``model.kwargs``, ``method.params``, ``val.attack``) hold what YAML reads, and YAML also reads dates,
    sets, bytes and self-referring aliases (``2020-01-01``, ``!!set``, ``!!binary``, ``&a [*a]``), which failed only
    when the run wrote its records. A list or mapping shared through aliases is checked once, so a chain of aliases
    that expands to billions of items takes as long as its text."""
    _check_plain(value, where, checked=set(), open_=set())
    return value


def _check_plain(value: Any, where: str, checked: set[int], open_: set[int]) -> None:
    at = f"{where}: " if where else ""
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DardError(f"{at}a number must be finite, got {value}")
        return
    if not isinstance(value, (list, tuple, dict)):
        raise DardError(
            f"{at}must be plain data (text, numbers, true/false, null, lists, mappings), got a "
            f"{type(value).__name__}: {shown(value)}"
        )
    if id(value) in open_:
        raise DardError(f"{at}a list or mapping inside itself (a YAML alias to its own anchor)")
    if id(value) in checked:
        return
    open_.add(id(value))
    if isinstance(value, dict):
        bad = next((k for k in value if not isinstance(k, str)), None)
        if bad is not None:
            raise DardError(f"{at}keys must be strings, got {shown(bad)}")
        for k, v in value.items():
            _check_plain(v, f"{where}.{k}" if where else k, checked, open_)
    else:
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]", checked, open_)
    open_.discard(id(value))
    checked.add(id(value))


def without_empty_sections(model: type[BaseModel], data: Any) -> Any:
    """``data`` (a mapping about to be validated as ``model``) less the sections given as null. YAML reads a section
    whose keys are all commented out (``optim:`` alone on its line) as null: the user meant an empty section, which
    takes its defaults, not a type error. A section is a field holding a model or a mapping; a null anywhere else
    (``dir: null``) is a value and stays."""
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if v is not None or not _is_section(model, k)}


def _is_section(model: type[BaseModel], key: Any) -> bool:
    field = model.model_fields.get(key) if isinstance(key, str) else None
    ann = field.annotation if field is not None else None
    return (isinstance(ann, type) and issubclass(ann, BaseModel)) or get_origin(ann) is dict
