"""Checks on a model before it is used: sizes read from a file are bounded, loaded weights are finite, and the
model takes the dataset's images and returns one logit per class. Each failure is one :class:`DardError` line.

One place for all of them: checkpoints (:mod:`dard.checkpoint`), weight files (:mod:`dard.weights`), resume
snapshots, the teacher and the student before training (:mod:`dard.training.preflight`) go through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dard.errors import DardError, one_line, shown
from dard.models.base import check_logits
from dard.module_utils import eval_mode

#: bounds on the sizes a checkpoint's metadata may ask for (a corrupt or hostile file must not make us allocate
#: terabytes): more classes than any public benchmark, more channels than hyperspectral images carry
MAX_CLASSES = 100_000
MAX_CHANNELS = 1024
_LARGEST_PROBE = 1024  # the largest square image tried when looking for a model's minimum input size


def _bounded_int(spec: Mapping[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    value = spec.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise DardError(f"{where}: {key} must be an integer in [{lo}, {hi}], got {shown(value)}")
    return value


def check_spec(spec: Any, where: str) -> None:
    """A model spec read from a file (``arch``, ``num_classes``, ``in_channels``, ``mean``, ``std``) with every
    size within bounds; DardError naming ``where`` otherwise."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("arch"), str):
        raise DardError(f"{where}: bad model spec (needs arch, num_classes, in_channels), got {shown(spec)}")
    _bounded_int(spec, "num_classes", 2, MAX_CLASSES, where)
    _bounded_int(spec, "in_channels", 1, MAX_CHANNELS, where)
    for key in ("mean", "std"):
        value = spec.get(key)
        if value is not None and not (isinstance(value, list) and len(value) <= MAX_CHANNELS):
            raise DardError(f"{where}: {key} must be a list of at most {MAX_CHANNELS} numbers, got {shown(value)}")


