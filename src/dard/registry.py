"""Name -> object registries, so configs and the CLI can name models, attacks, datasets and methods.

The four registries live here, in a leaf module (it imports nothing of dard's but its errors), and are filled one
way: the module defining a model, method, attack or dataset decorates it with ``@register_model("name")`` (or
``register_method``, ``register_attack``, ``register_dataset``). Each package's ``__init__`` imports its modules,
so importing the package (or any of its modules: Python imports the package first) fills its registry; no module
imports its own package's ``__init__``. timm keeps its model registry the same way.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from dard.errors import DardError, shown

T = TypeVar("T", bound=Callable[..., Any])  # functions and classes: what `register` names

__all__ = [
    "ATTACKS",
    "DATASETS",
    "METHODS",
    "MODELS",
    "Registry",
    "did_you_mean",
    "param_names",
    "register_attack",
    "register_dataset",
    "register_method",
    "register_model",
    "signature",
]

_NAMED = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def signature(factory: Callable[..., Any]) -> inspect.Signature:
    """``inspect.signature(factory)``, computed once per factory: every config read builds its method and attacks
    (:mod:`dard.config.read`), and the signatures were most of that time (~20 ms a config: ``dard report`` and
    ``dard experiment --plan`` read one per run)."""
    try:
        return _signature(factory)
    except TypeError:  # an unhashable callable (a user's object defining __eq__ alone)
        return inspect.signature(factory)


@functools.lru_cache(maxsize=1024)
def _signature(factory: Callable[..., Any]) -> inspect.Signature:
    return inspect.signature(factory)


def param_names(factory: Callable[..., Any]) -> list[str]:
    """The keyword parameters ``factory`` accepts, in signature order (a class: its constructor's, less ``self``)."""
    return [p.name for p in signature(factory).parameters.values() if p.kind in _NAMED]


class Registry(Generic[T]):
    """A case-sensitive mapping from names to factories with clear errors for unknown names and parameters."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` (default: its ``__name__`` lower-cased)."""

        def deco(obj: T) -> T:
            key = name or obj.__name__.lower()
            if key in self._items:
                raise ValueError(f"{self.kind} '{key}' registered twice")
            self._items[key] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names raise a DardError listing valid ones."""
        try:
            return self._items[name]
        except (KeyError, TypeError):  # TypeError: a list or mapping given as the name (`{name: [pgd]}`)
            hint = did_you_mean([name] if isinstance(name, str) else [], self.names())
            raise DardError(f"unknown {self.kind} {shown(name)}{hint}; valid: {', '.join(self.names())}") from None

    def params(self, name: str) -> list[str]:
        """The keyword parameters ``create(name, ...)`` accepts, in signature order."""
        return param_names(self.get(name))

    def create(self, name: str, **params: Any) -> Any:
        """Call the factory registered as ``name`` with keyword ``params``.

        An unknown name, an unknown parameter or a missing required one raises a one-line DardError listing the
        valid ones; the factory validates the values itself. A factory taking ``**kwargs`` accepts any name.
        """
        factory: Any = self.get(name)
        params_of = signature(factory).parameters.values()
        if not any(p.kind is p.VAR_KEYWORD for p in params_of):
            valid = self.params(name)
            unknown = [key for key in params if key not in valid]
            if unknown:
                raise DardError(
                    f"{self.kind} '{name}' has no parameter{'s' if len(unknown) > 1 else ''} {_quoted(unknown)}"
                    f"{did_you_mean(unknown, valid)}; valid: {', '.join(valid) or 'none'}"
                )
        required = [p.name for p in params_of if p.default is p.empty and p.kind in _NAMED]
        missing = [key for key in required if key not in params]
        if missing:
            raise DardError(f"{self.kind} '{name}' needs parameter{'s' if len(missing) > 1 else ''} {_quoted(missing)}")
        return factory(**params)

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


def _quoted(names: list[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)


def did_you_mean(given: list[str], valid: list[str]) -> str:
    """``" (did you mean 'steps'?)"`` for the valid names closest to those given (a typo of one), else ``""``."""
    near = dict.fromkeys(m for g in given for m in difflib.get_close_matches(g, valid, n=2, cutoff=0.6))
    return f" (did you mean {' or '.join(map(repr, near))}?)" if near else ""


# Typed loosely: naming the classes here would import the packages that register into these, which import this.
#: model factories (``(num_classes=..., in_channels=..., **kwargs) -> nn.Module``), :mod:`dard.models`
MODELS: Registry[Callable[..., Any]] = Registry("model")
#: :class:`dard.methods.Method` subclasses, :mod:`dard.methods`
METHODS: Registry[type[Any]] = Registry("method")
#: :class:`dard.attacks.Attack` subclasses, :mod:`dard.attacks`
ATTACKS: Registry[type[Any]] = Registry("attack")
#: dataset factories (``(data_dir, download) -> DatasetBundle``), :mod:`dard.data`
DATASETS: Registry[Callable[..., Any]] = Registry("dataset")

register_model = MODELS.register
register_method = METHODS.register
register_attack = ATTACKS.register
register_dataset = DATASETS.register
