"""Reading weight files and loading state dicts into models, with one-line errors.

Accepts this project's ``.safetensors`` and the ``.pt``/``.pth`` files of other training code: the state dict may be
nested in a checkpoint (``{"state_dict": ...}``, ``{"model": ...}``, any key where it is the only one) and its keys
prefixed by wrappers (``module.``, ``model.``, ``_orig_mod.``). Files are read tensors-only (``weights_only=True``): a
checkpoint can never run code when loaded.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dard.errors import DardError, one_line
from dard.model_checks import check_finite
from dard.reading import check_regular_file

__all__ = ["check_weights_file", "load_weights", "read_state_dict"]

# Keys under which training scripts commonly nest the state dict inside a checkpoint.
# The EMA copies (timm's, and others') come last: a file holding only those is still a model's weights.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "student", "state_dict_ema", "model_ema", "ema")
# Prefixes added by nn.DataParallel / DistributedDataParallel, wrapper modules and torch.compile.
_STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")
_SHOW = 5  # how many key names an error message lists
_KEY_CHARS = 60  # each cut to this many characters
_REASON_CHARS = 160  # a library's exception text is cut to this many characters in a message


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a weights file (weights-only) and return the state dict inside it; DardError if it holds none."""
    return _unwrap(_read_weights_file(Path(path)), str(path))


def load_weights(
    model: nn.Module, source: str | Path | Mapping[str, Any], strict: bool = True, where: str | None = None
) -> None:
    """Load weights into ``model`` from a state dict or a ``.pt``/``.pth``/``.safetensors`` file.

    The file's format is told by its first bytes (safetensors or torch.save's), not its name. Checkpoints that nest
    the state dict (``{"state_dict": ...}``, ``{"model": ...}``, ``{"net": ...}``, an EMA copy) are unwrapped, and
    ``module.``/``model.`` prefixes are stripped (repeatedly, e.g. ``module.model.``).
    With ``strict`` every model key must be present and no extra key allowed. Shapes must always match.
    Problems raise :class:`DardError` with a one-line message naming the offending keys and ``where`` (default:
    the file, or "the given checkpoint"); so do NaN or infinite values among the loaded parameters and buffers.
    """
    if isinstance(source, (str, Path)):
        where = where or str(source)
        raw = _read_weights_file(Path(source))
    elif isinstance(source, Mapping):
        where = where or "the given checkpoint"
        raw = source
    else:
        raise DardError(f"weights must be a file path or a state dict, got {type(source).__name__}")

    target = model.state_dict()
    state = _tied_filled(_strip_prefixes(_unwrap(raw, where), set(target), where), target, where)
    problems = _key_problems(state, target, strict)
    if problems:
        raise DardError(f"cannot load {where} into {type(model).__name__}: " + "; ".join(problems))

    if not strict:
        state = {k: v for k, v in state.items() if k in target}
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied; keep the one-line contract
        reason = one_line(exc, _REASON_CHARS)
        raise DardError(f"cannot load {where} into {type(model).__name__}: {reason}") from None
    check_finite(model, where)


