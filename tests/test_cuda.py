"""CUDA checks, run by the GPU job (``pytest -m cuda``; tools/bundle/gpu_job.sh) and skipped where there is no GPU.

- the speed switches on CUDA within the tolerances of tests/test_speed.py (docs/architecture.md): channels_last and
  torch.compile (inductor, the real code generator) against plain fp32, bf16 autocast against fp32. TF32 is off
  in these comparisons, so that fp32 means fp32 (training leaves cuDNN's default TF32 on);
- DeviceLoader yields on CUDA exactly what it yields on the CPU;
- a tiny DARD run end to end on CUDA: teacher, student, a stop inside a mid-epoch snapshot, resume from the one
  before, and the metrics of an uninterrupted run (a BatchNorm-free MLP, whose CUDA kernels are deterministic in
  practice; accuracies may still move by an image or two where an attack's sign step meets a zero gradient, so
  they are compared to 0.02, losses to 1e-3 relative; the CPU test in test_training.py demands equality);
- AutoAttack (pyautoattack) on a few CUDA images, leaving the caller's CUDA random stream alone;
- a one-process NCCL group: SyncBatchNorm + DistributedDataParallel around the student, one DARD step, and the
  loop's cross-rank helpers.

About a minute on an H100, most of it the inductor compilation (cold cache).
"""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest
import torch
from tests.conftest import tiny_config
from tests.test_data import _indexed_images
from tests.test_speed import FP32_SWITCHES, METHODS, _step, setup  # noqa: F401 - setup is a fixture

from dard.attacks import create_attack
from dard.config import parse_config
from dard.data import DeviceLoader
from dard.methods import create_method
from dard.models import create_model
from dard.training import distributed as dist
from dard.training import load_run_config, train
from dard.training.loop import prepare_models

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture
def strict_fp32():
    """fp32 convolutions and matmuls without TF32 for the duration of a test."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_channels_last_matches_plain_on_cuda(setup, method_name, strict_fp32):  # noqa: F811
    loss0, grad0 = _step(setup, method_name, {}, "cuda")
    loss1, grad1 = _step(setup, method_name, FP32_SWITCHES["channels_last"], "cuda")
    assert loss1 == pytest.approx(loss0, rel=1e-3)
    assert (grad1 - grad0).norm() <= 1e-2 * grad0.norm()


@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_bf16_autocast_matches_fp32_on_cuda(setup, method_name, strict_fp32):  # noqa: F811
    loss0, grad0 = _step(setup, method_name, {}, "cuda")
    loss1, grad1 = _step(setup, method_name, {"amp": "bf16", "channels_last": True}, "cuda")
    assert loss1 == pytest.approx(loss0, rel=1e-2)
    assert torch.nn.functional.cosine_similarity(grad0, grad1, dim=0) >= 0.97
    assert (grad1 - grad0).norm() <= 0.25 * grad0.norm()


@pytest.mark.slow
def test_inductor_compile_matches_plain_on_cuda(setup, strict_fp32):  # noqa: F811
    torch._dynamo.reset()
    loss0, grad0 = _step(setup, "dard", {}, "cuda")
    loss1, grad1 = _step(setup, "dard", {"compile": True, "compile_backend": "inductor"}, "cuda")
    assert loss1 == pytest.approx(loss0, rel=1e-3)
    assert (grad1 - grad0).norm() <= 1e-2 * grad0.norm()


def test_loader_same_on_cpu_and_cuda():
    s = _indexed_images(40, c=3, h=6, w=6)
    kw = dict(shuffle=True, augment=True, crop_padding=2, flip=True, seed=2)
    cpu = DeviceLoader(s, 16, device="cpu", **kw)
    gpu = DeviceLoader(s, 16, device="cuda", **kw)
    for epoch in (0, 1):
        cpu.set_epoch(epoch)
        gpu.set_epoch(epoch)
        pairs = list(zip(cpu, gpu))
        assert len(pairs) == len(cpu) == 3
        for (x1, y1), (x2, y2) in pairs:
            assert x2.device.type == "cuda" and y2.device.type == "cuda"
            assert torch.equal(x1, x2.cpu()) and torch.equal(y1, y2.cpu())
    # resuming mid-epoch on CUDA yields the tail of the same epoch
    tail = [y.cpu() for _, y in gpu.iter_from(1)]
    assert all(torch.equal(a, b) for a, b in zip(tail, [y for _, y in cpu.iter_from(1)]))


class _Stop(Exception):
    """Raised in place of a kill, right after a snapshot's weights are written (its pointer is not)."""


def _cuda_config(name: str, **sections) -> dict:
    return tiny_config(name=name, device="cuda", model={"arch": "mlp"}, eval={"attacks": ["fgsm"]}, **sections)


