"""Config validation: unknown keys and bad values are one-line errors naming the key."""

from __future__ import annotations

import pytest
import yaml
from tests.conftest import assert_one_line_error, run_cli

from dard.config import dump_config, load_config, parse_config
from dard.errors import DardError


def test_defaults_round_trip():
    cfg = parse_config({})
    again = parse_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert cfg.eps == pytest.approx(8 / 255)
    assert cfg.optim.milestones == [30, 40]


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"optim": {"lrr": 0.1}}, "optim.lrr: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"eps": 2}, "eps"),
        ({"eps": "8/0"}, "8/0"),
        ({"optim": {"schedule": "linear"}}, "optim.schedule"),
        ({"teacher": {"weights": "x.pt"}}, "weights needs arch"),
    ],
)
def test_bad_values_name_the_key(data, needle):
    with pytest.raises(DardError) as e:
        parse_config(data)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_eps_fraction_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("eps: 8/255\noptim: {epochs: 3}\n")
    cfg = load_config(p, ["optim.epochs=5", "method.params.lam=0.25", "data.name=cifar10"])
    assert cfg.eps == pytest.approx(8 / 255)
    assert cfg.optim.epochs == 5 and cfg.method.params == {"lam": 0.25} and cfg.data.name == "cifar10"


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {epochs: [1,\n")
    with pytest.raises(DardError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(DardError, match="mapping"):
        load_config(listy)
    with pytest.raises(DardError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("section", ["model.kwargs", "method.params", "val.attack"])
@pytest.mark.parametrize(
    "value, needle",
    [
        ("2020-01-01", "got a date"),
        ("2001-12-14t21:59:43.10-05:00", "got a datetime"),
        ("!!set {a, b}", "got a set"),
        ("!!binary aGVsbG8=", "got a bytes"),
        ("[1, {y: .nan}]", "x[1].y: a number must be finite"),
        ("{1: 2}", "x: keys must be strings"),
        ("&a [1, *a]", "x[1]: a list or mapping inside itself"),  # json.dumps: "Circular reference detected"
    ],
)
def test_free_form_sections_hold_plain_data(section, value, needle, tmp_path):
    # YAML reads dates, sets and bytes; the run took them and failed when it wrote its records (an internal error)
    head, key = section.split(".")
    p = tmp_path / "c.yaml"
    p.write_text(f"{head}:\n  {key}:\n    x: {value}\n")
    with pytest.raises(DardError) as e:
        load_config(p)
    assert section in str(e.value) and needle in str(e.value)
    p.write_text(f"{head}:\n  {key}:\n    x: [1, 2.5, a, true, {{y: null}}]\n")  # plain data is taken as it is
    sub = getattr(load_config(p), head)
    assert getattr(sub, key)["x"] == [1, 2.5, "a", True, {"y": None}]


def test_cli_config_error_is_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim: {epochs: 0}\n")
    proc = run_cli("train", "--config", str(p), "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "optim.epochs")
    assert not (tmp_path / "run").exists()


def test_shipped_configs_validate():
    from dard.packaged import CONFIGS_DIR, EXPERIMENTS_DIR

    files = sorted(CONFIGS_DIR.glob("**/*.yaml"))
    files += sorted((EXPERIMENTS_DIR / "_scales").glob("*.yaml"))  # experiment bases are run configs too
    assert len(files) > 10
    for f in files:
        load_config(f)
