"""Where the user's own code lives: the modules dard imported because a ``module:function`` name asked for them.

A failure inside that code (a model whose forward breaks on a batch larger than dard's checks probed) is bad input,
not a dard bug; :mod:`dard.crash` uses these roots to tell the two apart. A leaf module: it imports nothing of dard's.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

_roots: set[str] = set()  # real paths: a module's file, or its top-level package's folder (with a trailing separator)


def note_user_module(module: ModuleType) -> None:
    """Remember where ``module`` (imported for a ``module:function`` name) and the package it belongs to live."""
    top = sys.modules.get(module.__name__.split(".")[0], module)
    folders = list(getattr(top, "__path__", None) or [])  # a package: all of it is the user's
    if folders:
        _roots.update(os.path.realpath(f) + os.sep for f in folders)
    elif getattr(module, "__file__", None):
        _roots.add(os.path.realpath(str(module.__file__)))


def is_user_file(filename: str) -> bool:
    """Whether ``filename`` (a traceback frame's) lies in code :func:`note_user_module` was told about."""
    path = os.path.realpath(filename)
    return any(path == root or (root.endswith(os.sep) and path.startswith(root)) for root in _roots)
