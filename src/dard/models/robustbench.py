"""RobustBench model-zoo models by name: ``robustbench:<name>`` (the optional extra ``dard[robustbench]``).

Two uses, both through the ``robustbench`` package itself (never a copy of its zoo):

* :func:`load_robustbench` gives a trained zoo model: robustbench's own loader reads (or, online, downloads) its
  weights into ``<model_dir>/<dataset>/<threat model>/<name>.pt``, with ``torch.load`` held to weights-only
  loading whatever the torch version; a missing file on a machine without internet is one line naming the exact
  path to put it at. ``dard eval --model robustbench:<name>`` and ``dard train --teacher robustbench:<name>`` reach
  it through :func:`dard.checkpoint.load_model`.
* ``create_model("robustbench:<name>", num_classes=10)`` builds the entry's architecture untrained (the dataset from
  the class count, ``threat_model`` a keyword, default ``"Linf"``): for a student, for external weights
  (``teacher.weights``), and for tests.

The zoo models normalise their inputs themselves, so dard wraps them with no normalisation of its own
(:func:`dard.checkpoint.model_spec` records none for a ``robustbench:`` architecture).

Example::

    net = load_robustbench("Carmon2019Unlabeled", dataset="cifar10", threat_model="Linf")  # nn.Module, eval mode
    model = create_model(net)  # a dard classifier; inputs in [0, 1], no second normalisation
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import pickle
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dard.errors import DardError, one_line

__all__ = [
    "THREAT_MODELS",
    "check_zoo_normalization",
    "default_model_dir",
    "import_robustbench",
    "load_robustbench",
    "robustbench_factory",
    "weight_paths",
]

_INSTALL = "pip install 'dard[robustbench]'"
#: dard's dataset names RobustBench has CIFAR models for, by class count
_DATASETS = {10: "cifar10", 100: "cifar100"}
#: RobustBench's threat-model names, by the lower-case spelling dard's configs use
THREAT_MODELS = {"linf": "Linf", "l2": "L2", "corruptions": "corruptions"}


def default_model_dir() -> Path:
    """Where zoo weights live unless ``--model-dir`` says otherwise: ``$DARD_MODEL_DIR``, else
    ``$XDG_CACHE_HOME/dard/robustbench`` (``~/.cache/dard/robustbench``)."""
    if os.environ.get("DARD_MODEL_DIR"):
        return Path(os.environ["DARD_MODEL_DIR"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "dard" / "robustbench"


def _alias_autoattack() -> None:
    """Let ``import autoattack`` find PyPI's ``pyautoattack`` when no ``autoattack`` is installed.

    robustbench 1.1.1 (its ``eval.py``, imported by ``import robustbench``) imports ``autoattack``, the module name of
    the official AutoAttack code installed from git, while the dependency it declares is PyPI's ``pyautoattack``:
    the same code (dard's own AutoAttack) under that other name. Without the git package, ``import robustbench``
    fails, so the name is given to ``pyautoattack`` (and ``autoattack.state`` to ``pyautoattack.state``) in this
    process. An installed ``autoattack`` is used as it is.
    """
    if "autoattack" in sys.modules or importlib.util.find_spec("autoattack") is not None:
        return
    try:
        import pyautoattack
        import pyautoattack.state
    except ImportError:  # robustbench's own import then says what is missing
        return
    sys.modules["autoattack"] = pyautoattack
    sys.modules["autoattack.state"] = pyautoattack.state


def import_robustbench(what: str) -> tuple[Any, Any]:
    """robustbench's loader module (``robustbench.utils``) and its zoo table (``model_dicts``), imported as dard
    imports them (:func:`_alias_autoattack` first), or a one-line DardError naming ``what`` and how to install it."""
    _alias_autoattack()
    try:
        with warnings.catch_warnings():
            # importing robustbench 1.1.1 (and the timm it brings) warns about its own dependencies (pkg_resources'
            # and torch.jit's deprecations): stderr lines beside dard's one-line answer that the user cannot act on
            warnings.simplefilter("ignore")
            from robustbench import utils
            from robustbench.model_zoo import model_dicts
    except ModuleNotFoundError as exc:
        if exc.name not in (None, "robustbench") and not str(exc.name).startswith("robustbench."):
            raise DardError(f"{what}: importing robustbench failed ({one_line(exc, 160)}); {_INSTALL}") from None
        raise DardError(f"{what} needs the robustbench package: {_INSTALL}") from None
    except Exception as exc:  # e.g. its timm / torchvision not matching the installed torch
        reason = f"{type(exc).__name__}: {one_line(exc, 160)}"
        hint = "torch, torchvision and timm must match"
        raise DardError(f"{what}: importing robustbench failed ({reason}); {hint}") from None
    return utils, model_dicts


def _threat(threat_model: str, what: str) -> str:
    key = str(threat_model).lower()
    if key not in THREAT_MODELS:
        raise DardError(
            f"{what}: threat model must be one of {', '.join(THREAT_MODELS.values())}, got {threat_model!r}"
        )
    return THREAT_MODELS[key]


def _entry(zoo: Any, name: str, dataset: str, threat: str, what: str) -> dict[str, Any]:
    """The zoo's entry for ``name`` (its ``model`` constructor and ``gdrive_id``), or a DardError with close names."""
    table = next((v for k, v in zoo.items() if getattr(k, "value", k) == dataset), None)
    if table is None:
        raise DardError(f"{what}: RobustBench has no models for dataset '{dataset}' (CIFAR-10/100 and ImageNet)")
    models: dict[str, Any] = next((v for k, v in table.items() if getattr(k, "value", k) == threat), {})
    if name not in models:
        close = difflib.get_close_matches(name, list(models), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise DardError(f"{what}: RobustBench lists no {dataset} {threat} model '{name}'{hint}")
    return models[name]


def robustbench_factory(name: str) -> Callable[..., nn.Module]:
    """The factory of zoo entry ``name``'s architecture (untrained): ``(num_classes, threat_model="Linf")``."""
    what = f"model 'robustbench:{name}'"
    _, zoo = import_robustbench(what)

    def build(num_classes: int = 10, in_channels: int = 3, threat_model: str = "Linf") -> nn.Module:
        if num_classes not in _DATASETS or in_channels != 3:
            raise DardError(f"{what}: RobustBench's CIFAR models take 3-channel images of 10 or 100 classes")
        return _entry(zoo, name, _DATASETS[num_classes], _threat(threat_model, what), what)["model"]()

    build.__name__ = build.__qualname__ = f"robustbench_{name}"
    return build


_WEIGHTS_INSTEAD = (
    "state the weights' inputs as raw pixels, or give weights trained on normalised inputs an architecture of your "
    "own (module:function) that normalises"
)


def check_zoo_normalization(arch: str | None, normalize: bool, stated: str, instead: str = _WEIGHTS_INSTEAD) -> None:
    """A DardError if ``normalize`` (``stated`` so: a flag, a config key, an argument) asks for the dataset's
    normalisation of a ``robustbench:`` model or architecture ``arch``: :func:`dard.checkpoint.model_spec` gives
    those none (the zoo's models normalise inside where their weights need it), so it was dropped in silence.
    ``instead``: what to do (default: for external weights)."""
    if normalize and isinstance(arch, str) and arch.startswith("robustbench:"):
        raise DardError(
            f"{stated} does nothing for {arch}: RobustBench's architectures take raw [0, 1] pixels and normalise "
            f"inside themselves where their weights need it, so dard adds no normalisation; {instead}"
        )


def weight_paths(name: str, dataset: str, threat_model: str, model_dir: str | Path | None = None) -> list[Path]:
    """The file(s) robustbench's loader reads for ``name``: ``<model_dir>/<dataset>/<threat>/<name>.pt``, or
    ``<name>.pt_m<i>.pt`` for each member of an ensemble (empty for entries whose weights timm fetches)."""
    what = f"model 'robustbench:{name}'"
    _, zoo = import_robustbench(what)
    threat = _threat(threat_model, what)
    entry = _entry(zoo, name, dataset, threat, what)
    base = Path(model_dir or default_model_dir()) / dataset / threat / f"{name}.pt"
    ids = entry.get("gdrive_id")
    if ids is None:
        return []
    return [Path(f"{base}_m{i}.pt") for i in range(len(ids))] if isinstance(ids, list) else [base]


@contextmanager
def _weights_only_loads(utils: Any) -> Iterator[None]:
    """robustbench's loader with ``torch.load`` held to ``weights_only=True`` (torch's default only since 2.6): a
    file that needs more than tensors and plain containers is refused, never unpickled. Not thread-safe (a module
    attribute swap, undone on exit)."""
    real = utils.torch.load

    def weights_only(*args: Any, **kwargs: Any) -> Any:
        kwargs["weights_only"] = True
        return real(*args, **kwargs)

    utils.torch = _TorchWith(weights_only)
    try:
        yield
    finally:
        utils.torch = torch


class _TorchWith:
    """``torch`` as robustbench's loader module sees it, with ``load`` replaced."""

    def __init__(self, load: Callable[..., Any]) -> None:
        self.load = load

    def __getattr__(self, attr: str) -> Any:
        return getattr(torch, attr)


def load_robustbench(
    name: str, *, dataset: str, threat_model: str = "Linf", model_dir: str | Path | None = None
) -> nn.Module:
    """Zoo model ``name`` for ``dataset`` (``cifar10``/``cifar100``) and ``threat_model`` (``Linf``/``L2``) with its
    trained weights, in eval mode, through robustbench's own loader and model folder ``model_dir`` (default
    :func:`default_model_dir`).

    Raises a one-line :class:`DardError` for an unknown name, a missing file that cannot be downloaded (naming
    where to put it), or a file that is not loadable weights-only.
    """
    what = f"model 'robustbench:{name}'"
    utils, _ = import_robustbench(what)
    folder = Path(model_dir or default_model_dir())
    paths = weight_paths(name, dataset, threat_model, folder)
    missing = [p for p in paths if not p.is_file()]
    try:
        with _weights_only_loads(utils):
            model = utils.load_model(
                name, model_dir=str(folder), dataset=dataset, threat_model=_threat(threat_model, what)
            )
    except Exception as exc:
        reason = f"{type(exc).__name__}: {one_line(exc, 160)}"
        still = [p for p in missing if not p.is_file() or p.stat().st_size == 0]
        if still:
            raise DardError(
                f"{what}: weights not found and not downloaded ({reason}); without internet, put the file at "
                f"{', '.join(map(str, still))} (or pass --model-dir)"
            ) from None
        if isinstance(exc, pickle.UnpicklingError):
            raise DardError(f"{what}: {paths[0] if paths else name} is not loadable weights-only ({reason})") from None
        raise DardError(f"{what}: robustbench could not load it ({reason})") from None
    return model.eval()
