"""A model's weights matched against its architecture and the dataset before the data loads.

Building a model is cheap; loading a dataset (CIFAR's files, a download) and a first forward are not. Weights that
do not fit (another architecture's tensors, keys missing or unexpected, an int dtype, NaN or inf values, a head of
another class count) were found only after the data had loaded: :func:`check_fits` loads them into a throwaway model
built for the dataset's sizes where those are known without reading it (:func:`dard.data.known_sizes`), with the
same checks and messages as the load that follows the data (:func:`dard.checkpoint.load_model`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dard.checkpoint import RAW_WEIGHTS_HINT, build_model, check_sizes, load_checkpoint, read_checkpoint_meta
from dard.data import known_sizes
from dard.errors import DardError
from dard.models import library_prefix
from dard.models.robustbench import check_zoo_normalization
from dard.weights import load_weights

__all__ = ["check_fits", "check_stated_normalization"]

#: the channel counts an image folder's images may have (grey or RGB), tried in turn where the images decide
_FOLDER_CHANNELS = (3, 1)
#: the checks passed in this process, by file identity and model (a file changed since is checked again)
_FITTED: set[tuple[Any, ...]] = set()


def _identity(checkpoint: Any, weights: Any, model: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """What a check of a file depends on: the file's identity, size and modification time, and the model; None
    for a state dict in memory."""
    path = checkpoint if checkpoint is not None else weights
    if not isinstance(path, (str, Path)):
        return None
    files = [Path(path), Path(path).with_suffix(".json")] if checkpoint is not None else [Path(path)]
    try:
        stats = [os.stat(f) for f in files]
    except OSError:
        return None  # the check itself says what is wrong
    marks = [(str(f.resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for f, st in zip(files, stats)]
    return (*marks, *model)


def check_fits(
    dataset: str,
    data_dir: str | Path | None,
    *,
    checkpoint: str | Path | None = None,
    arch: str | None = None,
    weights: str | Path | Mapping[str, Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    what: str = "model",
    raw_hint: str = RAW_WEIGHTS_HINT,
    source: str | None = None,
) -> None:
    """The model of a dard ``checkpoint`` (its recorded architecture ``arch`` if given), or of ``arch`` with
    external ``weights`` (a file, or a state dict read from ``source``) and its factory's ``kwargs``, loads and fits
    dataset ``dataset``'s class and channel counts: a DardError otherwise, before the data loads. A check the
    dataset's unknown sizes leave open is made again when the model loads for the data. The global RNG is left as
    it was (a run's stream, an evaluation's seed)."""
    classes, channels = known_sizes(dataset, data_dir)
    if checkpoint is not None and library_prefix(str(checkpoint)) is not None:
        return  # a zoo model by name: its weights come from the library's loader
    if checkpoint is None and (arch is None or weights is None or classes is None):
        return  # the head's shape is the dataset's: matched once it has loaded
    key = _identity(checkpoint, weights, (arch, json.dumps(kwargs, sort_keys=True, default=str), classes, channels))
    if key is not None and key in _FITTED:
        return  # the same files, unchanged, for the same model: `dard experiment`'s runs sharing one teacher
    with torch.random.fork_rng(devices=[]):
        if checkpoint is not None:
            _, meta = load_checkpoint(checkpoint, "cpu", arch=arch, raw_hint=raw_hint)
            spec = meta["model"]
            check_sizes(what, spec.get("num_classes"), spec.get("in_channels"), dataset, classes, channels)
        else:
            assert arch is not None and weights is not None and classes is not None
            where = (source or "state dict") if isinstance(weights, Mapping) else str(weights)
            _load_for(arch, weights, kwargs, classes, channels, where)
    if key is not None:
        _FITTED.add(key)


def _load_for(
    arch: str,
    weights: str | Path | Mapping[str, Any],
    kwargs: Mapping[str, Any] | None,
    classes: int,
    channels: int | None,
    where: str,
) -> None:
    """``weights`` load into ``arch`` built for ``classes`` and ``channels`` (any of an image folder's counts
    where the images decide); the first count's DardError otherwise."""
    first: DardError | None = None
    for count in (channels,) if channels is not None else _FOLDER_CHANNELS:
        spec = {"arch": arch, "num_classes": classes, "in_channels": count, "mean": None, "std": None}
        try:
            load_weights(build_model({**spec, **({"kwargs": dict(kwargs)} if kwargs else {})}), weights, where=where)
            return
        except DardError as e:
            first = first or e
    assert first is not None
    raise first


def check_stated_normalization(
    weights: str | Path, normalize: bool, stated: str, instead: str, arch: str | None = None
) -> None:
    """External ``weights`` that are a dard checkpoint's file (its ``.json`` beside it) record how their inputs were
    normalised: a DardError if ``normalize`` (``stated`` so) says otherwise, naming ``instead`` (how to give the
    checkpoint, which keeps its own). Normalised twice, or not at all, the model lost its accuracy in silence.

    A ``robustbench:`` architecture ``arch`` takes raw pixels whatever is stated (:func:`dard.checkpoint.model_spec`:
    the zoo's models normalise inside where their weights need it), so ``normalize`` true is a DardError: it was
    dropped in silence, and ``dard eval``'s record said ``normalization: dataset``."""
    check_zoo_normalization(arch, normalize, stated)
    path = Path(weights)
    if path.suffix != ".safetensors" or not path.with_suffix(".json").is_file():
        return
    try:
        meta = read_checkpoint_meta(path)
    except DardError:
        return  # not a dard checkpoint's metadata: the weights say nothing of their inputs
    recorded = meta["model"].get("mean") is not None
    if recorded != normalize:
        said = "inputs normalised with the dataset's mean/std" if recorded else "raw [0, 1] pixels"
        raise DardError(
            f"{path} is a dard checkpoint trained on {said} ({path.with_suffix('.json').name}), which {stated} "
            f"contradicts; give it as a checkpoint, which keeps its own: {instead}"
        )
