"""What a model name means: a registered architecture, a model of another library (``timm:<name>``,
``robustbench:<name>``), or user code given as ``module:function``.

:func:`model_factory` is the one resolver (``create_model``, checkpoints, ``dard train``/``dard eval`` all reach it);
:func:`build_from_factory` calls a factory with the arguments it takes and checks that it returned a module.
Importing user code is what a ``module:function`` name asks for; a checkpoint naming one is rebuilt only when the
caller names it too (:mod:`dard.checkpoint`), so loading a file never imports code by itself. The library prefixes
are not user code: they import an installed package (``dard[timm]``, ``dard[robustbench]``) and build one of its
models by name (:mod:`dard.models.timm_models`, :mod:`dard.models.robustbench`).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from dard.errors import DardError, one_line
from dard.models.user_state import torch_settings_kept
from dard.registry import MODELS
from dard.user_code import note_user_module, user_warnings

__all__ = [
    "LIBRARY_PREFIXES",
    "RESERVED_KWARGS",
    "build_from_factory",
    "check_factory_kwargs",
    "check_materialised",
    "check_model_kwargs",
    "is_import_spec",
    "library_prefix",
    "model_factory",
]

_REASON_CHARS = 160  # an import error's text is cut to this many characters in a message
_OFFERED = ("num_classes", "in_channels")  # what a factory may take, by keyword
# create_model's own arguments, which a model's kwargs cannot set: where each comes from
_RESERVED = {
    "num_classes": "num_classes comes from the dataset",
    "in_channels": "in_channels comes from the dataset",
    "mean": "the normalisation comes from the dataset (model.normalize)",
    "std": "the normalisation comes from the dataset (model.normalize)",
    "name": "the name comes from model.arch",
}
#: the keys a model's kwargs cannot set
RESERVED_KWARGS = frozenset(_RESERVED)
# every module a factory returned, so that one returned twice is caught (weak: a model dropped is forgotten)
_BUILT: weakref.WeakSet[nn.Module] = weakref.WeakSet()
#: model names of other libraries: ``<prefix><the library's own model name>``
LIBRARY_PREFIXES = ("timm:", "robustbench:")


def library_prefix(name: object) -> str | None:
    """The library prefix ``name`` starts with (``"timm:"``, ``"robustbench:"``), or None."""
    if not isinstance(name, str):
        return None
    return next((p for p in LIBRARY_PREFIXES if name.startswith(p)), None)


def is_import_spec(name: object) -> bool:
    """Whether ``name`` names user code (``module:function``) rather than a registered architecture or a model
    of a supported library (``timm:<name>``, ``robustbench:<name>``)."""
    return isinstance(name, str) and ":" in name and library_prefix(name) is None


def model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory ``name`` means: the registered one, or ``function`` imported from ``module`` for a
    ``module:function`` name (the current folder is searched last, as for ``python -m``).

    An unknown name, a module that cannot be imported, a missing attribute or one that is not callable is a
    one-line :class:`DardError`.
    """
    if not isinstance(name, str):
        raise DardError(f"a model name must be a string, got {type(name).__name__}")
    prefix = library_prefix(name)
    if prefix == "timm:":
        from dard.models.timm_models import timm_factory

        return timm_factory(name[len(prefix) :])
    if prefix == "robustbench:":
        from dard.models.robustbench import robustbench_factory

        return robustbench_factory(name[len(prefix) :])
    if not is_import_spec(name):
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
        with torch_settings_kept(), user_warnings():  # its top level runs in dard's process
            module = importlib.import_module(module_name)
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
    note_user_module(module)  # a failure in it later is the user's code failing, not dard (dard.crash)
    return module


def _import_failed(name: str, module_name: str, exc: BaseException) -> DardError:
    reason = f"{type(exc).__name__}: {one_line(exc, _REASON_CHARS)}"
    return DardError(f"model '{name}': importing module '{module_name}' failed ({reason})")


def check_model_kwargs(kwargs: Mapping[str, Any], name: str | None = None) -> Mapping[str, Any]:
    """A DardError (naming model ``name`` if given) if a model's factory kwargs (a config's ``model.kwargs``, a
    checkpoint's) set what dard sets itself: the class and channel counts (the dataset's), the normalisation
    (``model.normalize``) or the name. ``create_model`` takes those as its own arguments, so such a key would reach
    Python as a TypeError. Returns ``kwargs``."""
    clash = sorted(k for k in kwargs if k in _RESERVED)
    if clash:
        where = f"model '{name}': " if name is not None else ""
        raise DardError(f"{where}{_RESERVED[clash[0]]}, not from the model's kwargs ({', '.join(clash)})")
    return kwargs


def check_factory_kwargs(name: str, kwargs: Mapping[str, Any] | None) -> None:
    """Model ``name``'s factory takes every one of ``kwargs`` (a config's ``model.kwargs`` or ``teacher.kwargs``)
    and needs no argument dard cannot give, checked by its signature without building it: a misspelt key was
    found when the model was built, after the data had loaded (a CIFAR load, a download). A ``timm:`` factory takes
    any keyword (``timm.create_model`` hands them to the model's class), so one with ``kwargs`` is built here, the
    global RNG untouched: building is cheap, a misspelt key or a value the model refuses is its error, and a key
    its class takes into ``**kwargs`` and drops is refused (:func:`dard.models.timm_models.check_kwargs_used`)."""
    factory = model_factory(name)
    _factory_call(factory, name, dict.fromkeys(_OFFERED, 0), kwargs)
    if kwargs and library_prefix(name) == "timm:":
        from dard.models.timm_models import check_kwargs_used

        check_kwargs_used(name[len("timm:") :], kwargs, lambda kw: build_from_factory(factory, name, 10, 3, kw))


