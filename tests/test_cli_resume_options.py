"""`dard train --resume`: the options it refuses and names are derived from dard.training.resume's one list."""

from __future__ import annotations

from tests.cli_checks import fails_cleanly

from dard.cli.train import _resume_options
from dard.training.resume import may_change, shortcut_may_change


def test_the_resume_lists_say_what_a_resume_may_change():
    assert may_change("optim.epochs") and may_change("eval.attacks") and may_change("speed.threads")
    assert may_change("teacher.checkpoint") and not shortcut_may_change("teacher.checkpoint")
    assert not may_change("method.name") and not may_change("optim.lr") and not may_change("seed")


def test_help_and_refusal_name_the_options_a_resume_takes():
    assert _resume_options() == "--epochs, --set eval.*, --device, --data-dir, --download"


def test_refused_options_are_named_in_order_before_any_work(tmp_path, capsys):
    argv = ["train", "--resume", str(tmp_path / "run"), "--config", "c.yaml", "--teacher", "t", "--seed", "0"]
    line = fails_cleanly(capsys, tmp_path, [*argv, "--epochs", "3", "--out", str(tmp_path / "o")])
    assert (
        f"--resume continues {tmp_path / 'run'} as recorded: --config, --teacher, --seed, --out cannot change it (a "
        "resume may change --epochs, --set eval.*, --device, --data-dir, --download); start a new run for the rest"
    ) in line
