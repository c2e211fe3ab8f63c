"""Model registry, construction, weight loading and size/cost accounting.

Every model is an :class:`ImageClassifier`: it takes images in [0, 1] and normalises inside ``forward``.
Architectures register themselves with ``@register_model("name")`` when this package is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dard.errors import DardError
from dard.models.base import ImageClassifier
from dard.registry import Registry

ModelFactory = Callable[..., ImageClassifier]

MODELS: Registry[ModelFactory] = Registry("model")
register_model = MODELS.register

# Imported after MODELS exists: each module registers its architectures on import.
from dard.models import cifar_resnet, mobilenetv2, resnet, small_cnn, wide_resnet  # noqa: E402, F401

__all__ = [
    "MODELS",
    "ImageClassifier",
    "count_parameters",
    "create_model",
    "list_models",
    "load_weights",
    "macs_per_image",
    "register_model",
]

# Keys under which training scripts commonly nest the state dict inside a checkpoint.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "student")
# Prefixes added by nn.DataParallel / DistributedDataParallel, wrapper modules and torch.compile.
_STRIP_PREFIXES = ("module.", "model.", "_orig_mod.")
_SHOW = 5  # how many key names an error message lists


def create_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ImageClassifier:
    """Build the registered model ``name`` with input normalisation ``mean``/``std`` (None = identity).

    Raises :class:`DardError` for an unknown name (listing the valid ones), fewer than 2 classes, fewer
    than 1 input channel, or mean/std that do not match ``in_channels``.
    """
    factory = MODELS.get(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DardError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise DardError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    model = factory(num_classes=num_classes, in_channels=in_channels)
    model.set_normalization(mean, std)
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel and ``torch.compile`` wrappers (else ``model``)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return MODELS.names()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _one_line(text: str) -> str:
    """Collapse a (possibly multi-line) exception message into one short line."""
    line = " ".join(str(text).split())
    return line if len(line) <= 160 else line[:157] + "..."


def _read_weights_file(path: Path) -> Any:
    if not path.exists():
        raise DardError(f"weights file not found: {path}")
    if not path.is_file():
        raise DardError(f"{path} is not a weights file (it is a directory)")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        # weights_only=True: a checkpoint must never be able to run code when loaded.
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any failure means "not a checkpoint we can read"
        text = str(exc)
        if "Weights only load failed" in text:
            # torch's own message is long and advises weights_only=False, which we deliberately never use.
            reason = "not a tensor-only PyTorch checkpoint; pickled objects are refused for safety"
        else:
            reason = f"{type(exc).__name__}: {_one_line(text)}"
        raise DardError(f"{path} is not a weights file ({reason})") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def _unwrap(obj: Any, where: str) -> dict[str, Tensor]:
    """Find the state dict inside a checkpoint that may nest it under e.g. ``state_dict`` or ``model``."""
    for _ in range(4):  # a few levels of nesting at most
        if _is_state_dict(obj):
            return {str(k): v for k, v in obj.items()}
        if not isinstance(obj, Mapping):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            break
        obj = inner
    if isinstance(obj, Mapping):
        keys = ", ".join(map(str, list(obj)[:_SHOW]))
        raise DardError(f"{where} holds no state dict (top-level keys: {keys or 'none'})")
    raise DardError(f"{where} holds no state dict (found {type(obj).__name__})")


def _strip_prefixes(state: dict[str, Tensor], model_keys: set[str]) -> dict[str, Tensor]:
    """Remove wrapper prefixes such as ``module.`` or ``module.model.`` from every key.

    A prefix is only stripped if the model itself has no key starting with it, so a model that really
    has a submodule called ``model`` keeps its keys.
    """
    prefixes = [p for p in _STRIP_PREFIXES if not any(k.startswith(p) for k in model_keys)]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = key
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if new.startswith(p):
                    new = new[len(p) :]
                    changed = True
        out[new] = value
    return out


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (", ..." if len(keys) > _SHOW else "")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a weights file (weights-only) and return the state dict inside it; DardError if it holds none."""
    return _unwrap(_read_weights_file(Path(path)), str(path))


def load_weights(model: nn.Module, source: str | Path | Mapping[str, Any], strict: bool = True) -> None:
    """Load weights into ``model`` from a state dict or a ``.pt``/``.pth``/``.safetensors`` file.

    Checkpoints that nest the state dict (``{"state_dict": ...}``, ``{"model": ...}``, ``{"net": ...}``)
    are unwrapped, and ``module.``/``model.`` prefixes are stripped (repeatedly, e.g. ``module.model.``).
    With ``strict`` every model key must be present and no extra key allowed. Shapes must always match.
    Problems raise :class:`DardError` with a one-line message naming the offending keys.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        where = str(path)
        raw = _read_weights_file(path)
    elif isinstance(source, Mapping):
        where = "the given checkpoint"
        raw = source
    else:
        raise DardError(f"weights must be a file path or a state dict, got {type(source).__name__}")

    target = model.state_dict()
    state = _strip_prefixes(_unwrap(raw, where), set(target))

    # BatchNorm fills in a missing num_batches_tracked itself (old checkpoints lack it), so don't count it.
    missing = [k for k in target if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    mismatched = [k for k in state if k in target and tuple(state[k].shape) != tuple(target[k].shape)]

    problems: list[str] = []
    if mismatched:
        k = mismatched[0]
        problems.append(
            f"architecture mismatch: {len(mismatched)} tensor(s) differ in shape, e.g. {k}: "
            f"checkpoint {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        )
    if strict and (missing or unexpected):
        problems.append(
            f"{len(missing)} missing key(s) [{_names(missing)}] and "
            f"{len(unexpected)} unexpected key(s) [{_names(unexpected)}]"
        )
    if problems:
        raise DardError(f"cannot load {where} into {type(model).__name__}: " + "; ".join(problems))

    if not strict:
        state = {k: v for k, v in state.items() if k in target}
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied; keep the one-line contract
        raise DardError(f"cannot load {where} into {type(model).__name__}: {_one_line(str(exc))}") from None


def macs_per_image(model: nn.Module, input_shape: Sequence[int] = (3, 32, 32)) -> int:
    """Multiply-accumulate operations of the Conv2d and Linear layers for one image of ``input_shape``.

    Measured with forward hooks on a single zero image in eval mode; the train/eval mode of every
    submodule is restored afterwards. BatchNorm, activations, pooling and additions are not counted.
    """
    total = 0

    def conv_hook(module: nn.Conv2d, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        per_output = (module.in_channels // module.groups) * kh * kw
        total += output[0].numel() * per_output

    def linear_hook(module: nn.Linear, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        total += output[0].numel() * module.in_features

    modes = {m: m.training for m in model.modules()}
    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        ref = next(model.parameters(), None)
        device = ref.device if ref is not None else torch.device("cpu")
        dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return int(total)
