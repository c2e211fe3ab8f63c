"""A campaign spread over machines: kept epoch checkpoints (the teacher ladder), an experiment's committed runs
folder, its status table and hours left, and the small scale's shape."""

from __future__ import annotations

import copy

import pytest
from tests.conftest import assert_one_line_error, run_cli, tiny_run_config
from tests.test_experiment import SPEC, STEP, _write

from dard.checkpoint import load_checkpoint
from dard.config import config_identity, parse_config
from dard.errors import DardError
from dard.experiment import load_experiment
from dard.experiment.estimate import Estimate, Estimator
from dard.experiment.plan import plan_runs
from dard.experiment.status import STATUS_FILE, campaign_status, hours_left, write_status
from dard.run_dir import RunDir, kept_epoch_name
from dard.training import train


@pytest.mark.slow
def test_kept_epochs_are_checkpoints_of_those_epochs(tmp_path):
    cfg = tiny_run_config(optim={"epochs": 3}, keep_epochs=[1, 2])
    train(parse_config(cfg), tmp_path / "run")
    run = RunDir(tmp_path / "run")
    assert kept_epoch_name(2) == "epoch-002"
    assert not run.weights(kept_epoch_name(3)).exists()  # the last epoch is `last` already, and 3 was not asked
    for epoch in (1, 2):
        model, meta = load_checkpoint(run.weights(kept_epoch_name(epoch)))
        assert meta["epoch"] == epoch
    last, _ = load_checkpoint(run.weights("last"))
    first, _ = load_checkpoint(run.weights(kept_epoch_name(1)))
    assert any((a != b).any() for a, b in zip(first.state_dict().values(), last.state_dict().values()))


def test_kept_epochs_are_checked_and_leave_the_identity_alone():
    cfg = tiny_run_config(optim={"epochs": 2})
    assert config_identity({**cfg, "keep_epochs": [1]}) == config_identity(cfg)
    with pytest.raises(DardError, match="past optim.epochs"):
        parse_config({**cfg, "keep_epochs": [3]})
    with pytest.raises(DardError, match="keep_epochs"):
        parse_config({**cfg, "keep_epochs": [0]})


def _tiny(tmp_path, **over):
    spec = copy.deepcopy(SPEC)
    for key in ("compare_attacks", "label_gap", "plot_param"):
        spec.pop(key)
    spec.update(seeds=[0], runs={"dard": {"method": {"name": "dard", "params": STEP}}}, **over)
    return _write(tmp_path, spec)


def test_runs_dir_of_an_experiment_is_its_default_runs_folder(tmp_path):
    _tiny(tmp_path, runs_dir="campaign/tiny")
    proc = run_cli("experiment", "tiny", "--plan", "--jobs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 runs in campaign/tiny: 0 done, 2 to train or evaluate" in proc.stdout
    assert "estimated compute left on this device, one run at a time:" in proc.stdout
    assert not (tmp_path / "campaign").exists()  # --plan creates nothing
    proc = run_cli("experiment", "tiny", "--plan", "--runs", "elsewhere", cwd=tmp_path)
    assert "2 runs in elsewhere:" in proc.stdout  # --runs still wins


@pytest.mark.slow
def test_status_counts_done_runs_and_sums_what_is_left(tmp_path, monkeypatch):
    exp = load_experiment(str(_tiny(tmp_path)))
    root = tmp_path / "runs"
    est = Estimate(train_s=5400.0, eval_s=1800.0, startup_s=0.0, basis="a measured rate", weights_mib=1.0)
    monkeypatch.setattr(Estimator, "estimate", lambda self, name, cfg, teacher: est)
    rows = campaign_status(exp, root, "cpu")
    assert [(r.name, r.role, r.status) for r in rows] == [
        ("teacher-s0", "teacher", "new"),
        ("dard-s0", "student", "new"),
    ]
    assert hours_left(rows) == pytest.approx(4.0)  # two runs of 2 h each
    monkeypatch.undo()
    teacher = plan_runs(exp, root)[0]  # the planned teacher, trained directly
    assert teacher.role == "teacher"
    train(teacher.config, root / teacher.name)
    monkeypatch.setattr(Estimator, "estimate", lambda self, name, cfg, teacher: est)
    rows = campaign_status(exp, root, "cpu")
    assert rows[0].done and rows[0].status == "done (reused)" and not rows[1].done
    assert hours_left(rows) == pytest.approx(2.0)
    path = write_status(exp, root, tmp_path / "results", "cpu")
    assert path.name == STATUS_FILE
    text = path.read_text()
    assert "1 of 2 runs done, 1 left, an estimated **2.0 h**" in text
    assert "| teacher-s0 | teacher | done (reused) |  |" in text
    assert "| dard-s0 | student | new | 2.00 | a measured rate |" in text


def test_small_scale_is_full_cifar10_with_the_ladder_kept():
    for name in ("main", "lambda", "attacks"):
        exp = load_experiment(name, "small")
        assert exp.spec.runs_dir == "campaign/small" and exp.spec.seeds == [0, 1, 2]
        base = parse_config(exp.base)
        assert base.data.name == "cifar10" and base.data.test_subset is None and base.data.train_subset is None
        assert base.eval.autoattack_subset == 1000 and base.speed.amp == "bf16"
        teacher = exp.spec.teacher
        assert teacher is not None and teacher.name == "cifar10-resnet20-sat"
        assert teacher.config["keep_epochs"] == [5, 10, 20] and teacher.config["optim"]["epochs"] == 30
    main = load_experiment("main", "small").spec.runs
    for method in ("ard", "rslad", "adaad"):  # the KL-only distillers at both loss scales
        assert method in main and f"{method}-batchmean" in main


def test_bad_runs_dir_type_is_one_line(tmp_path):
    _tiny(tmp_path, runs_dir=["a", "b"])
    assert_one_line_error(run_cli("experiment", "tiny", "--plan", cwd=tmp_path), "runs_dir")
