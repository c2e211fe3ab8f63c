"""What `dard train` says: a header (device, threads, precision, speed switches, split sizes, run folder, estimated
time) and one line per epoch, with progress bars off and stdout not a terminal (a log)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.cli_checks import config_file
from tests.conftest import run_cli

from dard.training.announce import duration


@pytest.mark.slow
def test_train_prints_a_header_and_a_line_per_epoch_into_a_log(tmp_path):
    out = tmp_path / "runs" / "said"
    proc = run_cli("train", "--config", config_file(tmp_path, optim={"epochs": 2}), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = [ln for ln in lines if ln.startswith("[said] ") and " epoch " not in ln]
    assert header[0] == f"[said] run folder {out} (new); method natural, model small_cnn, seed 0, 2 epochs of 2 steps"
    assert re.fullmatch(
        r"\[said\] device cpu \(.*1 thread\); precision fp32; channels_last on; compile off", header[1]
    ), header[1]
    assert header[2] == "[said] data digits: train 128 (data.train_subset 128), val 64, test 32 images; eps 25.5/255"
    assert re.fullmatch(
        r"\[said\] estimate ~\d+ s \(train \d+ s \+ test evaluation \d+ s; the default rate for cpu, 5 GMAC/s: "
        r"nothing measured yet\)",
        header[3],
    ), header[3]
    epochs = [ln for ln in lines if re.match(r"\[said\] epoch \d: ", ln)]
    assert len(epochs) == 2
    assert re.fullmatch(
        r"\[said\] epoch 1: loss \d\.\d{4} clean acc \d\.\d{3} val clean \d\.\d{3} robust \d\.\d{3} "
        r"\(\d+ s, 1 of 2 epochs; ~\d+ s left\)",
        epochs[0],
    ), epochs[0]
    assert lines.index(header[-1]) < lines.index(epochs[0])


@pytest.mark.slow
def test_a_resumed_run_says_where_it_resumes_and_estimates_at_its_own_rate(tmp_path):
    out = tmp_path / "runs" / "again"
    config = config_file(tmp_path, optim={"epochs": 1})
    assert run_cli("train", "--config", config, "--out", str(out), cwd=tmp_path).returncode == 0
    proc = run_cli("train", "--resume", str(out), "--epochs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"[again] run folder {out} (resumes at epoch 2)" in proc.stdout
    assert "its own throughput so far" in proc.stdout


def test_duration():
    assert [duration(s) for s in (0.4, 59, 119.6, 3000, 7300)] == ["0 s", "59 s", "120 s", "50 min", "2.0 h"]


def _uncosted_announcer(tmp_path, monkeypatch):
    """A natural tiny run's Announcer whose cost model fails, checked to say so; with an epoch row for it."""
    import torch
    from tests.conftest import tiny_config

    import dard.training.announce as announce
    from dard.config import parse_config
    from dard.errors import DardError
    from dard.run_dir import EpochMetrics, Progress, RunDir
    from dard.training.cost import DataSizes

    def no_model(*args, **kwargs):
        raise DardError("model 'x' cannot be built here")

    monkeypatch.setattr(announce, "run_cost", no_model)
    cfg = parse_config(tiny_config())
    sizes = DataSizes(train=128, val=64, test=32, classes=10, shape=(1, 8, 8))
    said = announce.Announcer(cfg, RunDir(tmp_path / "run"), sizes, torch.device("cpu"))
    assert said.cost == announce.CostUnavailable("model 'x' cannot be built here")
    assert said.header(Progress(epoch=0, batch=0))[-1] == "estimate unavailable (model 'x' cannot be built here)"
    row = EpochMetrics(epoch=1, lr=0.1, train_loss=0.5, train_acc=0.5, images_per_s=100.0)
    assert said.epoch_line(row, started=0.0).endswith("~0 s left)")
    return said, row


def test_a_run_whose_cost_cannot_be_estimated_says_why_and_trains(tmp_path, monkeypatch):
    """The cost model's failure is a typed result (CostUnavailable), shown in the header; the epoch lines then
    leave the time left at 0 rather than failing."""
    _uncosted_announcer(tmp_path, monkeypatch)


def test_the_epoch_line_says_which_input_its_training_accuracy_is_on(tmp_path, monkeypatch):
    """The clean batch for natural, TRADES and AdaAD (their LossOutput.logits), else the adversarial one: it said
    'acc' alone, so AdaAD's clean 0.8 read beside SAT's adversarial 0.4."""
    from tests.conftest import tiny_config

    from dard.config import parse_config
    from dard.methods import create_method

    said, row = _uncosted_announcer(tmp_path, monkeypatch)
    assert " loss 0.5000 clean acc 0.500 (" in said.epoch_line(row, started=0.0)  # natural
    for name, acc in [("sat", "adv"), ("ard", "adv"), ("rslad", "adv"), ("dard", "adv"), ("trades", "clean")]:
        said.cfg = parse_config(tiny_config(method={"name": name}))
        assert f" loss 0.5000 {acc} acc 0.500 (" in said.epoch_line(row, started=0.0), name
    said.method = create_method("adaad")
    assert " clean acc " in said.epoch_line(row, started=0.0)


def test_an_l2_budget_is_a_plain_number_not_pixel_levels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An L2 eps of 0.5 was announced as "eps 127.5/255", which means nothing for an L2 radius; Linf keeps 8/255."""
    import torch
    from tests.conftest import tiny_config

    import dard.training.announce as announce
    from dard.config import parse_config
    from dard.errors import DardError
    from dard.run_dir import Progress, RunDir
    from dard.training.cost import DataSizes

    def no_cost(*args: object, **kwargs: object) -> None:
        raise DardError("not measured here")

    monkeypatch.setattr(announce, "run_cost", no_cost)
    sizes = DataSizes(train=128, val=64, test=32, classes=10, shape=(1, 8, 8))
    for norm, eps, said in (("l2", 0.5, "eps 0.5 (L2)"), ("linf", 8 / 255, "eps 8/255")):
        cfg = parse_config({**tiny_config(), "norm": norm, "eps": eps})
        header = announce.Announcer(cfg, RunDir(tmp_path / norm), sizes, torch.device("cpu")).header(Progress())
        assert header[2].endswith(f"test 32 images; {said}"), header[2]


def test_a_training_attack_at_another_eps_is_named_in_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``method.params.attack.eps`` at 16/255 beside a threat model of 8/255 (deliberate in the field) was in run.json
    and the report, but the header said "eps 8/255" alone; an attack at the run's eps adds nothing."""
    import torch
    from tests.conftest import tiny_config

    import dard.training.announce as announce
    from dard.config import parse_config
    from dard.config.read import build_method
    from dard.errors import DardError
    from dard.run_dir import Progress, RunDir
    from dard.training.cost import DataSizes

    def no_cost(*args: object, **kwargs: object) -> None:
        raise DardError("not measured here")

    monkeypatch.setattr(announce, "run_cost", no_cost)
    sizes = DataSizes(train=128, val=64, test=32, classes=10, shape=(1, 8, 8))
    for given, said in ((16 / 255, "eps 8/255 (training attack at 16/255)"), (None, "eps 8/255")):
        attack = {"name": "pgd", "steps": 2} | ({} if given is None else {"eps": given})
        cfg = parse_config({**tiny_config(), "eps": 8 / 255, "method": {"name": "sat", "params": {"attack": attack}}})
        folder = RunDir(tmp_path / str(given))
        header = announce.Announcer(cfg, folder, sizes, torch.device("cpu"), method=build_method(cfg)).header(
            Progress()
        )
        assert header[2].endswith(f"test 32 images; {said}"), header[2]