def check_finite(tensors: nn.Module | Mapping[str, Tensor], where: str) -> None:
    """Every floating tensor (a module's parameters and buffers, or a state dict) finite; else a DardError naming
    the first bad tensor: NaN or inf weights give NaN outputs that look like 0% accuracy, not like an error."""
    items = (
        [*tensors.named_parameters(), *tensors.named_buffers()] if isinstance(tensors, nn.Module) else tensors.items()
    )
    for name, t in items:
        if isinstance(t, Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            raise DardError(
                f"{where}: tensor '{name}' holds {nan} NaN and {inf} infinite value(s) of {t.numel()}; "
                "the weights are corrupt or their training diverged"
            )


# words of torch's and timm's messages about a tensor's spatial size ("Output size is too small", "mat1 and mat2
# shapes cannot be multiplied", "Kernel size can't be greater", "Input height (8) doesn't match model (224)")
_SIZE_WORDS = ("size", "shape", "dim", "height", "width", "match", "small", "kernel", "pixel", "resolution")


def _about_size(exc: BaseException) -> bool:
    """Whether a model's failure may be about the image size (an empty message may be: a bare assert)."""
    text = str(exc).lower()
    return not text or any(word in text for word in _SIZE_WORDS)


def _runs(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> Exception | None:
    """None if ``model`` takes zeros of ``shape``, else its exception."""
    try:
        model(torch.zeros(shape, device=device))
        return None
    except Exception as e:  # any failure counts: we only look for the size from which it works
        return e


@torch.no_grad()
def min_input_size(model: nn.Module, channels: int, device: torch.device) -> int | None:
    """The smallest square image side ``model`` accepts (in eval mode), None if none up to 1024 pixels does or a
    failure is not about the size (a probe of every size up to 1024 took minutes for a large model on a CPU)."""
    with eval_mode(model):
        side = 1
        while side <= _LARGEST_PROBE:
            failure = _runs(model, (1, channels, side, side), device)
            if failure is None:
                break
            if not _about_size(failure):
                return None
            side *= 2
        if side > _LARGEST_PROBE:
            return None
        lo, hi = side // 2 + 1, side  # hi works, everything below lo failed (sizes are assumed monotone)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if _runs(model, (1, channels, mid, mid), device) is None else (mid + 1, hi)
        return hi


@torch.no_grad()
def check_input(model: nn.Module, x: Tensor, num_classes: int, what: str, trained: bool = False) -> None:
    """``model`` (in eval mode) takes the images ``x`` (a few of the dataset's, float in [0, 1]) and returns
    logits of shape (N, num_classes) whose gradients can be taken (:func:`check_gradients`; ``trained``: the
    parameters' too); else a DardError naming ``what`` and, for images too small, the model's minimum input size.
    Run before training or evaluating, so that a misfit costs a second, not an epoch."""
    c, h, w = x.shape[1:]
    with eval_mode(model):
        try:
            out = model(x)
        except DardError as e:  # a wrapper's own check (PlainClassifier: a tuple, dict or other class count)
            raise DardError(f"{what}: {e}") from None
        except Exception as e:  # a shape error deep inside the model: say what does not fit
            probe = min(h, w) < _LARGEST_PROBE and _about_size(e)  # else the error itself is what to say
            side = min_input_size(model, c, x.device) if probe else None
            if side is not None and min(h, w) < side:
                raise DardError(
                    f"{what} needs images of at least {side}x{side} pixels; the dataset's are {w}x{h}"
                ) from None
            reason = f"{type(e).__name__}: {one_line(e, 160)}"
            raise DardError(f"{what} cannot take the dataset's {c}x{h}x{w} images ({reason})") from None
    try:
        check_logits(out, x.shape[0], num_classes)
    except DardError as e:
        raise DardError(f"{what}: {e}") from None
    if not bool(torch.isfinite(out).all()):  # its accuracy, and a teacher's soft labels, would be NaN's argmax
        raise DardError(f"{what} returns NaN or infinite logits for the dataset's images (with finite weights)")
    check_gradients(model, x, what, trained)
    check_batch_independent(model, x, what)


@torch.no_grad()
def check_batch_independent(model: nn.Module, x: Tensor, what: str) -> None:
    """``model``'s logits (in eval mode) for the first of the images ``x`` are the same alone and in their batch;
    else a DardError naming ``what``. A model that normalises with the batch's own statistics in eval mode
    (BatchNorm with ``track_running_stats=False``) gives accuracies that depend on how the images are batched (the
    evaluation batch size; AutoAttack's later stages see only the points still robust), and an attack can move
    one image through the others. A randomised model (noise in ``forward``, two calls differ) is not judged here,
    and its draws do not come from the run's random stream."""
    if x.shape[0] < 2:
        return
    cuda = x.device.type == "cuda"
    devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] if cuda else []
    with eval_mode(model), torch.random.fork_rng(devices=devices):
        together = model(x)[:1].float()
        try:
            alone, again = model(x[:1]).float(), model(x[:1]).float()
        except Exception as e:  # statistics over a batch of one (BatchNorm1d): a last batch of one fails alike
            reason = f"{type(e).__name__}: {one_line(e, 160)}"
            raise DardError(f"{what} fails on a single image ({reason}); make its eval-mode output per image") from None
    if not torch.equal(alone, again):
        return
    scale = 1.0 + float(alone.abs().max())  # TF32 and per-batch-size kernels differ by far less than this
    if not torch.allclose(together, alone, rtol=1e-2, atol=1e-2 * scale):
        raise DardError(
            f"{what}: its logits for an image depend on the other images in the batch (in eval mode; e.g. "
            "BatchNorm with track_running_stats=False), so its accuracy would depend on how images are batched; "
            "make its eval-mode output per image"
        )


def check_gradients(model: nn.Module, x: Tensor, what: str, trained: bool = False) -> None:
    """The gradients dard takes through ``model`` (in eval mode) on the images ``x`` can be computed: the input's,
    which every attack takes, and with ``trained`` the parameters' (the student), which need at least one parameter
    with ``requires_grad`` and logits that depend on them. Otherwise a DardError naming ``what``: a model that
    changes a tensor in place that autograd needs, that detaches its output or has nothing to train would fail at
    its first attack or training step, after the data and the other models are loaded, as an internal error.
    ``model`` gets no ``.grad`` (the gradients are returned, not accumulated) and no BatchNorm update."""
    params = [p for p in model.parameters() if p.requires_grad] if trained else []
    if trained and not params:
        raise DardError(f"{what} has no trainable parameters (none with requires_grad), so it cannot be trained")
    x = x.detach().clone().requires_grad_(True)
    with eval_mode(model), torch.enable_grad():
        try:
            logits = model(x)
            if not logits.requires_grad:
                if trained:
                    raise DardError(
                        f"{what} returns logits without a gradient (a detached output, or one made under no_grad), "
                        "so it cannot be trained"
                    )
                return  # no input gradient: gradient attacks find nothing to follow and leave the images as they are
            torch.autograd.grad(logits.float().sum(), [x, *params], allow_unused=True)
        except DardError:
            raise
        except Exception as e:  # autograd's own refusal: in-place changes, non-differentiable operations
            reason = f"{type(e).__name__}: {one_line(e, 160)}"
            raise DardError(
                f"{what}: its gradient cannot be computed ({reason}); does its forward change a tensor in place?"
            ) from None
