"""Robustness evaluation, the measuring core: the attack suite, the JSON record (EvalRecord), sanity checks, soft
labels, intervals and the text table. The reports are :mod:`dard.report`; `dard eval` is :mod:`dard.cli.eval`.

The names below are imported on first use (module ``__getattr__``, as :mod:`dard` does), so that importing a
torch-free module of this package (:mod:`dard.evaluation.labels`, which the `dard` parser reads) does not import
PyTorch through this ``__init__``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these resolve lazily below
    from dard.evaluation.labels import DEFAULT_SUITE
    from dard.evaluation.suite import EvalRecord, build_suite, evaluate, parse_eps

__all__ = ["DEFAULT_SUITE", "EvalRecord", "build_suite", "evaluate", "parse_eps"]

# public name -> the module that defines it
_LAZY = {
    "DEFAULT_SUITE": "dard.evaluation.labels",
    "EvalRecord": "dard.evaluation.suite",
    "build_suite": "dard.evaluation.suite",
    "evaluate": "dard.evaluation.suite",
    "parse_eps": "dard.evaluation.suite",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dard.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value
