"""Model checkpoints: weights as safetensors, metadata (architecture, normalisation, provenance) as JSON; and the
one way to get a model for a dataset, from a checkpoint or from an architecture plus external weights.

A checkpoint ``NAME`` is the pair ``NAME.safetensors`` + ``NAME.json``. External weights (a ``.pt``/``.pth``
state dict from other code) load through :func:`dard.weights.load_weights` with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dard.errors import DardError
from dard.io import DuplicateKeyError, loads_json, save_tensors, sha256_file, write_json
from dard.model_checks import check_input, check_spec
from dard.models import check_model_kwargs, create_model, is_import_spec, library_prefix
from dard.models.robustbench import check_zoo_normalization
from dard.module_utils import unwrap_model
from dard.reading import check_regular_file
from dard.run_dir import CHECKPOINTS, CheckpointProvenance, RunDir, enclosing_run
from dard.run_dir.files import read_bytes
from dard.run_dir.lock import held_elsewhere
from dard.run_dir.pair import WEIGHTS_SHA256, check_pair
from dard.weights import check_weights_file, load_weights

if TYPE_CHECKING:
    from dard.data import DatasetBundle

FORMAT = "dard-checkpoint"
PROVENANCE_KEYS = ("epoch", "metrics", "selected_by")  # beside "format" and "model" (CheckpointProvenance)


def model_spec(
    arch: str, bundle: DatasetBundle, normalize: bool, kwargs: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """How to rebuild a model for ``bundle``'s images: stored in every checkpoint's JSON. ``kwargs`` (a config's
    ``model.kwargs``, for the factory) is recorded only when there are any, so other specs stay as they were."""
    if library_prefix(arch) == "robustbench:":
        normalize = False  # the zoo's models normalise inside; a second normalisation would corrupt their inputs
    spec = {
        "arch": arch,
        "num_classes": bundle.num_classes,
        "in_channels": bundle.image_shape[0],
        "mean": list(bundle.mean) if normalize else None,
        "std": list(bundle.std) if normalize else None,
    }
    if kwargs:
        spec["kwargs"] = dict(kwargs)
    return spec


def build_model(spec: Mapping[str, Any], where: str | None = None) -> nn.Module:
    """Instantiate the (untrained) model a spec describes; a bad spec, or sizes out of bounds, is a DardError
    naming ``where``."""
    check_spec(spec, where or "model spec")
    try:
        arch, classes, channels = spec["arch"], int(spec["num_classes"]), int(spec["in_channels"])
        kwargs = dict(spec.get("kwargs") or {})
    except (KeyError, TypeError, ValueError) as e:
        raise DardError(f"{where or 'model spec'}: bad model spec ({e})") from None
    if not all(isinstance(k, str) for k in kwargs):
        raise DardError(f"{where or 'model spec'}: bad model spec (kwargs keys must be strings)")
    try:
        check_model_kwargs(kwargs, arch)
        return create_model(
            arch, num_classes=classes, in_channels=channels, mean=spec.get("mean"), std=spec.get("std"), **kwargs
        )
    except DardError as e:
        if where is None:
            raise
        raise DardError(f"{where}: {e}") from None


def save_checkpoint(
    path: str | Path, model: nn.Module, spec: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``path`` (.safetensors) and its sibling .json atomically; returns the weights path.

    ``spec`` describes how to rebuild the model: ``arch``, ``num_classes``, ``in_channels``, ``mean``, ``std``.
    The JSON is written last and records the weights file's SHA-256 (``weights_sha256``), so a kill between the two
    writes (new weights beside the old metadata) is told from one save's pair when read (:func:`read_checkpoint_meta`).
    """
    weights = Path(path).with_suffix(".safetensors")
    model = unwrap_model(model)
    save_tensors(weights, model.state_dict(), metadata={"format": FORMAT, "arch": str(spec["arch"])})
    meta = {"format": FORMAT, "model": spec, **(extra or {}), WEIGHTS_SHA256: sha256_file(weights, fresh=True)}
    write_json(weights.with_suffix(".json"), meta)
    return weights


