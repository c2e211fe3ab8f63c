"""Speed switches change speed, not maths: losses and gradients with them on match the plain fp32 path.

Each case runs one training step of a method through the loop's own code (``prepare_models`` and the autocast
context), from the same weights, batch and RNG state, and compares the loss and the student's parameter
gradients with the plain fp32 step. Tolerances (stated in docs/architecture.md too):

- fp32 switches (channels_last, torch.compile): loss within 1e-3 relative, gradient within 1e-2 relative norm.
  Only the summation order of convolutions changes, but the attacks' sign steps turn a last-bit difference in
  a near-zero input gradient into a flipped pixel, so the match is not bit-exact;
- bf16 autocast (with channels_last): loss within 1e-2 relative, gradient cosine >= 0.97 and relative norm
  <= 0.25 (bf16 keeps 8 bits of mantissa, and the attack then moves a few more pixels the other way; weights
  and BatchNorm statistics stay fp32). Observed on CPU: cosine 0.988 (SAT) to 0.9998.

torch.compile runs with the ``aot_eager`` backend here (graph capture and autograd without code generation: the
inductor compiler takes minutes on 2 cores); the benchmark checks inductor the same way.
"""

from __future__ import annotations

import copy

import pytest
import torch

from dard.config import parse_config
from dard.methods import create_method
from dard.models import create_model
from dard.training import precision
from dard.training.distributed import DistInfo
from dard.training.setup import prepare_models

METHODS = {
    "natural": {},
    "sat": {"attack": {"steps": 3}},
    "trades": {"attack": {"steps": 3}},
    "ard": {"attack": {"steps": 3}},
    "rslad": {"attack": {"steps": 3}},
    "adaad": {"attack": {"steps": 3}},
    "dard": {"attack": {"steps": 3}},
    "pgdard": {"attack": {"steps": 3}},
}
FP32_SWITCHES = {"channels_last": {"channels_last": True}, "compile": {"compile": True, "compile_backend": "aot_eager"}}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10, mean=[0.5] * 3, std=[0.25] * 3)
    teacher = create_model("resnet8", num_classes=10, mean=[0.5] * 3, std=[0.25] * 3).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    x = torch.rand(16, 3, 32, 32)
    y = torch.randint(0, 10, (16,))
    return student, teacher, x, y


PLAIN = {"channels_last": False}  # the reference: fp32, NCHW, eager


def _step(setup, method_name: str, speed: dict, device: str = "cpu") -> tuple[float, torch.Tensor]:
    """Loss and student gradient (on the CPU) of one training step with ``speed`` switches (tests/test_cuda.py too)."""
    student0, teacher0, x, y = setup
    cfg = parse_config({"device": device, "speed": {**PLAIN, **speed}})
    dev = torch.device(device)
    student, teacher = copy.deepcopy(student0).to(dev), copy.deepcopy(teacher0).to(dev)
    x, y = x.to(dev), y.to(dev)
    model, teacher_fn = prepare_models(cfg, student, teacher, dev, DistInfo())
    if cfg.speed.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    method = create_method(method_name, **METHODS[method_name])
    model.train()
    torch.manual_seed(123)  # same random starts for every variant
    with precision.product_kernels(cfg, dev):  # as the loop's step: fp32 kernels where this CPU lacks bf16
        with precision.autocast(cfg, dev):
            out = method(model, teacher_fn, x, y)
        out.loss.float().backward()
    grad = torch.cat([p.grad.flatten() for p in student.parameters()]).cpu()
    assert all(p.grad is None for p in teacher.parameters())
    return out.loss.item(), grad


@pytest.mark.parametrize("switch", sorted(FP32_SWITCHES))
@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_fp32_switches_match_plain_path(setup, method_name, switch):
    loss0, grad0 = _step(setup, method_name, {})
    loss1, grad1 = _step(setup, method_name, FP32_SWITCHES[switch])
    assert loss1 == pytest.approx(loss0, rel=1e-3)
    assert (grad1 - grad0).norm() <= 1e-2 * grad0.norm()


@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_bf16_autocast_matches_fp32_within_bf16_tolerance(setup, method_name):
    loss0, grad0 = _step(setup, method_name, {})
    loss1, grad1 = _step(setup, method_name, {"amp": "bf16", "channels_last": True})
    assert loss1 == pytest.approx(loss0, rel=1e-2)
    assert torch.nn.functional.cosine_similarity(grad0, grad1, dim=0) >= 0.97
    assert (grad1 - grad0).norm() <= 0.25 * grad0.norm()
    assert grad1.dtype == torch.float32  # master weights (and so their gradients) stay fp32


def test_bf16_keeps_batchnorm_statistics_fp32(setup):
    student0, teacher0, x, y = setup
    cfg = parse_config({"device": "cpu", "speed": {"amp": "bf16"}})
    student = copy.deepcopy(student0).train()
    before = student.bn1.running_mean.clone() if hasattr(student, "bn1") else None
    with precision.autocast(cfg, torch.device("cpu")), precision.product_kernels(cfg, torch.device("cpu")):
        logits = student(x)
    assert logits.dtype == torch.bfloat16  # autocast really ran in bf16
    bns = [m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.running_mean.dtype == torch.float32 and m.weight.dtype == torch.float32 for m in bns)
    if before is not None:
        assert not torch.equal(before, student.bn1.running_mean)  # statistics were updated, in fp32


@pytest.mark.parametrize(
    "cpuinfo, native",
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n", False),  # an AVX2-only x86 (this workplace's EPYC)
        ("flags\t\t: avx2 avx512f avx512_bf16\nflags\t\t: avx2 avx512f avx512_bf16\n", True),
        ("flags\t\t: avx2 amx_tile amx_bf16\n", True),
        ("Features\t: fp asimd bf16 i8mm\n", True),  # Arm
        ("processor\t: 0\nmodel name\t: something\n", None),  # no flags: cannot tell
        (None, None),  # no cpuinfo (macOS, Windows)
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, cpuinfo, native):
    import dard.runtime as runtime

    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    assert runtime.cpu_native_bf16(path) is native
