"""Name -> object registries, so configs and the CLI can name models, attacks, datasets and methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from dard.errors import DardError

T = TypeVar("T")


class Registry(Generic[T]):
    """A case-sensitive mapping from names to factories with clear errors for unknown names."""

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
            raise DardError(f"unknown {self.kind} '{name}'; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