def weights_digest(path: str | Path) -> str:
    """SHA-256 of a checkpoint's tensors (names, dtypes, shapes and bytes, in name order): equal for equal weights.

    Not the file's hash: safetensors writes its metadata mapping in no fixed order, so two saves of the same
    weights may differ byte for byte.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    h = hashlib.sha256()
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise DardError(f"{path}: unreadable weights ({' '.join(str(e).split())})") from None
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def resolve_checkpoint(path: str | Path) -> Path:
    """Map a run folder, a ``.json`` or a ``.safetensors`` path to the weights file of a dard checkpoint."""
    p = Path(path)
    if p.is_dir() and p.suffix not in (".safetensors", ".json"):  # a folder named as a checkpoint's file is refused
        # a run folder's checkpoints, else a folder holding one plain model
        for weights in [*(RunDir(p).weights(w) for w in CHECKPOINTS), p / "model.safetensors"]:
            if os.path.lexists(weights):  # a dangling link is refused where it is, not passed over for the next
                return weights
        raise DardError(f"{p} holds no checkpoint (expected best.safetensors or last.safetensors)")
    if p.suffix == ".json":
        if os.path.lexists(p) and not os.path.lexists(p.with_suffix(".safetensors")):  # an eval record, run.json
            check_regular_file(p, "checkpoint metadata")  # a FIFO or a folder is said as what it is
            raise DardError(
                f"{p}: no {p.with_suffix('.safetensors').name} beside it, so no checkpoint (an evaluation record or "
                "run.json is none; a checkpoint is a run folder, or its best/last .json or .safetensors)"
            )
        p = p.with_suffix(".safetensors")
    check_regular_file(p, "checkpoint")  # absent (a link to nothing said so), or a FIFO or a device said as such
    return p


def teacher_checkpoint(path: str | Path, *, in_use_ok: bool = False) -> Path:
    """The weights file of a teacher given as a dard checkpoint (a run folder, or a checkpoint's file), checked
    before anything loads: a run folder's best checkpoint, never its last in silence (a student distilled from
    another teacher than the one named, its results changed without a word: the last one is taken when named), and
    not one in a run folder another process holds (a training replaces its checkpoints while the student reads
    them). ``in_use_ok``: the caller's own teacher, whose training it finished (an experiment evaluates it
    meanwhile)."""
    p = Path(path)
    weights = RunDir(p).weights("best") if p.is_dir() and RunDir(p).is_run() else resolve_checkpoint(p)
    if not os.path.lexists(weights):  # a run folder without its best
        last = RunDir(p).weights("last")
        hint = f"; to distil from its last checkpoint instead, name it: {last}" if last.is_file() else ""
        raise DardError(f"teacher {p}: the run's best checkpoint {weights} is missing{hint}")
    if not in_use_ok:
        check_not_training(p, weights)
    return weights


def check_not_training(given: str | Path, weights: Path, what: str = "teacher") -> None:
    """A DardError if the ``what``'s ``weights`` (``given`` so) lie in a run folder another process holds: a
    training there replaces them while a student reads them (a teacher from external weights too), and `dard eval`
    of them measured a half-trained model as if it were the run's."""
    run = enclosing_run(weights)
    owner = None if run is None else held_elsewhere(run.path)
    if run is not None and owner is not None:
        raise DardError(
            f"{what} {given}: its run folder {run.path} is in use by {owner.describe()} (lock file {run.lock_file}), "
            "and a training there replaces its checkpoints; wait for it to end, or copy the checkpoint you want "
            "(its .safetensors and .json) out of the folder and give the copy"
        )


def _load_zoo_model(
    arch: str, bundle: DatasetBundle, device: torch.device | str, model_dir: str | Path | None, threat_model: str
) -> LoadedModel:
    """RobustBench's trained model ``arch`` (``robustbench:<name>``) for ``bundle``'s dataset, as a dard classifier
    with no normalisation of its own (the zoo's models normalise inside)."""
    from dard.models.robustbench import load_robustbench, weight_paths

    name = arch.split(":", 1)[1]
    net = load_robustbench(name, dataset=bundle.name, threat_model=threat_model, model_dir=model_dir)
    model = create_model(net, num_classes=bundle.num_classes, in_channels=bundle.image_shape[0])
    paths = weight_paths(name, bundle.name, threat_model, model_dir)
    source = ", ".join(map(str, paths)) or f"robustbench {name}"
    spec = {**model_spec(arch, bundle, normalize=False), "threat_model": threat_model}
    return LoadedModel(model.to(device).eval(), {"source": source, **spec})


RAW_WEIGHTS_HINT = "pass --model ARCH to load raw weights"
#: what a teacher given as raw weights needs instead (the config's keys, and how to set them on the command line)
TEACHER_RAW_HINT = (
    "a teacher from raw weights needs teacher.arch + teacher.weights + teacher.normalize "
    "(--set teacher.arch=ARCH --set teacher.weights=FILE --set teacher.normalize=true|false)"
)


