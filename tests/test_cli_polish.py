"""The command line's own manners: the net under unexpected errors, --version, help for every option, the train
shortcuts, suite labels in `dard list`, and a teacher that does not fit the dataset caught before training."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import pytest
import torch
from tests.cli_checks import config_file, fails_cleanly, image_folder

import dard.cli
from dard import __version__
from dard.cli import build_parser, main


def _boom(args: argparse.Namespace) -> int:
    return 1 // 0


def test_unexpected_error_is_one_line_with_the_traceback_in_a_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(dard.cli.COMMANDS, "list", _boom)
    monkeypatch.setenv("DARD_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("DARD_DEBUG", raising=False)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("dard: error: internal error in `dard list`: ZeroDivisionError")
    (log,) = (tmp_path / "logs").iterdir()
    assert str(log) in lines[0]
    text = log.read_text()
    assert "Traceback" in text and "_boom" in text and "ZeroDivisionError" in text


@pytest.mark.parametrize("how", ["flag-before", "flag-after", "env"])
def test_debug_prints_the_traceback_instead(how, monkeypatch):
    monkeypatch.setitem(dard.cli.COMMANDS, "list", _boom)
    monkeypatch.delenv("DARD_DEBUG", raising=False)
    argv = {"flag-before": ["--debug", "list"], "flag-after": ["list", "--debug"], "env": ["list"]}[how]
    if how == "env":
        monkeypatch.setenv("DARD_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(argv)


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"dard {__version__}"


def test_every_option_has_help():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {a.option_strings or a.dest}"
        for name, command in sub.choices.items()
        for a in command._actions
        if not a.help
    ]
    assert missing == []


def test_train_device_and_download_flags_set_the_config(tmp_path, monkeypatch):
    seen = {}

    def fake_train(cfg, out, **kw):
        seen["cfg"] = cfg
        return Path(out)

    monkeypatch.setattr("dard.training.train", fake_train)
    assert main(["train", "--config", config_file(tmp_path), "--device", "cpu", "--download"]) == 0
    assert seen["cfg"].device == "cpu" and seen["cfg"].data.download is True


def test_train_shortcut_options_take_their_value_as_given(tmp_path, monkeypatch, capsys):
    # shortcuts were turned into `--set key=value` text and read as YAML: `--teacher "runs/t #1"` named the folder
    # runs/t (a comment cut off: another run's teacher, in silence), `--data-dir yes` was the boolean true
    seen = {}

    def fake_train(cfg, out, **kw):
        seen["cfg"] = cfg
        return Path(out)

    monkeypatch.setattr("dard.training.train", fake_train)
    argv = ["train", "--config", config_file(tmp_path), "--out", str(tmp_path / "r")]
    assert main([*argv, "--data-dir", "yes", "--model", "null", "--teacher", "runs/t #1", "--device", "cpu"]) == 0
    cfg = seen["cfg"]
    assert (cfg.data.dir, cfg.model.arch, cfg.teacher.checkpoint) == ("yes", "null", "runs/t #1")
    # a key given by its shortcut and by --set: one line naming both, not the one applied last
    fails_cleanly(capsys, tmp_path, [*argv, "--epochs", "2", "--set", "optim.epochs=3"], "--epochs and --set")


@pytest.mark.parametrize("device", ["meta", "xpu", "vulkan", "privateuseone", "mps", "cuda:-1", "CPU", "cpu:1"])
def test_devices_dard_cannot_run_on_are_one_line(device, tmp_path, capsys, monkeypatch):
    # torch.device() parses many names; meta, xpu, vulkan, ... failed inside the run as internal errors
    import torch

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)  # as on every machine but a Mac's
    root = tmp_path / "w"
    root.mkdir()
    cfg = config_file(root)
    fails_cleanly(capsys, root, ["train", "--config", cfg, "--device", device, "--out", str(root / "r")], device)
    fails_cleanly(
        capsys,
        root,
        ["eval", "--model", "small_cnn", "--weights", cfg, "--normalization", "none", "--device", device],
        device,
    )


def test_list_shows_suite_labels_and_attack_classes(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "suite labels" in out and "pgd20" in out and "pgd-large" in out
    assert "attacks:" in out and "kl_pgd" in out


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"side": 8, "mode": "RGB"}, "teacher takes 1 channels"),
        ({"side": 8, "classes": 3}, "teacher has 10 classes"),
        ({"side": 1}, "teacher (small_cnn) needs images of at least 2x2"),
    ],
)
def test_teacher_that_does_not_fit_the_data_is_caught_before_training(data, needle, finished_run, tmp_path, capsys):
    """A 1-channel, 10-class digits teacher with RGB images, 3 classes, or images too small for it."""
    teacher = Path(shutil.copytree(finished_run, tmp_path / "teacher"))
    folder = image_folder(tmp_path / "data", **data)
    cfg = config_file(
        tmp_path, data={"name": "folder", "dir": str(folder), "train_subset": None, "test_subset": None, "val_size": 3}
    )
    argv = ["train", "--config", cfg, "--method", "dard", "--teacher", str(teacher), "--model", "mlp"]
    fails_cleanly(capsys, tmp_path, [*argv, "--set", "optim.batch_size=4", "--out", str(tmp_path / "new")], needle)


def test_debug_keeps_bad_input_to_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    """--debug unmasks unexpected errors only: bad input stays one line and exit 2, no traceback."""
    monkeypatch.delenv("DARD_DEBUG", raising=False)
    fails_cleanly(capsys, tmp_path, ["--debug", "train", "--set", "optim.lrr=0.1"], "optim.lrr: unknown key")
    monkeypatch.setenv("DARD_DEBUG", "1")
    fails_cleanly(capsys, tmp_path, ["eval", str(tmp_path / "missing")], "missing")


def test_build_outputs_are_ignored_by_git():
    """`pip install .` builds in the checkout (setuptools' build/); git ignores it and dist/."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    for path in ("build/lib/dard/cli.py", "dist/dard-0.1.0-py3-none-any.whl"):
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=root, check=False)
        assert done.returncode == 0, f"{path} is not ignored"


