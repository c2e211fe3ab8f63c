"""Where the user's own code lives: the modules dard imported because a ``module:function`` name asked for them.

A failure inside that code (a model whose forward breaks on a batch larger than dard's checks probed) is bad input,
not a dard bug; :mod:`dard.crash` uses these roots, and dard's calls of a model the user brought (a module built of
library layers alone has no file of the user's), to tell the two apart. A leaf module: it imports nothing of dard's.

The warnings that code raises while it is imported and its factory runs are held (:func:`user_warnings`,
:func:`warnings_held`): if loading the model then fails, the command's one error line is all stderr gets.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import CodeType, ModuleType

_entries: set[CodeType] = set()  # dard's functions that call a model the user brought (PlainClassifier.forward)
_roots: set[str] = set()  # real paths: a module's file, or its top-level package's folder (with a trailing separator)
_held: list[warnings.WarningMessage] | None = None  # the user's warnings waiting, while warnings_held runs


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


@contextmanager
def user_warnings() -> Iterator[None]:
    """Run the user's code (a module's import, a factory) with its Python warnings recorded: dropped if it raises
    (a DardError line follows), else held where :func:`warnings_held` runs, shown at once where not."""
    with warnings.catch_warnings(record=True) as caught:
        yield
    if _held is not None:
        _held.extend(caught)
    else:
        _show(caught)


@contextmanager
def warnings_held() -> Iterator[None]:
    """Hold the user's warnings (:func:`user_warnings`) while the block runs: shown by :func:`release_warnings` (the
    models are loaded and checked) or when the block ends, dropped when it raises, so that a model that fails to
    load gives the one error line alone. An inner call leaves the decision to the outer one."""
    global _held
    if _held is not None:
        yield
        return
    _held = []
    try:
        yield
        release_warnings()
    finally:
        _held = None


def release_warnings() -> None:
    """Show the warnings :func:`warnings_held` holds (the user's code loaded its model: they may matter)."""
    if _held:
        _show(list(_held))
        _held.clear()


def _show(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:  # through the filters again, as if raised now (an `error` filter raised them already)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