def read_checkpoint_meta(weights: Path, raw_hint: str = RAW_WEIGHTS_HINT) -> dict[str, Any]:
    """Read and check the JSON metadata beside ``weights``."""
    meta_path = weights.with_suffix(".json")
    if not meta_path.exists():
        raise DardError(f"{weights} has no metadata file {meta_path.name}; {raw_hint}")
    try:
        meta = loads_json(read_bytes(meta_path, "checkpoint metadata"))  # a regular file, bounded: not a FIFO
    except DuplicateKeyError as e:
        raise DardError(f"{meta_path}: {e}, so not a file dard wrote") from None
    except (ValueError, OSError) as e:  # JSONDecodeError, UnicodeDecodeError, nesting too deep
        raise DardError(f"{meta_path} is not a dard checkpoint metadata file ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise DardError(f"{meta_path} is not a dard checkpoint metadata file")
    check_spec(meta["model"], str(meta_path))
    # the provenance is quoted into eval records and reports: typed here, not echoed
    CheckpointProvenance.from_dict({k: meta[k] for k in PROVENANCE_KEYS if k in meta}, str(meta_path))
    check_pair(weights, meta, meta_path)
    return meta


def _head(path: Path, n: int) -> bytes:
    """The first ``n`` bytes of the regular file ``path`` (none where it cannot be read: the caller's error says)."""
    try:
        with path.open("rb") as f:
            return f.read(n)
    except OSError:
        return b""


def checkpoint_meta(
    path: str | Path, arch: str | None = None, raw_hint: str = RAW_WEIGHTS_HINT
) -> tuple[Path, dict[str, Any]]:
    """The weights file and checked metadata of a dard checkpoint (a run folder, ``.json`` or ``.safetensors``
    path), without loading the weights; ``raw_hint`` says how to load a file that is not one.

    ``arch``, if given, must be the architecture the checkpoint records. A checkpoint recording user code
    (``module:function``) needs it: reading a file never imports code unless the caller names that code too.
    """
    weights = resolve_checkpoint(path)
    if weights.suffix != ".safetensors":
        if weights.is_file() and _head(weights, 2) == b"\x1f\x8b":  # gzip: `dard export`'s archive
            raise DardError(
                f"{weights} is an archive, not a checkpoint; unpack a `dard export` archive with `dard import "
                f"{weights} --runs DIR` and give the run folder"
            )
        raise DardError(f"{weights} is not a dard checkpoint (.safetensors + .json); {raw_hint}")
    run = RunDir(weights.parent)
    if run.is_run():  # a run's checkpoint is its own: a link there (to another run's weights) was read as the run's
        run.holds(weights, "checkpoint weights")
        run.holds(weights.with_suffix(".json"), "checkpoint metadata")
    check_weights_file(weights)  # its first bytes, before the data loads: an empty or foreign file was found after
    meta = read_checkpoint_meta(weights, raw_hint)
    recorded = meta["model"].get("arch") if isinstance(meta["model"], Mapping) else None
    where = weights.with_suffix(".json")
    if arch is not None and arch != recorded:
        raise DardError(f"{where} holds a '{recorded}' model, not '{arch}'")
    if arch is None and is_import_spec(recorded):
        raise DardError(
            f"{where}: the model is user code '{recorded}', which dard imports only when you name it too: "
            f"--model {recorded} (dard eval), teacher.arch={recorded} (a teacher), or arch='{recorded}' (Python)"
        )
    return weights, meta


def load_checkpoint(
    path: str | Path, device: torch.device | str = "cpu", *, arch: str | None = None, raw_hint: str = RAW_WEIGHTS_HINT
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model described by a dard checkpoint and load its weights; returns (model in eval mode, meta).

    ``arch``: the architecture the checkpoint must record; required when that is user code (``module:function``),
    which is imported only when named here (see :func:`checkpoint_meta`).
    """
    weights, meta = checkpoint_meta(path, arch, raw_hint)
    model = build_model(meta["model"], str(weights.with_suffix(".json")))
    load_weights(model, weights)
    return model.to(device).eval(), meta


def check_sizes(
    what: str, classes: Any, channels: Any, dataset: str, data_classes: int | None, data_channels: int | None
) -> None:
    """A DardError if a model of ``classes`` classes taking ``channels`` channels cannot take dataset ``dataset``'s
    images (a count the dataset has not told yet, None, is not compared)."""
    if data_classes is not None and classes != data_classes:
        raise DardError(f"{what} has {classes} classes but dataset '{dataset}' has {data_classes}")
    if data_channels is not None and channels != data_channels:
        raise DardError(f"{what} takes {channels} channels but dataset '{dataset}' has {data_channels}")


@dataclass
class LoadedModel:
    """A model ready to evaluate or distil from, and where it came from."""

    model: nn.Module  # in eval mode, on the requested device
    info: dict[str, Any]  # {"source": checkpoint or weights path, **model spec}: provenance for records
    epoch: int | None = None  # the checkpoint's epoch (None for external weights)


def load_model(
    bundle: DatasetBundle,
    device: torch.device | str,
    *,
    checkpoint: str | Path | None = None,
    arch: str | None = None,
    weights: str | Path | Mapping[str, Any] | None = None,
    normalize: bool | None = None,
    what: str = "model",
    model_dir: str | Path | None = None,
    threat_model: str = "Linf",
    kwargs: Mapping[str, Any] | None = None,
    source: str | None = None,
) -> LoadedModel:
    """A model for ``bundle``'s images: a dard ``checkpoint`` (whose recorded architecture ``arch``, if given, must
    be), or architecture ``arch`` with external ``weights`` (a file or a state dict already read) and, if
    ``normalize`` (None: true, but false for a ``robustbench:`` architecture), the dataset's mean/std inside the
    model, or a RobustBench zoo model by name (``arch`` or ``checkpoint`` ``robustbench:<name>`` without ``weights``:
    the trained model for ``bundle``'s dataset and ``threat_model``, its weights from robustbench's loader and
    ``model_dir``; :mod:`dard.models.robustbench`).

    A class or channel count that does not match the dataset, or an image size the model cannot take, is a
    DardError naming ``what``; so is a ``normalize`` the model would not apply (true for a zoo model or
    architecture, which take raw pixels; either value contradicting a checkpoint's own). ``source``: where a state
    dict given as ``weights`` came from (its file), for messages and the record.
    """
    zoo = library_prefix(str(checkpoint)) == "robustbench:" or library_prefix(arch) == "robustbench:"
    if zoo and normalize:  # a zoo model takes raw pixels whatever is stated: it was dropped in silence
        check_zoo_normalization(str(checkpoint if checkpoint is not None else arch), normalize, "normalize=True")
    if library_prefix(str(checkpoint)) == "robustbench:":  # a teacher named by its zoo name
        loaded = _load_zoo_model(str(checkpoint), bundle, device, model_dir, threat_model)
    elif checkpoint is None and weights is None and library_prefix(arch) == "robustbench:":
        loaded = _load_zoo_model(str(arch), bundle, device, model_dir, threat_model)
    elif checkpoint is not None:
        hint = TEACHER_RAW_HINT if what == "teacher" else RAW_WEIGHTS_HINT
        model, meta = load_checkpoint(checkpoint, device, arch=arch, raw_hint=hint)
        recorded = meta["model"].get("mean") is not None
        if normalize is not None and normalize != recorded:  # the checkpoint's own was kept in silence
            said = "inputs normalised with the dataset's mean/std" if recorded else "raw [0, 1] pixels"
            raise DardError(
                f"{what}: normalize={normalize} contradicts {checkpoint}, which records its own normalisation "
                f"({said}); normalize is for external weights: leave it out for a checkpoint"
            )
        loaded = LoadedModel(model, {"source": str(checkpoint), **meta["model"]}, meta.get("epoch"))
    else:
        if arch is None or weights is None:
            raise DardError(f"{what}: give a dard checkpoint or an architecture with its weights")
        spec = model_spec(arch, bundle, normalize is not False, kwargs)  # kwargs: the factory's, for weights alone
        model = build_model(spec)
        source = (source or "state dict") if isinstance(weights, Mapping) else str(weights)
        load_weights(model, weights if isinstance(weights, Mapping) else str(weights), where=source)
        loaded = LoadedModel(model.to(device).eval(), {"source": source, **spec})
    classes, channels = loaded.info.get("num_classes"), loaded.info.get("in_channels", bundle.image_shape[0])
    check_sizes(what, classes, channels, bundle.name, bundle.num_classes, bundle.image_shape[0])
    probe = bundle.test.x[:2].to(device).float().div_(255)
    check_input(loaded.model, probe, bundle.num_classes, f"{what} ({loaded.info.get('arch')})")
    return loaded
