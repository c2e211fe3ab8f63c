"""`dard eval RUN` takes the run's own dataset, eps and normalisation; external weights must name their
normalisation; `dard train` ends with the test table and keeps a redirected log short."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from tests.conftest import REPO, assert_one_line_error, run_cli, tiny_config

from dard.config import load_config, parse_config
from dard.evaluation.suite import EvalRecord
from dard.models import create_model
from dard.training import train
from dard.training.naming import name_run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """A tiny digits run at eps 0.1 (not the 8/255 default of `dard eval`)."""
    run = tmp_path_factory.mktemp("evalrun") / "run"
    train(parse_config(tiny_config(eval={"attacks": ["fgsm"], "checkpoints": ["best"]})), run)
    return run


@pytest.mark.slow
def test_eval_of_a_run_uses_its_dataset_and_eps(digits_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rec.json"
    proc = run_cli("eval", str(digits_run), "--attacks", "fgsm,pgd20", "--n", "50", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    rec = EvalRecord.from_dict(json.loads(out.read_text()))
    assert rec.data["name"] == "digits" and rec.threat_model["eps"] == 0.1
    assert rec.attacks["pgd20"].config["step_size"] == 0.025  # eps / 4
    assert rec.model["checkpoint"] == "best"
    header = proc.stdout.splitlines()[0]
    assert "best checkpoint, epoch 1" in header and "digits test" in header and "eps=0.10000" in header
    assert "note:" not in proc.stdout
    assert "95% CI" in proc.stdout and "pgd20" in proc.stdout


@pytest.mark.slow
def test_flags_that_differ_from_the_run_are_noted(digits_run: Path) -> None:
    proc = run_cli("eval", str(digits_run / "best.safetensors"), "--eps", "8/255", "--attacks", "fgsm", "--n", "9999")
    assert proc.returncode == 0, proc.stderr
    assert "note: --eps 8/255 differs from the run's eps 0.1 (25.50/255)" in proc.stdout
    # more images than the split has: every one is evaluated, and the line says so (the header's "first 360" alone)
    assert "note: --n 9999 is more than the 360 test images of digits: all 360 are evaluated" in proc.stdout
    assert "eps=0.03137" in proc.stdout
    proc = run_cli("eval", str(digits_run), "--normalization", "none", "--attacks", "fgsm", "--n", "4")
    assert_one_line_error(proc, "--normalization none contradicts the checkpoint", "(dataset)")


def test_external_weights_need_their_normalisation(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.save(create_model("small_cnn", num_classes=10, in_channels=1).state_dict(), weights)
    proc = run_cli("eval", "--model", "small_cnn", "--weights", str(weights), "--data", "digits")
    assert_one_line_error(proc, "--weights needs --normalization dataset|none", "'dataset' if", "'none' if")
    ok = run_cli(
        "eval", "--model", "small_cnn", "--weights", str(weights), "--normalization", "none", "--data", "digits",
        "--attacks", "fgsm", "--n", "8", "--eps", "0.1", "--no-progress",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def test_an_l2_evaluation_needs_its_eps(tmp_path: Path, finished_run: Path) -> None:
    # the default 8/255 (or a Linf run's eps) is an Linf budget: at L2 it is a radius of 0.03, next to no perturbation,
    # and the evaluation measured that in silence
    weights = tmp_path / "w.pt"
    torch.save(create_model("small_cnn", num_classes=10, in_channels=1).state_dict(), weights)
    argv = ["--weights", str(weights), "--normalization", "none", "--model", "small_cnn", "--data", "digits"]
    proc = run_cli("eval", *argv, "--norm", "l2", "--attacks", "fgsm", "--n", "4")
    assert_one_line_error(proc, "--norm l2 needs --eps: the default 8/255 is an Linf budget")
    proc = run_cli("eval", str(finished_run), "--norm", "l2", "--attacks", "fgsm", "--n", "4")
    assert_one_line_error(proc, "--norm l2 needs --eps: the run's eps 0.1 is its Linf budget")
    ok = run_cli("eval", *argv, "--norm", "l2", "--eps", "0.5", "--attacks", "fgsm", "--n", "4", "--no-progress")
    assert ok.returncode == 0 and "L2 eps=0.5" in ok.stdout, ok.stderr
    # an L2 radius and perturbation size are plain norms: "127.50/255" meant nothing
    assert "/255" not in ok.stdout, ok.stdout
    assert re.search(r"^fgsm .* 0\.\d+ +\d+\.\d$", ok.stdout, re.M), ok.stdout  # max |d|, an L2 norm


@pytest.mark.slow
def test_train_prints_its_test_table_and_keeps_a_piped_log_short(tmp_path: Path) -> None:
    """The demo's base config with progress on, output piped (not a terminal): one summary line per epoch, no
    carriage returns, then the final test table; the run is named after its --out folder."""
    out = tmp_path / "my-run"
    config = REPO / "src" / "dard" / "experiments" / "_scales" / "digits.yaml"
    proc = run_cli(
        "train", "--config", str(config), "--method", "sat", "--out", str(out), "--epochs", "2",
        "--set", "progress=true", "--set", "device=cpu", "--set", "data.train_subset=256",
        "--set", "data.test_subset=64",
        "--set", "eval.autoattack_subset=8", "--set", "eval.eps_sweep=[0.1]", "--set", "eval.attacks=[fgsm,pgd20]",
        "--set", "eval.checkpoints=[best]", "--set", "eps=0.3",  # AutoAttack then fools the 8 images at once
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    log = proc.stdout + proc.stderr
    assert "\r" not in log
    assert len(log.splitlines()) <= 2 * 3 + 30, log  # 2 epochs of at most 3 lines, the tables and their headers
    assert "[my-run] epoch 1:" in log and "[my-run] epoch 2:" in log
    table = proc.stdout.split("test evaluation, best checkpoint", 1)[1]
    for row in ("clean", "fgsm", "pgd20", "worst-case", "AutoAttack on the first 8 test images", "autoattack"):
        assert row in table, row
    info = json.loads((out / "run.json").read_text())
    assert info["name"] == "my-run"
    attack = info["method"]["attack"]
    assert (attack["eps"], attack["step_ratio"], attack["step_size"]) == (0.3, 0.25, 0.075)  # the step follows eps


def test_a_run_is_named_after_its_folder_or_what_it_is() -> None:
    base = load_config("cifar10/teacher_resnet56_sat")
    assert base.name == "teacher-resnet56-sat"
    same = load_config("cifar10/teacher_resnet56_sat", ["optim.epochs=2"])
    assert name_run(same, base, None, False) == (same.model_copy(update={"name": base.name}), Path("runs") / base.name)
    other = load_config("cifar10/teacher_resnet56_sat", ["model.arch=resnet8"])  # what `--model resnet8` sets
    cfg, folder = name_run(other, base, None, False)
    assert cfg.name == "sat-resnet8-cifar10" and folder == Path("runs/sat-resnet8-cifar10")
    cfg, folder = name_run(other, base, "out/t8", False)
    assert cfg.name == "t8" and folder == Path("out/t8")
    named = load_config("cifar10/teacher_resnet56_sat", ["model.arch=resnet8", "name=mine"])
    assert name_run(named, base, "out/t8", True)[0].name == "mine"  # an explicit --set name=... wins


def test_a_run_folder_without_its_config_says_what_is_missing(run, tmp_path, capsys):
    # a run folder without config.yaml was evaluated as a checkpoint on its own, on the default CIFAR-10, and the
    # error said "model takes 1 channels but dataset 'cifar10' has 3"
    from tests.cli_checks import fails_cleanly

    (run / "config.yaml").unlink()
    fails_cleanly(capsys, tmp_path, ["eval", str(run)], f"{run} holds a run's run.json", "but no config.yaml")
    lone = tmp_path / "lone"
    lone.mkdir()
    for suffix in ("safetensors", "json"):
        (lone / f"best.{suffix}").write_bytes((run / f"best.{suffix}").read_bytes())
    said = "dataset 'cifar10' has 3 (no --data given and no run config names one: dard eval took cifar10)"
    fails_cleanly(capsys, tmp_path, ["eval", str(lone / "best.json")], said)