def test_more_threads_than_cores_are_kept_and_said_once(monkeypatch, capsys):
    # speed.threads up to 4096 was taken in silence: a config from a bigger machine made every step slower here
    from dard.runtime import configure_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS")  # tests/conftest.py sets it
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        configure_threads(3)
        configure_threads(3)
        assert torch.get_num_threads() == 3
        configure_threads(None)  # the default: every core the process may use
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert capsys.readouterr().err.count("speed.threads 3 is more than the 1 core(s)") == 1


def test_default_jobs_count_the_cores_the_process_may_use(monkeypatch):
    # dard experiment's default --jobs took os.cpu_count(): two workers on a job given one core of a big machine
    from dard.experiment.pool import jobs_for

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5}, raising=False)
    assert jobs_for("cpu", None) == 1 and jobs_for("cpu", 3) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert jobs_for("cpu", None) == 2


def test_unset_threads_follow_omp_num_threads_and_another_value_is_ignored_once(monkeypatch, capsys):
    # speed.threads unset took every core whatever OMP_NUM_THREADS said: torchrun's 1 per process, a shared
    # machine's share of a job
    from dard import runtime

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(runtime, "_IGNORED_OMP", set())
    cases = {"3": 3, " 1 ": 1, "0004": 4, "abc": 2, "0": 2, "4097": 2, "1" * 5000: 2, "-1": 2, "2.5": 2, "": 2}
    for value, expected in [*cases.items(), ("abc", 2)]:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert runtime.default_threads() == expected, value
    err = capsys.readouterr().err
    assert err.count("OMP_NUM_THREADS='abc' is not an integer in 1-4096; ignored") == 1  # once, asked twice
    assert err.count("dard: note: OMP_NUM_THREADS=") == 6 and max(map(len, err.splitlines())) < 300
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        runtime.configure_threads(None)
        assert torch.get_num_threads() == 3
        runtime.configure_threads(1)  # the config's own wins
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "dard: note: OMP_NUM_THREADS 3 is more than the 2 core(s)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, needle, help_of",
    [
        (["eval", "--n", "abc"], "argument --n: invalid int value: 'abc'", "dard eval"),
        (["eval", "--n", "1\x1b[2J"], "\\x1b[2J", "dard eval"),  # a terminal escape is shown, not acted on
        (["trian"], "invalid choice: 'trian'", "dard"),
        (["eval", "--bogus"], "unrecognized arguments: --bogus", "dard eval"),
        (["export", "run"], "the following arguments are required: --out", "dard export"),
        ([], "the following arguments are required: command", "dard"),
    ],
)
def test_usage_errors_are_one_line_naming_the_commands_help(argv, needle, help_of, capsys):
    # argparse printed its usage block, then `dard eval: error: ...`: not the one `dard: error:` line of bad input
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("dard: error: "), err
    assert needle in err and f"(`{help_of} --help` lists the options)" in err