@pytest.mark.slow
def test_tiny_dard_run_with_resume_on_cuda(tmp_path, monkeypatch):
    teacher = train(parse_config(_cuda_config("teacher")), tmp_path / "teacher")
    cfg = _cuda_config(
        "dard",
        method={"name": "dard", "params": {"attack": {"steps": 2, "step_size": 0.05}}},
        teacher={"checkpoint": str(teacher / "best.safetensors")},
        optim={"epochs": 2, "batch_size": 32},
        checkpoint_every_steps=3,
    )
    import dard.training.state as state

    original, calls = state.save_tensors, {"n": 0}

    def save_tensors(path, tensors, metadata=None):
        out = original(path, tensors, metadata)
        if path.name == "student.safetensors":
            calls["n"] += 1
            if calls["n"] == 5:  # steps 3, 6, 8 (end of epoch 1), 9, then 12: stopped inside the 5th snapshot
                raise _Stop
        return out

    monkeypatch.setattr(state, "save_tensors", save_tensors)
    with pytest.raises(_Stop):
        train(parse_config(cfg), tmp_path / "stopped")
    monkeypatch.setattr(state, "save_tensors", original)
    stopped = tmp_path / "stopped"
    assert json.loads((stopped / "resume.json").read_text())["snapshot"] == "state-000000009"
    assert load_run_config(stopped).device == "cuda"
    train(load_run_config(stopped), stopped, resume=True)
    straight = train(parse_config(cfg), tmp_path / "straight")

    def rows(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(r).items() if k not in ("images_per_s", "train_seconds")} for r in lines]

    got, want = rows(stopped), rows(straight)
    assert [r["epoch"] for r in got] == [1, 2]
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for k in a:
            close = dict(abs=0.02) if k.endswith("acc") or k.startswith("val_") else dict(rel=1e-3)
            assert a[k] == pytest.approx(b[k], **close), (k, a[k], b[k])
    ev = json.loads((stopped / "eval" / "best.json").read_text())
    assert ev["environment"]["device"].startswith("cuda") and 0 <= ev["clean"]["correct"] <= ev["clean"]["total"]


def test_autoattack_on_cuda_keeps_the_callers_random_stream():
    # A linear model: its points fall to the first stage (APGD-CE), so the costly later stages have nothing to do
    # (a random-weight network keeps some points through all four: minutes).
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).cuda().eval()
    x = torch.rand(6, 3, 32, 32, device="cuda")
    with torch.no_grad():
        y = model(x).argmax(1)  # every point correct, so AutoAttack has work to do
    state = torch.cuda.get_rng_state()
    attack = create_attack("autoattack", eps=8 / 255, seed=0)
    x_adv = attack(model, x, y)
    assert torch.equal(state, torch.cuda.get_rng_state())
    assert x_adv.device.type == "cuda" and x_adv.shape == x.shape
    assert (x_adv - x).abs().max().item() <= 8 / 255 + 1e-6
    stages = attack.last_robust_by_attack
    assert stages is not None and stages["clean"] == 1.0 and "apgd-ce" in stages
    with torch.no_grad():
        robust = (model(x_adv).argmax(1) == y).float().mean().item()
    assert robust == pytest.approx(min(stages.values()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_nccl_available(), reason="this torch has no NCCL")
def test_one_process_nccl_group_runs_a_ddp_syncbn_step():
    import torch.distributed as tdist

    device = torch.device("cuda", 0)
    tdist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1, timeout=timedelta(seconds=60)
    )
    try:
        info = dist.DistInfo(rank=0, world_size=1, local_rank=0, enabled=True)
        cfg = parse_config({"device": "cuda", "speed": {"sync_bn": True, "channels_last": True}})
        student = create_model("resnet8", num_classes=10, mean=[0.5] * 3, std=[0.25] * 3).to(device)
        teacher = create_model("resnet8", num_classes=10, mean=[0.5] * 3, std=[0.25] * 3).to(device).eval()
        model, teacher_fn = prepare_models(cfg, student, teacher, device, info)
        assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        x = torch.rand(8, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (8,), device=device)
        model.train()
        out = create_method("dard", attack={"steps": 2})(model, teacher_fn, x, y)
        out.loss.backward()
        grads = [p.grad for p in model.module.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert dist.sum_over_ranks({"a": 1.5, "b": 2.0}, info, device) == {"a": 1.5, "b": 2.0}
        dist.agree(True, "unused", info, device)
        with pytest.raises(Exception, match="stop here"):
            dist.agree(False, "stop here", info, device)
    finally:
        tdist.destroy_process_group()


def _syncs(fn) -> int:
    """Host syncs ``fn`` makes on CUDA (counted through torch's sync debug mode, which warns on each)."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_dpgd_syncs_do_not_grow_with_its_steps():
    """No host sync inside the attack loop: DPGD's sets are masks on CUDA (the CPU selects rows, no sync there)."""
    net = create_model("resnet8", num_classes=10, in_channels=3).cuda().eval()
    x = torch.rand(16, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (16,), device="cuda")
    few, many = create_attack("dpgd", steps=2), create_attack("dpgd", steps=6)
    few(net, x, y), many(net, x, y)  # warm-up (cuDNN autotuning)
    assert _syncs(lambda: few(net, x, y)) == _syncs(lambda: many(net, x, y))


@pytest.mark.slow
def test_training_with_cuda_graphs_on_cuda(tmp_path):
    """speed.compile_mode reduce-overhead (CUDA graphs) through the training loop, equal to eager to rounding."""
    method = {"name": "dard", "params": {"attack": {"steps": 2, "step_size": 0.05}}}
    teacher = train(parse_config(_cuda_config("teacher")), tmp_path / "teacher")
    runs = {}
    for name, speed in [("eager", {}), ("graphs", {"compile": True, "compile_mode": "reduce-overhead"})]:
        cfg = _cuda_config(name, method=method, teacher={"checkpoint": str(teacher / "best.safetensors")}, speed=speed)
        run = train(parse_config(cfg), tmp_path / name)
        runs[name] = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert runs["graphs"]["train_loss"] == pytest.approx(runs["eager"]["train_loss"], rel=1e-2)