def _factory_call(
    factory: Callable[..., Any], name: str, offered: Mapping[str, Any], kwargs: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The keyword arguments to call ``factory`` with: those of ``offered`` it takes (all if it takes
    ``**kwargs``) and every one of ``kwargs``; a DardError for a key it does not take or an argument it needs."""
    extra = dict(kwargs or {})
    check_model_kwargs(extra, name)
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # no introspectable signature (some builtins): offer both
        params = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    named = {p.name for p in params if p.kind is not p.POSITIONAL_ONLY}
    if takes_any:
        call = dict(offered)
    else:
        call = {k: v for k, v in offered.items() if k in named}
        unknown = sorted(set(extra) - named)
        if unknown:
            raise DardError(f"model '{name}': its factory takes no argument {', '.join(map(repr, unknown))}")
    call.update(extra)
    needed = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    needed = [n for n in needed if n not in call]
    if needed:
        raise DardError(
            f"model '{name}': its factory needs {', '.join(map(repr, needed))}; a model factory may take only "
            f"{' and '.join(_OFFERED)} (keywords, both optional) and the config's model.kwargs"
        )
    return call


def build_from_factory(
    factory: Callable[..., Any],
    name: str,
    num_classes: int,
    in_channels: int,
    kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Call ``factory`` with those of ``num_classes`` / ``in_channels`` it takes (both if it takes ``**kwargs``),
    and every one of ``kwargs`` (a config's ``model.kwargs``: ``img_size``, ``patch_size``, ...).

    A factory needing any other argument, or returning something other than an ``nn.Module``, is a DardError. An
    exception raised inside a user's factory (``module:function``; SystemExit included, which must not end dard as
    if it had finished) is a DardError naming the factory and the error; one in a registered factory is dard's own.
    """
    call = _factory_call(factory, name, {"num_classes": num_classes, "in_channels": in_channels}, kwargs)
    if is_import_spec(name):
        try:
            with torch_settings_kept(), user_warnings():
                model = factory(**call)
        except (DardError, KeyboardInterrupt):
            raise
        except BaseException as exc:  # the user's code, not dard: say whose error it is
            raise DardError(
                f"model '{name}': the user's factory raised {type(exc).__name__}: {one_line(exc, _REASON_CHARS)}"
            ) from None
    elif library_prefix(name):
        with user_warnings():  # a library's (timm's) deprecations: the user's model, not dard's
            model = factory(**call)
    else:
        model = factory(**call)
    if not isinstance(model, nn.Module):
        raise DardError(f"model '{name}': the factory returned a {type(model).__name__}, not an nn.Module")
    if model in _BUILT:  # one module as student and teacher, or as every run's student: trained over, frozen
        raise DardError(
            f"model '{name}': the factory returned a module it had returned before (one shared instance); the "
            "student, the teacher and each run need their own: build a new module in each call"
        )
    _BUILT.add(model)
    check_materialised(model, f"model '{name}': the factory returned")
    return model


def check_materialised(model: nn.Module, what: str) -> None:
    """A DardError (``what`` first, e.g. "model 'x': the factory returned") if ``model`` has a tensor with no data
    yet: an uninitialised lazy parameter (``nn.LazyLinear``) or one on the ``meta`` device, or whose parameters
    mix floating dtypes (one fp64 layer among fp32 ones). A factory's model and a model instance given to
    ``create_model`` are checked alike."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    lazy = next((k for k, t in tensors if is_lazy(t)), None)
    if lazy is not None:  # a fresh copy to load a checkpoint into has no shapes yet: the run crashed once trained
        raise DardError(
            f"{what} a model with uninitialised lazy parameters (tensor '{lazy}', e.g. nn.LazyLinear); give their "
            "sizes (nn.Linear(in, out)), so that its weights can be saved and loaded"
        )
    dtypes: dict[torch.dtype, str] = {}
    for k, t in model.named_parameters():  # the first parameter of each floating dtype
        if t.is_floating_point():
            dtypes.setdefault(t.dtype, k)
    if len(dtypes) > 1:  # torch's "mat1 and mat2 must have the same dtype", raw, at the first forward
        mixed = ", ".join(f"{str(d).removeprefix('torch.')} ('{k}')" for d, k in dtypes.items())
        raise DardError(
            f"{what} a model whose parameters mix dtypes: {mixed}; give it one (model.float(), or .double())"
        )
    meta = next((k for k, t in tensors if t.is_meta), None)
    if meta is not None:  # no data to move, load into or compute with: torch fails later, deep in a load or a step
        raise DardError(
            f"{what} a model on the meta device (tensor '{meta}' has no data); build it on the CPU (dard moves it "
            "to the run's device)"
        )
