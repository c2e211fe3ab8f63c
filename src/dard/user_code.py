"""Where the user's own code lives: the modules dard imported because a ``module:function`` name asked for them.

A failure inside that code (a model whose forward breaks on a batch larger than dard's checks probed) is bad input,
not a dard bug; :mod:`dard.crash` uses these roots, and dard's calls of a model the user brought (a module built of
library layers alone has no file of the user's), to tell the two apart. A leaf module: it imports nothing of dard's.
"""

from __future__ import annotations

import os
import sys
from types import CodeType, ModuleType

_entries: set[CodeType] = set()  # dard's functions that call a model the user brought (PlainClassifier.forward)
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


def note_user_entry(code: CodeType) -> None:
    """Remember that the function of ``code`` (dard's) calls a module the user brought: an exception that arose
    inside that call (in its frames) is the user's model failing, even where those frames are all a library's."""
    _entries.add(code)


def is_user_entry(code: CodeType) -> bool:
    """Whether ``code`` (a traceback frame's) is one :func:`note_user_entry` was told about."""
    return code in _entries
