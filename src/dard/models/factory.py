"""What a model name means: a registered architecture, or user code given as ``module:function``.

:func:`model_factory` is the one resolver (``create_model``, checkpoints, ``dard train``/``dard eval`` all reach it);
:func:`build_from_factory` calls a factory with the arguments it takes and checks that it returned a module.
Importing user code is what a ``module:function`` name asks for; a checkpoint naming one is rebuilt only when the
caller names it too (:mod:`dard.checkpoint`), so loading a file never imports code by itself.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from dard.errors import DardError, one_line

__all__ = ["build_from_factory", "is_import_spec", "model_factory"]

_REASON_CHARS = 160  # an import error's text is cut to this many characters in a message
_OFFERED = ("num_classes", "in_channels")  # what a factory may take, by keyword


def is_import_spec(name: object) -> bool:
    """Whether ``name`` names user code (``module:function``) rather than a registered architecture."""
    return isinstance(name, str) and ":" in name


def model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory ``name`` means: the registered one, or ``function`` imported from ``module`` for a
    ``module:function`` name (the current folder is searched last, as for ``python -m``).

    An unknown name, a module that cannot be imported, a missing attribute or one that is not callable is a
    one-line :class:`DardError`.
    """
    if not isinstance(name, str):
        raise DardError(f"a model name must be a string, got {type(name).__name__}")
    if not is_import_spec(name):
        from dard.models import MODELS

        return MODELS.get(name)
    module_name, _, attr = name.partition(":")
    if not module_name or not attr or ":" in attr:
        raise DardError(f"model '{name}': expected a registered name or module:function, e.g. mypkg.nets:make_net")
    module = _import(module_name, name)
    obj: Any = module
    for part in attr.split("."):  # module:Class.method works too
        if not hasattr(obj, part):
            raise DardError(f"model '{name}': module '{module_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise DardError(f"model '{name}': '{attr}' is a {type(obj).__name__}, not a function returning an nn.Module")
    return obj


def _import(module_name: str, name: str) -> Any:
    cwd = os.getcwd()
    if "" not in sys.path and cwd not in sys.path:  # the `dard` script's path lacks the current folder
        sys.path.append(cwd)  # appended: an installed package of the same name wins, as it would anyway
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        parts = module_name.split(".")
        if exc.name not in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise _import_failed(name, module_name, exc) from None  # a dependency of the module is missing
        raise DardError(
            f"model '{name}': cannot import module '{module_name}' ({one_line(exc, _REASON_CHARS)}); "
            "run from the folder that holds it, set PYTHONPATH, or install it"
        ) from None
    except (Exception, SystemExit) as exc:  # the module failed while importing (syntax error, its imports, exit())
        raise _import_failed(name, module_name, exc) from None


def _import_failed(name: str, module_name: str, exc: BaseException) -> DardError:
    reason = f"{type(exc).__name__}: {one_line(exc, _REASON_CHARS)}"
    return DardError(f"model '{name}': importing module '{module_name}' failed ({reason})")


def build_from_factory(factory: Callable[..., Any], name: str, num_classes: int, in_channels: int) -> nn.Module:
    """Call ``factory`` with those of ``num_classes`` / ``in_channels`` it takes (both if it takes ``**kwargs``).

    A factory needing any other argument, or returning something other than an ``nn.Module``, is a DardError. An
    exception raised inside a user's factory (``module:function``; SystemExit included, which must not end dard as
    if it had finished) is a DardError naming the factory and the error; one in a registered factory is dard's own.
    """
    offered = {"num_classes": num_classes, "in_channels": in_channels}
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature (some builtins): offer both
        params = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        kwargs = offered
    else:
        kwargs = {p.name: offered[p.name] for p in params if p.name in offered and p.kind is not p.POSITIONAL_ONLY}
    needed = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    needed = [n for n in needed if n not in kwargs]
    if needed:
        raise DardError(
            f"model '{name}': its factory needs {', '.join(map(repr, needed))}; a model factory may take only "
            f"{' and '.join(_OFFERED)} (keywords, both optional)"
        )
    if is_import_spec(name):
        try:
            model = factory(**kwargs)
        except (DardError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # the user's code, not dard: say whose error it is
            raise DardError(
                f"model '{name}': the user's factory raised {type(exc).__name__}: {one_line(exc, _REASON_CHARS)}"
            ) from None
    else:
        model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise DardError(f"model '{name}': the factory returned a {type(model).__name__}, not an nn.Module")
    return model
