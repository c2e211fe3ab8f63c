"""torchrun + DistributedDataParallel on the CPU (gloo): two processes equal one process on the same global batch.

The model is the BatchNorm-free MLP and the attack DPGD with per-sample Dice from the clean image, so every
image's adversarial example and loss term do not depend on which process holds it; the two runs may then
differ only by floating-point summation order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from tests.conftest import REPO, assert_one_line_error, run_cli, tiny_config

import dard.training.distributed as ddist
from dard.checkpoint import load_checkpoint
from dard.errors import DardError
from dard.io import save_tensors
from dard.models import create_model
from dard.training.deadline import TrainingStopped

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

KILL_AFTER_SAVES = """
import os, signal, sys
import dard.training.state as state
from dard.cli import main
real = state.save_tensors
count = {"n": 0}
def save_tensors(*a, **k):
    out = real(*a, **k)
    count["n"] += 1
    if count["n"] == int(os.environ["DARD_TEST_KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return out
state.save_tensors = save_tensors
sys.exit(main(sys.argv[1:]))
"""


def _torchrun(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_gloo_processes_with_kill_and_resume_match_one_process(tmp_path):
    torch.manual_seed(1)
    teacher = tmp_path / "teacher.safetensors"
    save_tensors(teacher, create_model("mlp", num_classes=10, in_channels=1).state_dict())
    cfg = tiny_config(
        name="ddp",
        model={"arch": "mlp"},
        optim={"epochs": 2, "batch_size": 64, "lr": 0.05},
        teacher={"arch": "mlp", "weights": str(teacher), "normalize": True},
        checkpoint_every_steps=3,
        method={"name": "dard", "params": {"attack": {"steps": 3, "step_size": 0.025, "reduction": "sample"}}},
        eval={"attacks": ["fgsm"], "checkpoints": ["last"]},
    )
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))

    single = tmp_path / "single"
    proc = run_cli("train", "--config", str(path), "--out", str(single))
    assert proc.returncode == 0, proc.stderr

    # 256 images / global batch 64 = 4 steps per epoch; snapshots at step 3, end of epoch 1 (4), 6, 8.
    # Rank 0 is killed while writing its 3rd snapshot (step 6: after the weights, before the pointer), so the
    # resume must continue from step 4 and rank 1 must have been stopped by torchrun.
    script = tmp_path / "killer.py"
    script.write_text(KILL_AFTER_SAVES)
    multi = tmp_path / "multi"
    killed = _torchrun(
        str(script), "train", "--config", str(path), "--out", str(multi), env_extra={"DARD_TEST_KILL_AT": "3"}
    )
    assert killed.returncode != 0
    assert json.loads((multi / "resume.json").read_text())["snapshot"] == "state-000000004"
    assert not (multi / "eval").exists()
    resumed = _torchrun("-m", "dard", "train", "--resume", str(multi))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("run finished") == 1  # rank 0 alone reports (and writes)

    a, b = _rows(single), _rows(multi)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [1, 2]
    for ra, rb in zip(a, b):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-5)  # summed over both ranks
        assert rb["train_acc"] == ra["train_acc"]
        assert rb["val_clean"] == ra["val_clean"] and rb["val_robust"] == ra["val_robust"]
    ma, _ = load_checkpoint(single / "last.safetensors", "cpu")
    mb, meta = load_checkpoint(multi / "last.safetensors", "cpu")
    assert meta["epoch"] == 2
    for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values()):
        torch.testing.assert_close(pb, pa, rtol=1e-4, atol=1e-6, msg=name)
    run = json.loads((multi / "run.json").read_text())
    assert run["environment"]["world_size"] == 2
    assert (
        json.loads((multi / "eval" / "last.json").read_text())["clean"]
        == json.loads((single / "eval" / "last.json").read_text())["clean"]
    )


@pytest.mark.slow
def test_global_batch_not_divisible_by_processes_is_a_one_line_error(tmp_path):
    cfg = tiny_config(optim={"batch_size": 63})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = _torchrun("-m", "dard", "train", "--config", str(path), "--out", str(tmp_path / "run"))
    assert proc.returncode != 0
    # rank 0 alone says it, first (torchrun then adds its own failure summary, which quotes the line)
    lines = [ln for ln in proc.stderr.splitlines() if "dard: error:" in ln]
    assert lines[0].startswith("dard: error:") and "must be divisible by the 2 processes" in lines[0], proc.stderr
    assert [ln for ln in lines if ln.startswith("dard: error:")] == lines[:1], proc.stderr
    assert any(ln.strip() == f"traceback : {lines[0]}" for ln in lines), proc.stderr


@pytest.mark.slow
def test_every_rank_leaves_the_process_group_before_the_test_evaluation(tmp_path, monkeypatch):
    # About 1 torchrun run in 40 ended with a SIGABRT ("terminate called without an active exception") in rank 1
    # at exit while rank 0 was still evaluating. Now every rank collects its garbage and leaves the group at the
    # same point (after the last snapshot's barrier), and rank 0 evaluates outside the group.
    import dard.training.loop as loop
    from dard.config import parse_config

    calls = []
    real_teardown, real_eval = loop.dist.teardown, loop.final_evaluation
    monkeypatch.setattr(loop.dist, "teardown", lambda info: (calls.append("teardown"), real_teardown(info)))
    monkeypatch.setattr(
        loop, "final_evaluation", lambda *a, **kw: (calls.append("final_evaluation"), real_eval(*a, **kw))
    )
    run = loop.train(parse_config(tiny_config(eval={"attacks": ["fgsm"]})), tmp_path / "run")
    assert calls == ["teardown", "final_evaluation"]
    assert (run / "eval" / "best.json").exists()


def _as_rank(monkeypatch, rank: int) -> None:
    """This process's environment as torchrun sets it for ``rank`` of 2."""
    for name, value in (("WORLD_SIZE", "2"), ("RANK", str(rank)), ("LOCAL_RANK", str(rank))):
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")


def test_under_torchrun_a_line_every_rank_has_is_said_by_rank_0_alone(tmp_path, monkeypatch):
    # A bad flag or config, read alike by every rank, was said once per rank (and an error agreed after a check
    # that failed on one rank only was "another process of this job failed its checks" on rank 0, which said it).
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(tiny_config(optim={"lr": "x"})))
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(tmp_path / "error.json"))
    _as_rank(monkeypatch, 1)
    for args, said in (
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "--config", str(bad), "--out", str(tmp_path / "r")], "optim.lr"),
    ):
        proc = run_cli(*args)
        assert (proc.returncode, proc.stderr) == (2, ""), proc.stderr
        # in the error file all the same: torchrun's summary may name this rank's failure first
        assert said in json.loads((tmp_path / "error.json").read_text())["message"]
    _as_rank(monkeypatch, 0)
    proc = run_cli("train", "--config", str(bad), "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "optim.lr")
    # torchrun's failure summary quotes the error file, which it read instead of "To enable traceback see: ..."
    assert json.loads((tmp_path / "error.json").read_text())["message"] == proc.stderr.strip()
    assert not (tmp_path / "r").exists()

    # a check failed on rank 1 alone: every rank raises rank 1's words, which rank 0 alone says
    monkeypatch.setitem(ddist._joining, "begun", True)
    monkeypatch.setattr(ddist.dist, "all_reduce", lambda t, op: t.fill_(1))
    monkeypatch.setattr(ddist.dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj, "R1"]))
    info = ddist.DistInfo(rank=0, world_size=2, enabled=True)
    with pytest.raises(DardError, match="^R1$") as agreed:
        ddist.agree(True, "", info, torch.device("cpu"))
    assert ddist.speaks(agreed.value)
    _as_rank(monkeypatch, 1)
    assert not ddist.speaks(agreed.value) and not ddist.speaks(None)
    assert ddist.speaks(DardError("this rank's own, after it began to join the group"))

    # --time-budget's stop (exit status 3 on every rank): rank 0 says it, and torchrun's summary quotes it
    import dard.training

    def stopped(*args, **kwargs):
        raise TrainingStopped(tmp_path / "r", 0, 1)

    monkeypatch.setattr(dard.training, "train", stopped)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tiny_config()))
    for rank in (1, 0):
        _as_rank(monkeypatch, rank)
        proc = run_cli("train", "--config", str(good), "--out", str(tmp_path / "r"), "--time-budget", "1h")
        line = json.loads((tmp_path / "error.json").read_text())["message"]
        assert line.startswith("dard: ") and line.endswith(f"continue with: dard train --resume {tmp_path / 'r'}")
        assert (proc.returncode, proc.stderr) == (3, "" if rank else line + "\n")


