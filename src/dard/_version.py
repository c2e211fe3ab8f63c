"""dard's version: the installed distribution's (pyproject.toml is its one source); a bare source tree says so.

A leaf module, so that the lowest layers (runtime's environment record, the crash log, export manifests) read the
version without importing the package face :mod:`dard`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]


def _installed_version() -> str:
    try:
        return version("dard")
    except PackageNotFoundError:
        return "0+unknown"


__version__: str = _installed_version()
