"""Model registry and construction.

Every model is an :class:`ImageClassifier`: it takes images in [0, 1] and normalises inside ``forward``.
Architectures register themselves with ``@register_model("name")`` when this package is imported. Loading weights
lives in :mod:`dard.weights`, size and cost accounting in :mod:`dard.models.cost`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dard.errors import DardError
from dard.models.base import ImageClassifier
from dard.registry import Registry

ModelFactory = Callable[..., ImageClassifier]

MODELS: Registry[ModelFactory] = Registry("model")
register_model = MODELS.register

# Imported after MODELS exists: each module registers its architectures on import.
from dard.models import cifar_resnet, mobilenetv2, resnet, small_cnn, wide_resnet  # noqa: E402, F401

__all__ = ["MODELS", "ImageClassifier", "create_model", "list_models", "register_model"]


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


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return MODELS.names()