def test_a_rank_left_waiting_for_a_process_that_failed_says_no_internal_error(tmp_path, monkeypatch):
    # Rank 0's write failed (its own line); rank 1, waiting in DDP's broadcast, got gloo's "Connection closed by
    # peer" and said "internal error in `dard train` ... please report it" beside it.
    import dard.training.loop as loop

    def gone(*args, **kwargs):
        raise RuntimeError("[pair.cc:553] Connection closed by peer [127.0.0.1]:1. caused by a remote worker crashing")

    monkeypatch.setattr(loop, "open_run", gone)
    monkeypatch.setattr(ddist, "teardown", lambda info: None)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()))
    for rank in (1, 0):
        info = ddist.DistInfo(rank=rank, world_size=2, enabled=True)
        monkeypatch.setattr(ddist, "setup", lambda device, info=info: (info, device))
        _as_rank(monkeypatch, rank)
        proc = run_cli("train", "--config", str(cfg), "--out", str(tmp_path / "r"))
        if rank:
            assert (proc.returncode, proc.stderr) == (2, ""), proc.stderr
    assert_one_line_error(proc, "another process of this torchrun job stopped while rank 0 waited for it")
    assert "internal error" not in proc.stderr and not list(tmp_path.glob("r*"))


def test_commands_other_than_train_and_a_stray_world_size_are_refused_in_one_line(tmp_path, monkeypatch):
    # Under torchrun `dard report` (or export, eval, ...) ran once per process, each writing the same files; a
    # WORLD_SIZE left in the environment without torchrun was an internal error of torch's rendezvous.
    _as_rank(monkeypatch, 0)
    proc = run_cli("report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"))
    assert_one_line_error(proc, "dard report runs in one process, and torchrun started 2")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config()))
    monkeypatch.delenv("MASTER_ADDR")
    proc = run_cli("train", "--config", str(cfg), "--out", str(tmp_path / "r"))
    assert_one_line_error(proc, "WORLD_SIZE=2 in the environment with MASTER_ADDR unset", "unset WORLD_SIZE")
    monkeypatch.setenv("WORLD_SIZE", "two")
    assert_one_line_error(run_cli("list"), "WORLD_SIZE='two' in the environment is not a process count")
    assert not (tmp_path / "rep").exists() and not (tmp_path / "r").exists()


def test_a_resume_with_another_process_count_says_what_goes_on_and_what_does_not(run):
    # A run trained by 2 processes and resumed by 1 (or the other way) went on in silence.
    from dard.run_dir import RunDir
    from dard.training.stretch import other_process_count

    info = json.loads((run / "run.json").read_text())
    assert other_process_count(RunDir(run), 1) == []
    info["environment"]["world_size"] = 2
    (run / "run.json").write_text(json.dumps(info))
    (line,) = other_process_count(RunDir(run), 1)
    assert line.startswith("resumed with 1 process where the run trained with 2 processes: the global batch")
    assert other_process_count(RunDir(run), 2) == []
    info["stretches"] = [{"time": "t", "step": 2, "environment": {"world_size": 3}}]  # the latest stretch counts
    (run / "run.json").write_text(json.dumps(info))
    assert other_process_count(RunDir(run), 2)[0].startswith("resumed with 2 processes where the run trained with 3")
    assert other_process_count(RunDir(run), 3) == []
