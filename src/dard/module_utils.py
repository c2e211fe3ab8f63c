"""Small helpers on ``nn.Module`` objects that attacks, methods, training and evaluation share.

Two unwrapping helpers, because callers want different layers off: attacks take the module out of
DistributedDataParallel only (:func:`local_module`, keeping a ``torch.compile`` wrapper and its speed), while saving
weights wants the plain module under every wrapper (:func:`unwrap_model`, whose state-dict keys carry no prefix).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

__all__ = ["eval_mode", "local_module", "unwrap_model"]


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore every submodule's own previous mode.

    Per-module flags, not just ``model.training``: a caller may keep some submodules (frozen BN) in eval.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, was_training in modes:
            module.training = was_training


def local_module(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (else ``model`` itself).

    Attacks take gradients with respect to the input only; going through DDP would arm its gradient
    all-reduce for a backward pass that never reaches the parameters.
    """
    return model.module if isinstance(model, DistributedDataParallel) else model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside (Distributed)DataParallel and ``torch.compile`` wrappers (else ``model``)."""
    if isinstance(model, (DataParallel, DistributedDataParallel)):
        model = model.module
    return getattr(model, "_orig_mod", model)
