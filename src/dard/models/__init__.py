"""Model registry and construction.

Every model is an :class:`ImageClassifier`: it takes images in [0, 1] and normalises inside ``forward``.
Architectures register themselves with ``@register_model("name")`` when this package is imported; a registered
factory (or user code named ``module:function``, :mod:`dard.models.factory`) may return any ``nn.Module`` mapping
images to logits, which ``create_model`` wraps in a :class:`PlainClassifier` for the normalisation. Loading weights
lives in :mod:`dard.weights`, size and cost accounting in :mod:`dard.models.cost`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from dard.errors import DardError
from dard.models.base import ImageClassifier, PlainClassifier, check_logits
from dard.models.factory import build_from_factory, is_import_spec, model_factory
from dard.registry import Registry

ModelFactory = Callable[..., nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")
register_model = MODELS.register

# Imported after MODELS exists: each module registers its architectures on import.
from dard.models import cifar_resnet, mobilenetv2, resnet, small_cnn, wide_resnet  # noqa: E402, F401

__all__ = [
    "MODELS",
    "ImageClassifier",
    "PlainClassifier",
    "check_logits",
    "create_model",
    "is_import_spec",
    "list_models",
    "model_factory",
    "register_model",
]


def create_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ImageClassifier:
    """Build model ``name`` (a registered name, or ``module:function``) with input normalisation ``mean``/``std``
    (None = identity).

    The factory gets those of ``num_classes`` and ``in_channels`` it takes. A plain ``nn.Module`` it returns is
    wrapped in a :class:`PlainClassifier` (same state-dict keys, normalisation around it). Raises
    :class:`DardError` for an unknown name (listing the valid ones), user code that cannot be imported, fewer than
    2 classes, fewer than 1 input channel, a factory that returns no module or an ``ImageClassifier`` of another
    class count, or mean/std that do not match ``in_channels``.
    """
    factory = model_factory(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DardError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise DardError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    model = build_from_factory(factory, name, num_classes, in_channels)
    if not isinstance(model, ImageClassifier):
        model = PlainClassifier(model, num_classes, in_channels)
    elif model.num_classes != num_classes:
        raise DardError(f"model '{name}' was asked for {num_classes} classes but has {model.num_classes}")
    model.set_normalization(mean, std)
    return model


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return MODELS.names()
