"""Model registry and construction.

Every model is an :class:`ImageClassifier`: it takes images in [0, 1] and normalises inside ``forward``.
Architectures register themselves with ``@register_model("name")`` when this package is imported; a registered
factory (or user code named ``module:function``, :mod:`dard.models.factory`) may return any ``nn.Module`` mapping
images to logits, which ``create_model`` wraps in a :class:`PlainClassifier` for the normalisation. Loading weights
lives in :mod:`dard.weights`, size and cost accounting in :mod:`dard.models.cost`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from dard.errors import DardError

# each module registers its architectures on import (dard.registry)
from dard.models import cifar_resnet, mobilenetv2, resnet, small_cnn, wide_resnet  # noqa: F401
from dard.models.base import ImageClassifier, PlainClassifier, check_logits
from dard.models.factory import (
    build_from_factory,
    check_factory_kwargs,
    check_materialised,
    check_model_kwargs,
    is_import_spec,
    library_prefix,
    model_factory,
)
from dard.registry import MODELS, register_model

ModelFactory = Callable[..., nn.Module]

__all__ = [
    "MODELS",
    "ImageClassifier",
    "PlainClassifier",
    "build_from_factory",
    "check_factory_kwargs",
    "check_logits",
    "check_model_kwargs",
    "create_model",
    "is_import_spec",
    "library_prefix",
    "list_models",
    "model_factory",
    "register_model",
]


def create_model(
    name: str | nn.Module,
    num_classes: int | None = None,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> ImageClassifier:
    """Build model ``name`` with input normalisation ``mean``/``std`` (None = identity); or wrap a model instance.

    Args:
        name: a registered name (``dard list``), ``timm:<name>`` (a timm model, ``dard[timm]``),
            ``robustbench:<name>`` (a RobustBench zoo architecture, ``dard[robustbench]``; its weights come from
            :func:`dard.models.robustbench.load_robustbench`), user code ``module:function``, or an ``nn.Module``
            instance mapping images to logits, which is wrapped as it is (parameters shared, not copied).
        num_classes: class count, default 10 (an :class:`ImageClassifier` instance: its own, and its own
            normalisation unless ``mean``/``std`` are given).
        in_channels: image channels, default 3.
        mean, std: per-channel normalisation applied inside ``forward`` (inputs stay in [0, 1]).
        **kwargs: further keyword arguments for the factory (a config's ``model.kwargs``), e.g. ``img_size=32``.

    The factory gets those of ``num_classes`` and ``in_channels`` it takes, and ``kwargs``. A plain ``nn.Module`` it
    returns (or is given) is wrapped in a :class:`PlainClassifier` (same state-dict keys, normalisation around it,
    the class count checked at each forward). Raises :class:`DardError` for an unknown name (listing the valid
    ones), user code or a library that cannot be imported, fewer than 2 classes, fewer than 1 input channel, a
    factory that returns no module or an ``ImageClassifier`` of another class count, keyword arguments it does not
    take, or mean/std that do not match ``in_channels``.

    Example::

        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
        model = create_model(net, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])  # model(x in [0, 1]) -> logits
    """
    if isinstance(name, nn.Module):
        if kwargs:
            raise DardError(f"a model instance takes no factory arguments, got {', '.join(sorted(kwargs))}")
        return _wrap_instance(name, num_classes, in_channels, mean, std)
    factory = model_factory(name)
    num_classes = 10 if num_classes is None else num_classes
    _check_sizes(num_classes, in_channels)
    model = build_from_factory(factory, name, num_classes, in_channels, kwargs)
    if not isinstance(model, ImageClassifier):
        model = PlainClassifier(model, num_classes, in_channels)
    elif model.num_classes != num_classes:
        raise DardError(f"model '{name}' was asked for {num_classes} classes but has {model.num_classes}")
    if mean is not None or std is not None or isinstance(model, PlainClassifier):
        # an ImageClassifier its factory gave a normalisation of its own keeps it when none is asked for, as an
        # instance does (_wrap_instance): setting "none" would erase it (registered models are built without one)
        model.set_normalization(mean, std)
    return model


def _check_sizes(num_classes: Any, in_channels: Any) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise DardError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise DardError(f"in_channels must be an integer >= 1, got {in_channels!r}")


def _wrap_instance(
    net: nn.Module,
    num_classes: int | None,
    in_channels: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> ImageClassifier:
    """``net`` with the normalisation a registered factory's model gets: an :class:`ImageClassifier` is given
    ``mean``/``std`` itself when either is passed (no second layer of normalisation; none passed keeps its own),
    anything else is wrapped in a PlainClassifier. Lazy or meta tensors are refused, as a factory's are."""
    check_materialised(net, "create_model was given")  # the same hole as a factory's model: found once trained
    if isinstance(net, ImageClassifier):
        if num_classes is not None and num_classes != net.num_classes:
            raise DardError(f"the model has {net.num_classes} classes, not {num_classes}")
        if in_channels != net.in_channels:
            raise DardError(f"the model takes {net.in_channels} input channels, not {in_channels}")
        if mean is not None or std is not None:
            net.set_normalization(mean, std)
        return net
    num_classes = 10 if num_classes is None else num_classes
    _check_sizes(num_classes, in_channels)
    model = PlainClassifier(net, num_classes, in_channels)
    model.set_normalization(mean, std)
    # the wrapper's mean/std buffers follow the instance's device, so a model already on a GPU stays usable
    first = next(net.parameters(), None)
    return model.to(first.device) if first is not None else model


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    return MODELS.names()
