"""The training step's precision: ``speed.amp: bf16`` autocast, also on CPUs without native bf16 arithmetic.

Under torch's autocast the convolutions and matrix products of a step run on bf16 operands and give bf16 results;
the rest (batch norm, activations, the losses) runs on whatever tensors it gets. A CPU without native bf16 (no
avx512_bf16, amx_bf16 or bf16 flag: an AVX2-only AMD EPYC, say) runs those bf16 kernels on slow fallback paths: a
DARD step 35 times slower than fp32 (benchmarks/results/cpu-avx2-1thread.md). There, :class:`Bf16OnFp32Kernels`
gives each such product to the fp32 kernel instead and rounds its result to bf16. The numbers are those of bf16
autocast: bf16 operands are exact in fp32, and so is the product of two of them (8 + 8 significand bits of fp32's
24), so the fp32 kernel sums the exact products in fp32 and the result is rounded to bf16, which is what native bf16
kernels do (oneDNN accumulates bf16 products in fp32), up to the order of the sums, which differs between any two
CPUs or thread counts anyway (tests/test_precision.py checks them against an fp64 reference on the same bf16
operands).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from dard.config import RunConfig
from dard.runtime import cpu_native_bf16

__all__ = ["PRODUCT_KERNELS", "Bf16OnFp32Kernels", "autocast", "bf16_on_fp32_kernels", "product_kernels"]

_aten = torch.ops.aten
#: the kernels CPU autocast gives bf16 operands to (convolution, linear and matmul reach these), forward and backward
PRODUCT_KERNELS = frozenset(
    {
        _aten.convolution.default,
        _aten.convolution_backward.default,
        _aten.mm.default,
        _aten.addmm.default,
        _aten.bmm.default,
        _aten.baddbmm.default,
    }
)


class Bf16OnFp32Kernels(TorchDispatchMode):
    """Run the :data:`PRODUCT_KERNELS` that get bf16 CPU operands on fp32 kernels, with their results rounded to
    bf16 (the same numbers as native bf16 kernels, up to summation order: see the module docstring). Every other
    call passes through unchanged.

    Example::

        with torch.autocast("cpu", torch.bfloat16), Bf16OnFp32Kernels():
            loss = model(x).float().mean()
            loss.backward()
    """

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in PRODUCT_KERNELS and _has_cpu_bf16((args, kwargs)):
            out = func(*tree_map(_to_fp32, args), **tree_map(_to_fp32, kwargs))
            return tree_map(_to_bf16, out)
        return func(*args, **kwargs)


def _has_cpu_bf16(tree: Any) -> bool:
    found = False

    def visit(x: Any) -> Any:
        nonlocal found
        found = found or (isinstance(x, torch.Tensor) and x.dtype == torch.bfloat16 and x.device.type == "cpu")
        return x

    tree_map(visit, tree)
    return found


def _to_fp32(x: Any) -> Any:
    return x.float() if isinstance(x, torch.Tensor) and x.dtype == torch.bfloat16 else x


def _to_bf16(x: Any) -> Any:
    return x.to(torch.bfloat16) if isinstance(x, torch.Tensor) and x.dtype == torch.float32 else x


def bf16_on_fp32_kernels(cfg: RunConfig, device: torch.device) -> bool:
    """Whether ``cfg``'s bf16 steps run their products on fp32 kernels on ``device``: a CPU that has no native bf16
    (one that cannot tell keeps torch's own kernels), without ``speed.compile`` (a compiled step brings its own
    kernels, and a dispatch mode would break its graph)."""
    return cfg.speed.amp == "bf16" and device.type == "cpu" and not cfg.speed.compile and cpu_native_bf16() is False


def autocast(cfg: RunConfig, device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast for a training step's forward pass under ``speed.amp: bf16``, else nothing (fp32)."""
    if cfg.speed.amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def product_kernels(cfg: RunConfig, device: torch.device) -> AbstractContextManager[Any]:
    """:class:`Bf16OnFp32Kernels` where :func:`bf16_on_fp32_kernels`, else nothing. Wrap the forward and the
    backward pass of a step (autocast only the forward): the backward's products get bf16 operands too."""
    return Bf16OnFp32Kernels() if bf16_on_fp32_kernels(cfg, device) else nullcontext()
