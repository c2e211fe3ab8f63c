"""One threat model end to end: the run's ``norm`` reaches the training attack, validation, the suite and
AutoAttack; an attack of another norm is refused in one line; an L2 run is evaluated at L2."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import assert_one_line_error, run_cli, tiny_run_config

from dard.config import parse_config
from dard.config.read import build_method
from dard.errors import DardError
from dard.evaluation.labels import QUICK_SUITE
from dard.evaluation.suite import build_suite, quick_suite


def test_the_suite_runs_in_the_threat_models_norm():
    suite = build_suite([*QUICK_SUITE, "tpgd-kl", "autoattack"], eps=0.5, norm="linf")
    assert all(str(a.norm).lower() == "linf" for a in suite.values())
    l2 = build_suite([*quick_suite("l2"), "tpgd-kl", "autoattack"], eps=0.5, norm="l2")
    assert "cw-linf" not in l2 and l2["autoattack"].norm == "L2"
    assert {k: a.norm.lower() for k, a in l2.items() if k != "pgd-large"} == dict.fromkeys(
        ["fgsm", "pgd20", "pgd-ll", "bim", "dpgd", "tpgd-kl", "autoattack"], "l2"
    )
    assert l2["pgd-large"].norm == "linf"  # the sanity check keeps its own ball, outside the threat model


def test_an_l2_attack_stays_in_the_l2_ball():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    x = torch.rand((5, 3, 4, 4))
    y = torch.zeros(5, dtype=torch.long)
    for label, attack in build_suite(["fgsm", "pgd20", "pgd-ll", "bim", "dpgd"], eps=0.3, norm="l2").items():
        delta = (attack(model, x, y) - x).flatten(1)
        assert delta.norm(dim=1).max() <= 0.3 + 1e-5 and delta.abs().max() > 0.3 / 4, label


@pytest.mark.parametrize(
    "labels, norm, needle",
    [
        (["cw-linf"], "l2", "cw-linf: attack 'cw' is Linf only, but the threat model is L2"),
        (["cw"], "l2", "cw-linf: attack 'cw' is Linf only"),
    ],
)
def test_an_attack_of_another_norm_is_refused(labels, norm, needle):
    with pytest.raises(DardError) as e:
        build_suite(labels, eps=0.5, norm=norm)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_spec_naming_another_norm_is_refused():
    with pytest.raises(DardError, match="is set to norm 'l2', but the threat model is Linf"):
        build_suite(["pgd20"], eps=0.1, overrides={"pgd20": {"norm": "l2"}})
    with pytest.raises(  # as the config is read, as dard train said it
        DardError, match="^method: .*set it at the top of the config instead \\(--set norm=l2; dard eval --norm\\)"
    ):
        parse_config({"method": {"name": "sat", "params": {"attack": {"norm": "l2"}}}, "eps": 0.5})


def test_the_run_norm_reaches_the_training_attack():
    linf = build_method(parse_config({"method": {"name": "dard"}, "teacher": {"checkpoint": "x"}}))
    assert linf.attack.norm == "linf"
    l2 = build_method(parse_config({"method": {"name": "dard"}, "norm": "L2", "eps": 0.5}))
    assert l2.attack.norm == "l2" and l2.config()["attack"]["norm"] == "l2" and l2.attack.eps == 0.5
    assert build_method(parse_config({"method": {"name": "trades"}, "norm": "l2", "eps": 0.5})).attack.norm == "l2"
    # an L2 run's default suite leaves out the Linf-only attack; one given explicitly is checked at the start
    assert parse_config({"norm": "l2", "eps": 0.5}).eval.attacks == [a for a in QUICK_SUITE if a != "cw-linf"]
    with pytest.raises(DardError, match="eval.attacks: cw-linf: attack 'cw' is Linf only"):  # refused as it is read
        parse_config({"norm": "l2", "eps": 0.5, "eval": {"attacks": ["cw"]}})


def test_an_l2_run_with_a_linf_only_attack_is_refused_before_it_starts(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(tiny_run_config(norm="l2", eval={"attacks": ["fgsm", "cw-linf"]})))
    proc = run_cli("train", "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "eval.attacks: cw-linf: attack 'cw' is Linf only, but the threat model is L2")
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.slow
def test_an_l2_sat_run_trains_and_is_evaluated_at_l2(tmp_path):
    cfg = tmp_path / "c.yaml"
    run = tmp_path / "run"
    cfg.write_text(json.dumps(tiny_run_config(norm="l2", eps=0.5, method={"name": "sat", "params": {}})))
    proc = run_cli("train", "--config", str(cfg), "--out", str(run))
    assert proc.returncode == 0, proc.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["method"]["attack"]["norm"] == "l2" and info["method"]["attack"]["eps"] == 0.5
    rec = json.loads((run / "eval" / "best.json").read_text())
    assert rec["threat_model"] == {"norm": "l2", "eps": 0.5}
    assert rec["attacks"]["fgsm"]["config"]["norm"] == "l2" and rec["attacks"]["fgsm"]["max_perturbation"] <= 0.5 + 1e-5
    assert "L2 eps=0.5" in proc.stdout and "/255" not in proc.stdout  # an L2 radius is no number of pixel levels
    # `dard eval` of the run takes its norm; --norm overrides it with a note
    ev = run_cli("eval", str(run), "--attacks", "fgsm", "--no-progress")
    assert ev.returncode == 0 and "threat: L2 eps=0.5" in ev.stdout, ev.stderr
    ev = run_cli("eval", str(run), "--attacks", "fgsm", "--norm", "linf", "--no-progress")
    assert "note: --norm linf differs from the run's norm l2" in ev.stdout and "threat: Linf" in ev.stdout


def test_a_record_without_a_threat_model_attack_states_the_runs_threat_model():
    # a suite of sanity checks alone (`dard eval RUN --attacks pgd-large`; the schema refuses such an eval.attacks)
    # or none recorded Linf eps 0, so `dard report` refused the run beside others of its own threat model
    # ("linf eps 0 (run)"); the final evaluation and `dard eval` pass the run's (norm, eps)
    from dard.evaluation.suite import build_suite, evaluate

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(4, 1, 2, 2), torch.tensor([0, 1, 2, 0])
    assert evaluate(model, x, y, {}, progress=False).threat_model == {"norm": "linf", "eps": 0.0}  # none given
    rec = evaluate(model, x, y, {}, progress=False, threat_model=("l2", 0.5))
    assert rec.threat_model == {"norm": "l2", "eps": 0.5}
    sanity = build_suite(["pgd-large"], eps=0.5, norm="l2")
    assert evaluate(model, x, y, sanity, progress=False, threat_model=("l2", 0.5)).threat_model["norm"] == "l2"
