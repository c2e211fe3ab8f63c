"""timm models as dard models: ``timm:<name>`` (the optional extra ``dard[timm]``).

``create_model("timm:vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4)`` builds the timm model
``vit_tiny_patch16_224`` with ``num_classes`` and ``in_chans`` from the dataset and every other keyword argument
(a config's ``model.kwargs``) passed to ``timm.create_model``. The model is untrained: timm's own weight download
(``pretrained``, ``checkpoint_path``) is refused, because dard loads external weights only through its weights-only
reader (``--weights`` / ``teacher.weights``). ``create_model`` wraps the result in a
:class:`~dard.models.PlainClassifier`, so the dataset's normalisation sits inside it as for the built-in
architectures, and :func:`dard.models.cost.macs_per_image` counts its linear layers and attention products.

Example config (``configs/cifar10/dard_vit_tiny.yaml``)::

    model: {arch: "timm:vit_tiny_patch16_224", kwargs: {img_size: 32, patch_size: 4}}
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from dard.errors import DardError, one_line

__all__ = ["check_kwargs_used", "import_timm", "timm_factory"]

#: timm arguments that fetch or read weights (pickled files among them) outside dard's weights-only loader
_REFUSED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")
_INSTALL = "pip install 'dard[timm]'"
#: timm.create_model's own arguments (layer configuration, download cache), which no model class names
_CREATE_MODEL_OWN = ("scriptable", "exportable", "no_jit", "cache_dir")


def import_timm(what: str) -> Any:
    """The ``timm`` module, or a one-line DardError saying how to install it (or why importing it failed)."""
    try:
        import timm
    except ModuleNotFoundError as exc:
        if exc.name not in (None, "timm"):  # timm is there, a dependency of it is not
            raise DardError(f"{what}: importing timm failed ({one_line(exc, 160)}); {_INSTALL}") from None
        raise DardError(f"{what} needs the timm package: {_INSTALL}") from None
    except Exception as exc:  # e.g. a torchvision build that does not match the installed torch
        reason = f"{type(exc).__name__}: {one_line(exc, 160)}"
        raise DardError(f"{what}: importing timm failed ({reason}); torch, torchvision and timm must match") from None
    return timm


def timm_factory(name: str) -> Callable[..., nn.Module]:
    """The factory of timm model ``name``: ``(num_classes, in_channels, **kwargs) -> nn.Module``.

    An unknown name is a one-line DardError with the closest timm names; so is a missing timm.
    """
    what = f"model 'timm:{name}'"
    timm = import_timm(what)
    if not name or not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (timm.list_models() lists them)"
        raise DardError(f"{what}: timm has no model '{name}'{hint}")

    def build(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
        refused = sorted(set(kwargs) & set(_REFUSED))
        if refused:
            raise DardError(
                f"{what}: {', '.join(refused)} is not supported; load trained weights weights-only with --weights "
                "(dard eval) or teacher.weights"
            )
        try:
            return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
        except (DardError, KeyboardInterrupt):
            raise
        except Exception as exc:  # an argument the model class does not take, or a value it refuses (the user's)
            reason = one_line(exc, 200) if isinstance(exc, TypeError) else f"{type(exc).__name__}: {one_line(exc, 200)}"
            raise DardError(f"{what}: {reason}{' (model.kwargs)' if kwargs else ''}") from None

    build.__name__ = build.__qualname__ = f"timm_{name}"
    return build


def check_kwargs_used(name: str, kwargs: Mapping[str, Any], build: Callable[[Mapping[str, Any]], nn.Module]) -> None:
    """A DardError for a keyword of ``kwargs`` that timm model ``name`` drops in silence: one set to None (which
    ``timm.create_model`` prunes), or one its class's ``__init__`` (or a base class's) does not name but takes
    into ``**kwargs``, where building without it gives the same model (modules, their settings, and weights drawn
    from one seed). ``build(kwargs)`` builds the model; a keyword that was used, named or passed on to the layers
    (MaxxVit's config overlay) changes the model and passes (at its default value too, where another value changes
    the model: :func:`_read_at_another_value`), as does any keyword of a class without ``**kwargs``
    (timm's builder took it, or the class would have refused it)."""
    with torch.random.fork_rng(devices=[]):
        cls = type(build(kwargs))
        named, swallows = _init_names(cls)
        suspects = [k for k, v in kwargs.items() if v is None or (swallows and k not in named)]
        suspects = [k for k in suspects if k not in _CREATE_MODEL_OWN]
        if not suspects:
            return
        torch.manual_seed(0)
        full = build(kwargs)
        for key in suspects:
            torch.manual_seed(0)
            if _same(full, build({k: v for k, v in kwargs.items() if k != key})) and not _read(
                build, kwargs, key, full
            ):
                why = (
                    "timm drops keyword arguments set to null (the model's default is used)"
                    if kwargs[key] is None
                    else f"timm's {cls.__name__} takes keywords it does not name into **kwargs, and without this one "
                    "it builds the same model"
                )
                close = difflib.get_close_matches(key, sorted(named), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; drop it ({cls.__name__} names its own)"
                raise DardError(f"model 'timm:{name}': {key}={kwargs[key]!r} changes nothing in the model: {why}{hint}")


def _read(
    build: Callable[[Mapping[str, Any]], nn.Module], kwargs: Mapping[str, Any], key: str, full: nn.Module
) -> bool:
    """Whether keyword ``key``, which changes nothing at its value, is read at another (a bool flipped, a number
    plus 1, a text with a character added): one passed on and set to its default, which the user did nothing wrong
    to write out (``bias: true`` for the layers of a MaxxVit), builds the same model as one dropped."""
    value = kwargs[key]
    if isinstance(value, bool):
        other: Any = not value
    elif isinstance(value, int | float):
        other = value + 1
    elif isinstance(value, str):
        other = value + "_"
    else:  # null (timm prunes it) or a list or mapping: no other value to try
        return False
    torch.manual_seed(0)
    try:
        return not _same(full, build({**kwargs, key: other}))
    except DardError:  # the model refused the other value: it reads the keyword
        return True


def _init_names(cls: type) -> tuple[set[str], bool]:
    """The keyword names the ``__init__`` of ``cls`` and its base classes take, and whether any takes ``**kwargs``."""
    named: set[str] = set()
    swallows = False
    for base in cls.__mro__:
        if base in (object, nn.Module) or "__init__" not in vars(base):
            continue
        try:
            params = inspect.signature(vars(base)["__init__"]).parameters.values()
        except (TypeError, ValueError):
            continue
        named |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        swallows = swallows or any(p.kind is p.VAR_KEYWORD for p in params)
    return named, swallows


def _same(a: nn.Module, b: nn.Module) -> bool:
    """Whether two models are one: each module's name, class and public settings, and every weight, bit for bit."""
    if _settings(a) != _settings(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def _settings(model: nn.Module) -> list[Any]:
    return [
        (path, type(m).__qualname__, sorted((k, _plain(v)) for k, v in vars(m).items() if not k.startswith("_")))
        for path, m in model.named_modules()
    ]


def _plain(value: Any) -> Any:
    """``value`` as plain data to compare: no object addresses (a layer class or a partial of one by its name)."""
    if isinstance(value, (bool, int, str, type(None))):
        return value
    if isinstance(value, float):
        return repr(value)  # nan equals nan
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _plain(v)) for k, v in value.items()))
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape))
    if isinstance(value, functools.partial):
        return ("partial", _plain(value.func), _plain(value.args), _plain(value.keywords))
    if isinstance(value, type) or callable(value):
        return (getattr(value, "__module__", None), getattr(value, "__qualname__", type(value).__qualname__))
    return type(value).__qualname__
