"""Size and compute cost of a model: parameter count and multiply-accumulates per image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from dard.module_utils import eval_mode

__all__ = ["count_parameters", "macs_per_image"]


def _attention_flops(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of attention on shapes (B, H, L, E), (B, H, S, E), (B, H, S, Ev): the products Q K^T and P V."""
    *batch, length, e = query
    return 2 * math.prod(batch) * length * key[-2] * (e + value[-1])


# Attention kernels torch's FLOP counter has no formula for (the CPU one of scaled_dot_product_attention).
_EXTRA_FLOPS: dict[Any, Any] = {
    op: _attention_flops
    for op in [getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)]
    if op is not None
}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def macs_per_image(model: nn.Module, input_shape: Sequence[int] = (3, 32, 32)) -> int:
    """Multiply-accumulate operations of the Conv2d and Linear layers, and of the matrix products outside them
    (a vision transformer's attention), for one image of ``input_shape``.

    Measured with forward hooks on a single zero image in eval mode, the other products with torch's FLOP counter
    (2 FLOPs per MAC) in the same call; the train/eval mode of every submodule is restored afterwards. BatchNorm,
    activations, pooling, softmax and additions are not counted.
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
        with eval_mode(model), torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS) as counter:
            model(torch.zeros(1, *input_shape, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    # The counter sees every product: the layers' (equal to the hooks' count) and those no layer owns. Layers the
    # counter misses (custom kernels) still count through the hooks, hence the larger of the two.
    return int(max(total, counter.get_total_flops() // 2))