def _tied_filled(state: dict[str, Tensor], target: Mapping[str, Tensor], where: str) -> dict[str, Tensor]:
    """``state`` with each name of a tensor the model ties (one tensor under two names: a head tied to an embedding)
    filled in from another of its names: safetensors' ``save_model`` and Hugging Face keep one name of tied tensors,
    and the others were "missing keys". Two names of one tied tensor holding different values in the file are a
    DardError: loaded into one tensor, the one listed last won in silence."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for key, tensor in target.items():
        if tensor.numel() and not tensor.is_meta:
            ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape, tensor.stride())
            groups.setdefault(ident, []).append(key)
    out = dict(state)
    for names in (g for g in groups.values() if len(g) > 1):
        present = [k for k in names if k in state]
        for other in present[1:]:
            a, b = state[present[0]], state[other]
            if a.shape != b.shape or not torch.equal(a, b.to(a.dtype)):
                first, second = (one_line(k, _KEY_CHARS) for k in (present[0], other))
                raise DardError(
                    f"{where}: tensors {first} and {second} differ, but the model ties them (one tensor under both "
                    "names), so which to load cannot be told; save the weights of a model that ties them"
                )
        for missing in (k for k in names if k not in state and present):
            out[missing] = state[present[0]]
    return out


def _key_problems(state: Mapping[str, Tensor], target: Mapping[str, Tensor], strict: bool) -> list[str]:
    """Shape mismatches always; missing and unexpected keys when ``strict``."""
    # BatchNorm fills in a missing num_batches_tracked itself (old checkpoints lack it), so don't count it.
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    mismatched = [k for k in state if k in target and tuple(state[k].shape) != tuple(target[k].shape)]
    # an int, bool or complex tensor where the model holds floats would be cast silently into other weights
    kinds = [k for k in state if k in target and target[k].is_floating_point() and not state[k].is_floating_point()]

    problems: list[str] = []
    if kinds:
        k = kinds[0]
        problems.append(
            f"tensor {one_line(k, _KEY_CHARS)} is {state[k].dtype}, where the model holds floating-point "
            f"{target[k].dtype}"
        )
    if mismatched:
        k = mismatched[0]
        problems.append(
            f"architecture mismatch: {len(mismatched)} tensor(s) differ in shape, e.g. {one_line(k, _KEY_CHARS)}: "
            f"checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        )
    if strict and (missing or unexpected):
        problems.append(
            f"{len(missing)} missing key(s) [{_names(missing)}] and "
            f"{len(unexpected)} unexpected key(s) [{_names(unexpected)}]{_prefix_hint(missing, unexpected)}"
        )
    return problems


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """What the file's keys put before every missing one, where some prefix does (``backbone.``, or ``student.``
    and ``teacher.`` of a distillation wrapper's state dict): the list of keys alone did not say it. Not stripped:
    which model the file meant cannot be told from the keys."""
    if not missing:
        return ""
    wanted, covers = set(missing), dict[str, set[str]]()
    for key in unexpected:
        for i, c in enumerate(key):
            if c == "." and key[i + 1 :] in wanted:
                covers.setdefault(key[: i + 1], set()).add(key[i + 1 :])
    full = sorted(p for p, keys in covers.items() if keys == wanted)
    if not full:
        return ""
    shown = ", ".join(repr(one_line(p, _KEY_CHARS)) for p in full[:3]) + (", ..." if len(full) > 3 else "")
    return (
        f"; the file's keys are the model's behind {shown}: save the state dict of the one model you mean "
        "(model.state_dict()), or strip the prefix"
    )


def _format(path: Path) -> str | None:
    """``"safetensors"`` or ``"torch"`` by the file's first bytes, None for neither: a file's name does not say
    (safetensors saved as ``model.pt``, a checkpoint named ``.ckpt``, ``.bin`` or nothing)."""
    with path.open("rb") as f:
        head = f.read(9)
    # safetensors first: its header's 8-byte little-endian length, then its JSON; that length's first byte can be
    # 0x80 (a 384-byte header), the first byte of a pickle stream
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch.save's zip archive, or its older pickle stream
        return "torch"
    return None


def check_weights_file(path: str | Path) -> str:
    """The format of weights file ``path`` (``"safetensors"`` or ``"torch"``) by its first bytes, without reading
    the rest: a missing file, a folder, a FIFO or a file of neither kind is a DardError. Cheap, so it runs before
    the data loads (a teacher's weights)."""
    path = Path(path)
    check_regular_file(path, "weights file")  # through a link (a link to a weights file is that file); a FIFO blocks
    try:
        kind = _format(path)
    except OSError as e:
        raise DardError(f"cannot read {path}: {e.strerror or one_line(e, _REASON_CHARS)}") from None
    if kind is None:
        raise DardError(f"{path} is not a weights file (neither safetensors nor a PyTorch checkpoint)")
    return kind


def _read_weights_file(path: Path) -> Any:
    kind = check_weights_file(path)
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        # weights_only=True: a checkpoint must never be able to run code when loaded. Its warnings (e.g. about a
        # pickle protocol) are not for the user: a refusal is our one error line, a success needs no comment.
        # an open file, not its name: torch.load reads a name ending in .safetensors as safetensors
        with warnings.catch_warnings(), _numpy_data_allowed(), path.open("rb") as f:
            warnings.simplefilter("ignore")
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure means "not a checkpoint we can read"
        text = str(exc)
        if "Weights only load failed" in text:
            # torch's own message is long and advises weights_only=False, which we deliberately never use.
            reason = "not a tensor-only PyTorch checkpoint; pickled objects are refused for safety"
        else:
            reason = f"{type(exc).__name__}: {one_line(text, _REASON_CHARS)}"
        raise DardError(f"{path} is not a weights file ({reason})") from None


def _numpy_data_allowed() -> Any:
    """torch.load's weights-only unpickler, also taking NumPy scalars, arrays and dtypes: training scripts store
    their metadata beside the weights that way (``{"net": ..., "best_acc": np.float64(...)}``), and torch refuses
    those by default. They are data, not code: an array's items go through the same restricted unpickler. Files
    from NumPy 1 name the module ``numpy.core``, NumPy 2 ``numpy._core``: both names are allowed."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch before 2.5: NumPy data stays refused
        return contextlib.nullcontext()
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    kinds: list[Any] = [np.ndarray, np.dtype]
    kinds += [getattr(np.dtypes, n) for n in dir(getattr(np, "dtypes", None)) if n.endswith("DType")]
    aliases = torch.__version__ >= "2.6"  # (object, name) entries: torch 2.6 on
    for obj in (core.multiarray.scalar, core.multiarray._reconstruct):
        kinds.append(obj)
        kinds += [(obj, f"numpy.{m}.multiarray.{obj.__name__}") for m in ("core", "_core")] if aliases else []
    return safe_globals(kinds)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def _one_state_dict(candidates: list[Mapping[str, Tensor]]) -> bool:
    """Whether ``candidates`` (the state dicts under a checkpoint's wrapper keys) are at most one, or copies of one."""
    first = candidates[0] if candidates else {}
    return all(c.keys() == first.keys() and all(torch.equal(c[k], first[k]) for k in first) for c in candidates[1:])


def _unwrap(obj: Any, where: str) -> dict[str, Tensor]:
    """Find the state dict inside a checkpoint that nests it: under any key of a level where it is the one state
    dict (``{"model_state": ..., "optimizer": ...}``), or deeper under a known wrapper key (``state_dict``,
    ``model``, ...). Two different ones side by side (a model and its EMA copy, a student beside its teacher) are
    a DardError naming their keys."""
    for _ in range(4):  # a few levels of nesting at most
        if _is_state_dict(obj):
            return {str(k): v for k, v in obj.items()}
        if not isinstance(obj, Mapping):
            break
        held = [k for k, v in obj.items() if _is_state_dict(v)]
        if not _one_state_dict([obj[k] for k in held]):
            # a model beside its EMA copy, a student beside its teacher: the first known key's was loaded in
            # silence (timm's own loader prefers the EMA), another key's was not found at all
            names = ", ".join(map(str, held))
            raise DardError(
                f"{where} holds {len(held)} state dicts ({names}), so which one to load cannot be told; "
                f"save the one you mean alone, e.g. torch.save(checkpoint[{held[-1]!r}], 'weights.pt')"
            )
        if held:
            return {str(k): v for k, v in obj[held[0]].items()}
        found = [k for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)]
        if not found:
            break
        obj = obj[found[0]]
    if isinstance(obj, Mapping):
        others = [k for k, v in obj.items() if not isinstance(v, Tensor)]
        if len(others) < len(obj) and not any(isinstance(obj[k], Mapping) for k in others):
            # tensors beside a few other values ({..., "epoch": 5}): it listed the tensors' names as its keys
            shown = ", ".join(f"{one_line(str(k), _KEY_CHARS)} ({type(obj[k]).__name__})" for k in others[:_SHOW])
            raise DardError(
                f"{where} holds {len(obj) - len(others)} tensors beside {len(others)} value(s) that are not tensors "
                f"[{shown}], so it is not a state dict; save model.state_dict() alone"
            )
        keys = ", ".join(map(str, list(obj)[:_SHOW]))
        raise DardError(f"{where} holds no state dict (keys: {keys or 'none'})")
    raise DardError(f"{where} holds no state dict (found {type(obj).__name__})")


def _strip_prefixes(state: dict[str, Tensor], model_keys: set[str], where: str) -> dict[str, Tensor]:
    """Remove wrapper prefixes such as ``module.`` or ``module.model.`` from every key.

    A prefix is only stripped if the model itself has no key starting with it, so a model that really
    has a submodule called ``model`` keeps its keys.

    A file whose keys name one tensor twice once stripped (``fc.weight`` beside ``module.fc.weight``: a model and
    its wrapped copy saved together) is a DardError naming both: which of the two is meant cannot be told (the one
    listed last was loaded, in silence).
    """
    prefixes = [p for p in _STRIP_PREFIXES if not any(k.startswith(p) for k in model_keys)]
    out: dict[str, Tensor] = {}
    source: dict[str, str] = {}
    for key, value in state.items():
        new = key
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if new.startswith(p):
                    new = new[len(p) :]
                    changed = True
        if new in out:
            first, second = (one_line(k, _KEY_CHARS) for k in (source[new], key))
            raise DardError(
                f"{where}: keys {first} and {second} both name tensor {one_line(new, _KEY_CHARS)} once the "
                f"wrapper prefixes ({', '.join(_STRIP_PREFIXES)}) are stripped, so which one to load cannot be "
                "told; save the state dict of the one model you mean"
            )
        out[new], source[new] = value, key
    return out


def _names(keys: list[str]) -> str:
    shown = ", ".join(one_line(k, _KEY_CHARS) for k in keys[:_SHOW])  # a 5000-character key must not fill the line
    return shown + (", ..." if len(keys) > _SHOW else "")
