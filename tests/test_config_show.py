"""Finding config keys: `dard config show` prints every key with its default and description, and an unknown key
names the nearest valid ones and its section's keys in the one error line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.cli_checks import fails_cleanly

from dard.cli import main
from dard.config import load_config, parse_config
from dard.config.show import show_config


def _shown(capsys, *argv: str) -> str:
    capsys.readouterr()
    assert main(["config", "show", *argv]) == 0
    return capsys.readouterr().out


def test_config_show_lists_every_key_with_its_description(capsys):
    out = _shown(capsys)
    lines = out.splitlines()
    for key in ("autoattack_subset", "train_subset", "checkpoints", "test_subset", "sync_every"):
        assert any(line.strip().startswith(f"{key}:") for line in lines), key
    resolved = yaml.safe_load(out)
    assert {"autoattack_subset", "checkpoints", "attacks"} <= set(resolved["eval"])
    assert {"train_subset", "test_subset", "val_size"} <= set(resolved["data"])
    (line,) = [x for x in lines if x.strip().startswith("autoattack_subset:")]
    assert line.startswith("  autoattack_subset: null  # run AutoAttack on the first N test images")
    assert "8/255" in next(x for x in lines if x.startswith("eps:"))
    # an L2 radius in pixel levels ("127.5/255") meant nothing
    l2 = _shown(capsys, "--set", "norm=l2", "--set", "eps=0.5").splitlines()
    (eps_line,) = [x for x in l2 if x.startswith("eps:")]
    assert "/255" not in eps_line and "0.5 (L2)" in eps_line, eps_line
    # the method's own defaults, which the config leaves implicit, as a comment
    assert any("with the method's defaults" in x and "lam: 0.5" in x for x in lines)


def test_config_show_is_the_config_itself(capsys):
    """The output loads back as the same config (save it, pass it to `dard train --config`)."""
    out = _shown(capsys, "cifar10/dard_resnet18", "--set", "optim.lr=0.05")
    cfg = load_config("cifar10/dard_resnet18", ["optim.lr=0.05"])
    shown = yaml.safe_load(out)
    assert shown["model"]["kwargs"] == {}  # every key is listed, those left out of a dump when at their default too
    assert parse_config(shown).model_dump(mode="json") == cfg.model_dump(mode="json")
    assert "  lr: 0.05  # default 0.1" in out.splitlines()
    defaults = show_config(load_config(None)).splitlines()
    scaled = [line for line in defaults if line.startswith("  milestones: [6, 8]  #")]  # [30, 40] for 10 epochs
    assert len(scaled) == 1 and scaled[0].endswith("; default [30, 40]")
    rest = "\n".join(line for line in defaults if line not in scaled)
    assert "# default " not in rest and "; default " not in rest  # nothing else differs from the defaults


def test_config_show_of_a_run_folder_is_what_it_recorded(capsys, finished_run):
    out = _shown(capsys, str(finished_run))
    assert yaml.safe_load(out)["data"]["train_subset"] == 128
    assert f"of {finished_run}" in out.splitlines()[0]


def test_config_show_refuses_an_unknown_key_with_the_nearest_one(capsys):
    line = fails_cleanly(capsys, None, ["config", "show", "--set", "optim.lrr=0.1"], "optim.lrr: unknown key")
    assert "did you mean optim.lr?" in line
    assert "(optim has: epochs, batch_size, lr," in line


def test_unknown_key_suggestions(tmp_path, capsys):
    cases = {
        "optimm.lr=1": "did you mean optim?",
        "optim.eps=0.1": "did you mean optim.epochs or eps?",  # a near key and the same name in another section
        "eval.autoattack=5": "did you mean eval.autoattack_subset",
        "speed.foo=1": "speed.foo: unknown key (speed has: amp,",  # nothing near: the section's keys only
    }
    for override, needle in cases.items():
        fails_cleanly(capsys, tmp_path, ["train", "--set", override], needle)
    config = tmp_path / "c.yaml"
    config.write_text("data: {name: digits, train_subst: 10}\n")
    fails_cleanly(capsys, tmp_path, ["train", "--config", str(config)], "data.train_subst", "data.train_subset")


def test_a_key_one_level_up_names_where_it_belongs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``method.lam`` was refused listing method's keys (name, params) alone: a parameter of the named method, the
    validation attack or a model factory given one level up now names its place (``method.params.lam``)."""
    cases = {
        ("method.lam=0.25",): "method.lam: unknown key; did you mean method.params.lam?",
        ("lam=0.25",): "did you mean method.params.lam?",  # two levels up
        ("method.lamm=0.25",): "did you mean method.params.lam?",  # misspelt too
        ("method.name=trades", "method.beta=6"): "did you mean method.params.beta?",  # the named method's, not dard's
        ("method.attack={name: pgd}",): "did you mean method.params.attack or val.attack?",
        ("val.steps=5",): "val.steps: unknown key; did you mean val.attack.steps?",
    }
    for overrides, needle in cases.items():
        argv = [a for o in overrides for a in ("--set", o)]
        fails_cleanly(capsys, tmp_path, ["train", *argv], needle)
    line = fails_cleanly(capsys, tmp_path, ["train", "--set", "method.name=sat", "--set", "method.lam=1"], "method.lam")
    assert "did you mean" not in line  # sat has no lam
    config = tmp_path / "c.yaml"
    config.write_text("method: {name: trades, beta: 6}\n")
    fails_cleanly(capsys, tmp_path, ["train", "--config", str(config)], "did you mean method.params.beta?")


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.arch=resnet21", "model.arch: unknown model 'resnet21' (did you mean 'resnet32' or 'resnet20'?)"),
        ("data.name=mnist", "data.name: unknown dataset 'mnist'"),
        ("model.kwargs={widthh: 2}", "model.kwargs: model 'small_cnn': its factory takes no argument 'widthh'"),
        # the method's errors name its key, as dard train's do (an attack of another norm named no key at all)
        ("method.params={attack: {name: pgd, norm: l2}}", "method: attack 'pgd' is set to norm 'l2'"),
    ],
)
def test_config_show_refuses_a_model_or_dataset_dard_train_would_refuse(override, needle, capsys):
    # it showed them as a valid config (it built only the method), and dard train refused them in its first checks
    fails_cleanly(capsys, None, ["config", "show", "--set", override], needle)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["data.train_subset=5000"], "data.train_subset 5000 exceeds the 1293 training images left after"),
        (["eval.autoattack_subset=361"], "eval.autoattack_subset 361 exceeds the 360 test images evaluated"),
        (["optim.warmup_epochs=20"], "optim.warmup_epochs 20 is not below optim.epochs 10"),
        (["optim.epochs=5", "optim.milestones=[3, 7]"], "optim.milestones [7] are not before optim.epochs 5"),
        (["optim.schedule=cosine", "optim.gamma=0.5"], "optim.gamma applies to optim.schedule step only"),
        (["method.name=natural", "val.select_by=robust"], "val.select_by: robust picks method 'natural''s best"),
    ],
)
def test_config_show_refuses_what_dard_train_refuses_before_the_data(overrides, needle, capsys):
    # each was shown as a valid config, and dard train refused it in its first second (dard.training.preflight)
    fails_cleanly(capsys, None, ["config", "show", *(a for o in overrides for a in ("--set", o))], needle)


def test_config_show_leaves_the_teacher_out_and_a_run_folder_as_recorded(capsys, finished_run):
    # a distillation config is shown without its teacher (given by --teacher when it trains)
    assert main(["config", "show", "--set", "method.name=dard"]) == 0
    # a run folder's record is shown as it was made: a subset is not checked again against the data
    assert main(["config", "show", str(finished_run)]) == 0
    capsys.readouterr()
