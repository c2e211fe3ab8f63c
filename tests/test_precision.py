"""bf16 training steps on a CPU without native bf16 (dard.training.precision): the products run on fp32 kernels
and give the numbers of bf16 autocast, checked against an fp64 reference computed on the same bf16 operands."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dard.training.precision as precision
from dard.config import parse_config
from dard.training.precision import Bf16OnFp32Kernels


def _ulps(got: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """|got - ref| in units of the bf16 spacing at |ref| (at least the smallest normal's, so zeros are no 0/0)."""
    spacing = torch.finfo(torch.bfloat16).eps * ref.abs().clamp_min(torch.finfo(torch.bfloat16).tiny)
    return (got.double() - ref).abs() / spacing.double()


def _layers():
    """(name, forward of bf16-autocast-able layers on fp32 leaves, the leaves) for conv, linear and batched matmul."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 8, 6, 6, generator=g)
    w, b = torch.randn(8, 8, 3, 3, generator=g) / 8, torch.randn(8, generator=g)
    xl, wl, bl = torch.randn(5, 24, generator=g), torch.randn(7, 24, generator=g), torch.randn(7, generator=g)
    a, c = torch.randn(3, 5, 16, generator=g), torch.randn(3, 16, 4, generator=g)
    return [
        ("conv", lambda x, w, b: F.conv2d(x, w, b, padding=1), (x, w, b)),
        ("conv channels_last", lambda x, w, b: F.conv2d(x, w, b, padding=1),
         (x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last), b)),
        ("linear", F.linear, (xl, wl, bl)),
        ("bmm", torch.bmm, (a, c)),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(4))
def test_products_on_fp32_kernels_are_exact_bf16_products_summed_and_rounded(case):
    name, fn, leaves = _layers()[case]
    leaves = [t.clone().requires_grad_() for t in leaves]
    with torch.autocast("cpu", torch.bfloat16), Bf16OnFp32Kernels():
        out = fn(*leaves)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
        out.backward(grad_out)
    assert out.dtype == torch.bfloat16, name  # autocast's result dtype, as with torch's bf16 kernels
    # the reference: the same bf16 operands (autocast rounds the fp32 leaves) in fp64, no rounding at all
    ref_leaves = [t.detach().to(torch.bfloat16).double().requires_grad_() for t in leaves]
    ref = fn(*ref_leaves)
    ref.backward(grad_out.double())
    # the forward result is the exact sum rounded once to bf16: within half a bf16 spacing (and a hair for fp32
    # summation); each gradient is such a product too (bf16 on the way out, then back to the fp32 leaf)
    assert _ulps(out, ref.detach()).max() <= 0.51, name
    for leaf, ref_leaf in zip(leaves, ref_leaves):
        assert leaf.grad is not None and leaf.grad.dtype == torch.float32
        assert torch.equal(leaf.grad, leaf.grad.to(torch.bfloat16).float())  # a bf16 number: it was rounded
        assert _ulps(leaf.grad, ref_leaf.grad).max() <= 0.51, name


def test_other_calls_and_fp32_products_pass_through_unchanged():
    x, w = torch.randn(4, 3, 8, 8), torch.randn(5, 3, 3, 3)
    with Bf16OnFp32Kernels():
        conv = F.conv2d(x, w)  # fp32 operands: not touched
        relu = F.relu(x.to(torch.bfloat16))  # not a product: runs on bf16 as it is
    assert torch.equal(conv, F.conv2d(x, w)) and conv.dtype == torch.float32
    assert relu.dtype == torch.bfloat16 and torch.equal(relu, F.relu(x.to(torch.bfloat16)))


@pytest.mark.parametrize(
    "speed, device, native, on_fp32",
    [
        ({"amp": "bf16"}, "cpu", False, True),  # the one case: bf16 asked, a CPU that has none
        ({"amp": "bf16"}, "cpu", True, False),  # native bf16: torch's own kernels
        ({"amp": "bf16"}, "cpu", None, False),  # cannot tell: torch's own kernels, as before
        ({"amp": "none"}, "cpu", False, False),  # fp32: nothing to do
        ({"amp": "bf16", "compile": True}, "cpu", False, False),  # a compiled step brings its own kernels
        ({"amp": "bf16"}, "meta", False, False),  # not a CPU
    ],
)
def test_fp32_kernels_only_for_bf16_on_a_cpu_without_native_bf16(monkeypatch, speed, device, native, on_fp32):
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
    cfg, dev = parse_config({"device": "cpu", "speed": speed}), torch.device(device)
    assert precision.bf16_on_fp32_kernels(cfg, dev) is on_fp32
    assert isinstance(precision.product_kernels(cfg, dev), Bf16OnFp32Kernels) is on_fp32
    if device == "cpu":
        assert isinstance(precision.autocast(cfg, dev), torch.autocast) is (speed["amp"] == "bf16")
