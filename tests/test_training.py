"""End-to-end training: every method for one short epoch, SIGKILL + resume equality, NaN stop."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from tests.conftest import REPO, tiny_config, tiny_run_config

from dard.checkpoint import load_checkpoint
from dard.config import parse_config
from dard.errors import DardError
from dard.methods import METHODS, list_methods
from dard.training import train


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("teacher") / "teacher"
    cfg = tiny_config(name="teacher", model={"arch": "resnet8"}, optim={"epochs": 2})
    train(parse_config(cfg), run)
    return run


def _read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("method", list_methods())
def test_every_method_trains_one_epoch(method, teacher_run, tmp_path):
    cfg = tiny_config(
        name=method,
        method={"name": method, "params": {"attack": {"steps": 2, "step_size": 0.05}}}
        if method != "natural"
        else {"name": method, "params": {}},
        # a teacher only where the method takes one: giving it to another is an error (test_reliability.py)
        teacher={"checkpoint": str(teacher_run / "best.safetensors")} if METHODS.get(method).needs_teacher else {},
    )
    run = train(parse_config(cfg), tmp_path / method)
    for name in [
        "config.yaml",
        "run.json",
        "metrics.jsonl",
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
        "resume.json",
        "eval/best.json",
        "eval/last.json",
    ]:
        assert (run / name).exists(), name
    rows = _read_metrics(run)
    assert len(rows) == 1 and 0 <= rows[0]["val_clean"] <= 1 and 0 <= rows[0]["val_robust"] <= 1
    assert all(torch.isfinite(torch.tensor(rows[0]["train_loss"])).tolist() for _ in [0])
    assert rows[0]["train_seconds"] > 0  # training-loop wall time, read by reports
    info = json.loads((run / "run.json").read_text())
    assert info["method"]["name"] == method
    assert info["environment"]["torch"] == torch.__version__
    rec = json.loads((run / "eval" / "best.json").read_text())
    assert set(rec["attacks"]) == {"fgsm", "pgd20"} and rec["data"]["n"] == 96
    model, meta = load_checkpoint(run / "best.safetensors")
    assert meta["model"]["arch"] == "small_cnn" and not model.training


@pytest.mark.slow
def test_teacher_is_required_and_must_match(tmp_path, teacher_run):
    with pytest.raises(DardError, match="needs a teacher"):
        train(parse_config(tiny_config(method={"name": "dard"})), tmp_path / "a")
    bad = tmp_path / "not_ckpt.safetensors"
    bad.write_bytes(b"hello, not a checkpoint")
    (tmp_path / "not_ckpt.json").write_text(
        json.dumps(
            {
                "format": "dard-checkpoint",
                "model": {"arch": "small_cnn", "num_classes": 10, "in_channels": 1, "mean": None, "std": None},
            }
        )
    )
    with pytest.raises(DardError, match="not a weights file"):
        train(parse_config(tiny_config(method={"name": "dard"}, teacher={"checkpoint": str(bad)})), tmp_path / "b")


@pytest.mark.slow
def test_existing_run_folder_is_not_overwritten(teacher_run):
    before = (teacher_run / "best.safetensors").read_bytes()
    with pytest.raises(DardError, match="already exists"):
        train(parse_config(tiny_config()), teacher_run)
    assert (teacher_run / "best.safetensors").read_bytes() == before


KILLER = textwrap.dedent("""
    import os, signal, sys
    import dard.training.state as state
    from dard.config import load_config
    from dard.training import train
    kill_at = int(sys.argv[3])
    original = state.save_tensors
    calls = {"n": 0}
    def save_tensors(path, tensors, metadata=None):
        # SIGKILL ourselves halfway through the kill_at-th snapshot: its weights are written, the pointer is not.
        out = original(path, tensors, metadata)
        if path.name == "student.safetensors":
            calls["n"] += 1
            if calls["n"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return out
    state.save_tensors = save_tensors
    train(load_config(sys.argv[1]), sys.argv[2])
""")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    import yaml

    cfg = tiny_config(
        name="resume",
        method={"name": "sat", "params": {"attack": {"steps": 2, "step_size": 0.05}}},
        optim={"epochs": 2, "batch_size": 32},
        checkpoint_every_steps=3,
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    killed = tmp_path / "killed"
    # 256 train images / 32 = 8 steps per epoch; snapshots at steps 3, 6, end of epoch 1 (8), 9, 12, ...
    # The 5th snapshot (step 12, mid epoch 2) is cut off after its weights: resume must start from step 9.
    proc = subprocess.run(
        [sys.executable, str(script), str(path), str(killed), "5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, proc.stderr
    assert not (killed / "eval").exists()
    pointer = json.loads((killed / "resume.json").read_text())
    assert pointer["snapshot"] == "state-000000009"
    # the mid-epoch snapshot counts the part of epoch 2 done before it, so a resumed run's time is not lost
    at_kill = json.loads((killed / "state-000000009" / "progress.json").read_text())["train_seconds"]
    assert at_kill > _read_metrics(killed)[0]["train_seconds"] > 0
    from tests.conftest import run_cli

    resumed = run_cli("train", "--resume", str(killed))
    assert resumed.returncode == 0, resumed.stderr
    straight = tmp_path / "straight"
    train(parse_config(cfg), straight)

    def strip(rows):
        return [{k: v for k, v in r.items() if k not in ("images_per_s", "train_seconds")} for r in rows]

    assert strip(_read_metrics(killed)) == strip(_read_metrics(straight))
    for which in ["best", "last"]:
        a = json.loads((killed / "eval" / f"{which}.json").read_text())
        b = json.loads((straight / "eval" / f"{which}.json").read_text())
        assert a["clean"] == b["clean"]
        assert {k: v["correct"] for k, v in a["attacks"].items()} == {k: v["correct"] for k, v in b["attacks"].items()}


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    import dard.training.loop as loop

    real_build = loop.build_method

    def poisoned(cfg):
        method = real_build(cfg)
        calls = {"n": 0}
        original_call = method.__call__

        class Poisoned(type(method)):
            def __call__(self, student, teacher, x, y):
                out = original_call(student, teacher, x, y)
                calls["n"] += 1
                if calls["n"] > 4:  # epoch 1 has 4 steps (256 / 64); poison epoch 2
                    out.loss = out.loss * float("nan")
                return out

        method.__class__ = Poisoned
        return method

    monkeypatch.setattr(loop, "build_method", poisoned)
    run = tmp_path / "nan"
    with pytest.raises(DardError, match=r"loss is nan at epoch 2 step 1.*last good checkpoint"):
        train(parse_config(tiny_config(optim={"epochs": 3})), run)
    model, meta = load_checkpoint(run / "last.safetensors")
    assert meta["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_resumed_epochs_rate_counts_only_the_images_of_its_own_stretch(tmp_path, monkeypatch):
    """The epoch row's images_per_s of an epoch resumed part-way: the images trained since the resume over the time
    since. It counted the whole epoch's, so a run resumed near an epoch's end recorded a rate many times too high
    (3684 images/s for a CPU run of 280), which the campaign's estimates then took as its measured rate."""
    import types

    import dard.training.loop as loop
    from dard.run_dir import RunDir
    from dard.training.deadline import TrainingStopped

    clock = [1000.0]  # the loop's clock: one second per training step, nothing else takes time
    step = loop._step

    def timed_step(*args):
        clock[0] += 1.0
        return step(*args)

    monkeypatch.setattr(loop, "time", types.SimpleNamespace(time=lambda: clock[0]))
    monkeypatch.setattr(loop, "_step", timed_step)
    cfg = parse_config(tiny_run_config(optim={"epochs": 1, "batch_size": 32}))  # 128 images: 4 full steps
    with pytest.raises(TrainingStopped):
        train(cfg, tmp_path / "r", stop_at=0.0, final_eval=False)  # a deadline already past: one step, a snapshot
    assert RunDir(tmp_path / "r").read_progress().batch == 1
    train(cfg, tmp_path / "r", resume=True, final_eval=False)
    (row,) = RunDir(tmp_path / "r").read_metrics()
    assert row.images_per_s == 32.0  # 3 steps of 32 images in 3 seconds (the whole epoch's 128 gave 42.7)
