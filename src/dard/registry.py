"""Name -> object registries, so configs and the CLI can name models, attacks, datasets and methods."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from dard.errors import DardError, shown

T = TypeVar("T")

__all__ = ["Registry", "param_names"]

_NAMED = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def param_names(factory: Callable[..., Any]) -> list[str]:
    """The keyword parameters ``factory`` accepts, in signature order (a class: its constructor's, less ``self``)."""
    return [p.name for p in inspect.signature(factory).parameters.values() if p.kind in _NAMED]


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
        except KeyError:
            raise DardError(f"unknown {self.kind} {shown(name)}; valid: {', '.join(self.names())}") from None

    def params(self, name: str) -> list[str]:
        """The keyword parameters ``create(name, ...)`` accepts, in signature order."""
        return param_names(self.get(name))  # type: ignore[arg-type]

    def create(self, name: str, **params: Any) -> Any:
        """Call the factory registered as ``name`` with keyword ``params``.

        An unknown name, an unknown parameter or a missing required one raises a one-line DardError listing the
        valid ones; the factory validates the values itself. A factory taking ``**kwargs`` accepts any name.
        """
        factory: Any = self.get(name)
        signature = inspect.signature(factory).parameters.values()
        if not any(p.kind is p.VAR_KEYWORD for p in signature):
            valid = self.params(name)
            unknown = [key for key in params if key not in valid]
            if unknown:
                raise DardError(
                    f"{self.kind} '{name}' has no parameter{'s' if len(unknown) > 1 else ''} {_quoted(unknown)}; "
                    f"valid: {', '.join(valid) or 'none'}"
                )
        required = [p.name for p in signature if p.default is p.empty and p.kind in _NAMED]
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
