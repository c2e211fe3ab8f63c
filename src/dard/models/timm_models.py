"""timm models as dard models: ``timm:<name>`` (the optional extra ``dard[timm]``).

``create_model("timm:vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4)`` builds the timm model
``vit_tiny_patch16_224`` with ``num_classes`` and ``in_chans`` from the dataset and every other keyword argument
(a config's ``model.kwargs``) passed to ``timm.create_model``. The model is untrained: timm's own weight download
(``pretrained``, ``checkpoint_path``) is refused, because dard loads external weights only through its weights-only
reader (``--weights`` / ``teacher.weights``). ``create_model`` wraps the result in a
:class:`~dard.models.PlainClassifier`, so the dataset's normalisation sits inside it as for the built-in
architectures, and :func:`dard.models.cost.macs_per_image` counts its linear layers and attention products.

Example config (``configs/cifar10/dard_vit_tiny.yaml``)::

    model: {arch: "timm:vit_tiny_patch16_224", kwargs: {img_size: 32, patch_size: 4}}
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from dard.errors import DardError, one_line

__all__ = ["import_timm", "timm_factory"]

#: timm arguments that fetch or read weights (pickled files among them) outside dard's weights-only loader
_REFUSED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")
_INSTALL = "pip install 'dard[timm]'"


def import_timm(what: str) -> Any:
    """The ``timm`` module, or a one-line DardError saying how to install it (or why importing it failed)."""
    try:
        import timm
    except ModuleNotFoundError as exc:
        if exc.name not in (None, "timm"):  # timm is there, a dependency of it is not
            raise DardError(f"{what}: importing timm failed ({one_line(exc, 160)}); {_INSTALL}") from None
        raise DardError(f"{what} needs the timm package: {_INSTALL}") from None
    except Exception as exc:  # e.g. a torchvision build that does not match the installed torch
        reason = f"{type(exc).__name__}: {one_line(exc, 160)}"
        raise DardError(f"{what}: importing timm failed ({reason}); torch, torchvision and timm must match") from None
    return timm


def timm_factory(name: str) -> Callable[..., nn.Module]:
    """The factory of timm model ``name``: ``(num_classes, in_channels, **kwargs) -> nn.Module``.

    An unknown name is a one-line DardError with the closest timm names; so is a missing timm.
    """
    what = f"model 'timm:{name}'"
    timm = import_timm(what)
    if not name or not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=4, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else " (timm.list_models() lists them)"
        raise DardError(f"{what}: timm has no model '{name}'{hint}")

    def build(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
        refused = sorted(set(kwargs) & set(_REFUSED))
        if refused:
            raise DardError(
                f"{what}: {', '.join(refused)} is not supported; load trained weights weights-only with --weights "
                "(dard eval) or teacher.weights"
            )
        try:
            return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
        except (DardError, KeyboardInterrupt):
            raise
        except Exception as exc:  # an argument the model class does not take, or a value it refuses (the user's)
            reason = one_line(exc, 200) if isinstance(exc, TypeError) else f"{type(exc).__name__}: {one_line(exc, 200)}"
            raise DardError(f"{what}: {reason}{' (model.kwargs)' if kwargs else ''}") from None

    build.__name__ = build.__qualname__ = f"timm_{name}"
    return build
