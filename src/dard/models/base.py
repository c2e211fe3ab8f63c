"""Base class for image classifiers that take inputs in [0, 1] and normalise inside ``forward``, the wrapper that
gives a plain ``nn.Module`` the same normalisation, and :func:`check_logits`, the one check of what a model returns.

Keeping the normalisation inside the model means attacks, epsilon balls and clipping all work in the
natural [0, 1] pixel space, and a saved model cannot be evaluated with the wrong preprocessing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dard.errors import DardError
from dard.user_code import note_user_entry


class ImageClassifier(nn.Module):
    """An ``nn.Module`` mapping images ``x`` in [0, 1] of shape (N, C, H, W) to logits (N, num_classes).

    Subclasses implement :meth:`forward_features` (normalised images -> penultimate features (N, D)) and
    :meth:`forward_head` (features -> logits). ``forward`` runs ``normalize`` first. The per-channel
    ``mean``/``std`` live in non-persistent buffers: they follow ``.to(device)`` but are not written to
    the state dict, so state-dict keys stay identical to the common CIFAR training code.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.register_buffer("mean", torch.zeros(1, self.in_channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.ones(1, self.in_channels, 1, 1), persistent=False)

    # -- normalisation -------------------------------------------------------------------------------
    def set_normalization(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        """Set the per-channel mean and std applied to inputs; ``None`` means 0 (mean) or 1 (std).

        A single value is broadcast to every channel. Raises :class:`DardError` for a wrong number of
        values or a non-positive / non-finite std.
        """
        new_mean = self._channel_values(mean, default=0.0, what="mean")
        new_std = self._channel_values(std, default=1.0, what="std")
        if any(not math.isfinite(v) for v in new_mean):
            raise DardError(f"normalisation mean must be finite, got {list(new_mean)}")
        if any(not (math.isfinite(v) and v > 0) for v in new_std):
            raise DardError(f"normalisation std must be positive and finite, got {list(new_std)}")
        # Copy in place so the buffers keep their device and dtype (the model may already be on a GPU).
        with torch.no_grad():
            self.mean.copy_(torch.tensor(new_mean, dtype=torch.float64).view(1, -1, 1, 1))
            self.std.copy_(torch.tensor(new_std, dtype=torch.float64).view(1, -1, 1, 1))

    def _channel_values(self, values: Sequence[float] | Tensor | None, default: float, what: str) -> list[float]:
        if values is None:
            return [default] * self.in_channels
        if isinstance(values, Tensor):
            values = values.flatten().tolist()
        try:
            vals = [float(v) for v in values]
        except (TypeError, ValueError):
            raise DardError(f"normalisation {what} must be a sequence of numbers, got {values!r}") from None
        if len(vals) == 1:
            vals = vals * self.in_channels
        if len(vals) != self.in_channels:
            raise DardError(
                f"normalisation {what} has {len(vals)} values but the model has {self.in_channels} input channels"
            )
        return vals

    @property
    def normalization(self) -> tuple[list[float], list[float]]:
        """The current (mean, std) as plain lists, e.g. for a JSON record."""
        return self.mean.flatten().tolist(), self.std.flatten().tolist()

    def normalize(self, x: Tensor) -> Tensor:
        """Map [0, 1] images to the network's input space: ``(x - mean) / std`` per channel."""
        return (x - self.mean) / self.std

    # -- forward -------------------------------------------------------------------------------------
    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised images (N, C, H, W) -> pooled penultimate features (N, D)."""
        raise NotImplementedError

    def forward_head(self, features: Tensor) -> Tensor:
        """Penultimate features (N, D) -> logits (N, num_classes)."""
        raise NotImplementedError

    def embed(self, x: Tensor) -> Tensor:
        """Images in [0, 1] -> penultimate features (normalisation included)."""
        return self.forward_features(self.normalize(x))

    def forward(self, x: Tensor) -> Tensor:
        """Images in [0, 1] of shape (N, C, H, W) -> logits (N, num_classes)."""
        return self.forward_head(self.forward_features(self.normalize(x)))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, in_channels={self.in_channels}"


def check_logits(output: Any, n: int, num_classes: int | None = None) -> Tensor:
    """``output`` if it is logits for a batch of ``n`` images: a float tensor of shape (n, classes).

    Anything else (a tuple of logits and features, a dict, a wrong shape, or ``num_classes`` not matching) is a
    one-line :class:`DardError` saying what the model returned. Shape and dtype only: no device synchronisation.
    Attacks (:func:`dard.attacks.pgd_ascent`), the evaluation suite and :class:`PlainClassifier` call it.
    """
    if isinstance(output, Tensor) and output.is_floating_point() and output.dim() == 2 and output.shape[0] == n:
        if num_classes is None or output.shape[1] == num_classes:
            return output
        raise DardError(
            f"the model returns {output.shape[1]} class scores per image but was built for {num_classes} classes "
            "(does its factory ignore num_classes?)"
        )
    if isinstance(output, Tensor):
        got = f"a {output.dtype} tensor of shape {tuple(output.shape)}"
    elif isinstance(output, Mapping):
        got = f"a {type(output).__name__} with keys {', '.join(map(repr, list(output)[:4]))}"
    elif isinstance(output, (tuple, list)):
        got = f"a {type(output).__name__} of {len(output)}"
    else:
        got = type(output).__name__
    raise DardError(
        f"the model returned {got}; dard needs its logits alone, a float tensor of shape ({n}, classes) "
        "(wrap the model so that forward returns only the logits, e.g. output[0] or output['logits'])"
    )


class PlainClassifier(ImageClassifier):
    """A plain ``nn.Module`` (images -> logits) with an :class:`ImageClassifier`'s input normalisation around it.

    ``create_model`` wraps what a factory returns in this when it is not an :class:`ImageClassifier` already. The
    state dict is the wrapped module's own, key for key (no ``net.`` prefix): external weights for the plain
    module load into the wrapper, and a dard checkpoint of it loads into the plain module. ``forward`` checks the
    output with :func:`check_logits`, the class count included. A module whose parameters are of another floating
    dtype than the images (float64, bfloat16) gets the images in its dtype and gives its logits in theirs: it
    computes as it was built, and dard's losses and attacks meet the float32 logits every other model gives.
    """

    def __init__(self, net: nn.Module, num_classes: int, in_channels: int) -> None:
        super().__init__(num_classes, in_channels)
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        dtype = next((p.dtype for p in self.net.parameters() if p.is_floating_point()), x.dtype)
        logits = check_logits(self.net(self.normalize(x).to(dtype)), x.shape[0], self.num_classes)
        return logits.to(x.dtype)

    note_user_entry(forward.__code__)  # an exception inside self.net is the model's: dard.crash names it, exit 2

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        # The wrapper holds no persistent state (mean/std are non-persistent buffers), so its dict is the net's,
        # written at the wrapper's own prefix; parents call this with theirs, so nesting keeps working.
        return self.net.state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # The inverse: move this wrapper's keys under ``net.`` before nn.Module hands them to the child. The dict is
        # load_state_dict's own copy, so the caller's is untouched.
        for key in [k for k in state_dict if k.startswith(prefix)]:
            state_dict[f"{prefix}net.{key[len(prefix) :]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args)


def init_weights(module: nn.Module) -> None:
    """He (fan-out) init for convolutions and unit/zero BatchNorm, as in the usual CIFAR recipes.

    Linear layers keep PyTorch's default init.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
