"""Time budgets: the training loop's deadline (snapshot at a step, exact resume), the cost model, where the rate
comes from, and `dard experiment --time-budget` starting what fits and stopping part-way."""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import pytest
from tests.conftest import assert_one_line_error, run_cli, tiny_config, tiny_run_config

from dard.attacks import AutoAttackWrapper
from dard.config import parse_config
from dard.durations import parse_duration
from dard.errors import DardError
from dard.experiment import load_experiment, run_experiment, run_status
from dard.experiment.budget import BudgetOptions
from dard.experiment.estimate import Estimate, Estimator, estimator_for
from dard.methods import create_method
from dard.methods.base import StepPasses
from dard.run_dir import RunDir
from dard.training import train
from dard.training.cost import DataSizes, arch_macs, attack_passes, measured_eval_rate, run_cost, train_passes
from dard.training.deadline import TrainingStopped

AUTOATTACK_PASSES = AutoAttackWrapper.STANDARD_PASSES

SAT = {"name": "sat", "params": {"attack": {"steps": 2, "step_size": 0.05}}}


def _cfg(name: str = "sat-s0", **over):
    """2 epochs of 2 steps (128 training images, batch 64), evaluated with FGSM."""
    small = {"data": {"name": "digits", "val_size": 0.2, "train_subset": 128, "test_subset": 64}}
    cheap = {"eval": {"attacks": ["fgsm"], "checkpoints": ["best"], "batch_size": 512}}
    return parse_config(tiny_config(name=name, method=SAT, optim={"epochs": 2}, **small, **cheap, **over))


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("images_per_s", "train_seconds")} for r in rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """runs/sat-s0 trained straight; runs/stopped stopped by its deadline after one step (then left as it is)."""
    root = tmp_path_factory.mktemp("budget") / "runs"
    train(_cfg(), root / "sat-s0")
    with pytest.raises(TrainingStopped) as stop:
        train(_cfg("stopped"), root / "stopped", stop_at=time.time() - 1)  # already past: stop after one step
    assert stop.value.epoch == 0 and stop.value.batch == 1 and not stop.value.evaluation_pending
    return root


def test_parse_duration():
    assert [parse_duration(t) for t in ("480", "8m", "90s", "1h30m", "2.5h", "0")] == [480, 480, 90, 5400, 9000, 0]
    assert parse_duration("1d2h3m4s") == 93784 and parse_duration("366d") == 366 * 86400
    # a unit twice or out of order is a typo; digits of other scripts are no digits here (re's \d took "٣h")
    for bad in ("8 minutes", "m", "1h-3m", "", "-5", "1h1h", "30m1h", "\u0663h", "inf", "1e400"):
        with pytest.raises(DardError, match="not a duration"):
            parse_duration(bad)
    for huge in ("367d", "99999999999999999999h", "9" * 400):  # the last was float('inf'): a budget without end
        with pytest.raises(DardError, match="over a year"):
            parse_duration(huge)


def test_a_bad_time_budget_fails_before_the_plans_checks(tmp_path):
    # the plan's checks load every dataset and print the plan; the flag was read after them
    path = _experiment(tmp_path).source
    for flags in (["--time-budget", "1h1h"], ["--partial-under", "5"], ["--time-budget", "9" * 400]):
        proc = run_cli("experiment", str(path), "--plan", "--runs", str(tmp_path / "runs"), *flags, cwd=tmp_path)
        assert_one_line_error(proc, "time budget" if "--time-budget" in flags else "go with --time-budget")
        assert proc.stdout == ""


@pytest.mark.slow
def test_deadline_stops_at_a_step_with_a_snapshot_and_the_resume_is_exact(runs, tmp_path):
    stopped = tmp_path / "stopped"
    shutil.copytree(runs / "stopped", stopped)
    folder = RunDir(stopped)
    assert folder.read_progress().global_step == 1 and not folder.eval_dir.exists()
    assert run_status(stopped, 2) == "resumes at epoch 1/2, step 2"  # of 2
    train(_cfg("stopped"), stopped, resume=True)
    # the same numbers as the run that was never stopped (config name aside)
    assert _metrics(stopped) == _metrics(runs / "sat-s0")
    a, b = folder.read_eval("best"), RunDir(runs / "sat-s0").read_eval("best")
    assert a.clean == b.clean and {k: v.accuracy for k, v in a.attacks.items()} == {
        k: v.accuracy for k, v in b.attacks.items()
    }


@pytest.mark.slow
def test_evaluation_that_does_not_fit_is_left_pending(tmp_path, monkeypatch):
    import dard.training.final_eval as final_eval

    monkeypatch.setattr(final_eval, "evaluation_rate", lambda *a: 1.0)  # 1 MAC/s: not one attack fits in an hour
    cfg = parse_config(tiny_config(name="pending", eval={"attacks": ["fgsm"], "checkpoints": ["best"]}))
    with pytest.raises(TrainingStopped) as stop:
        train(cfg, tmp_path / "pending", stop_at=time.time() + 3600)
    assert stop.value.evaluation_pending and "test evaluation pending" in str(stop.value)
    assert run_status(tmp_path / "pending", 1) == "trained; test evaluation pending"
    assert not RunDir(tmp_path / "pending").eval_progress_file("best").exists()  # no attack started
    monkeypatch.undo()
    train(cfg, tmp_path / "pending", resume=True)  # evaluation only
    assert RunDir(tmp_path / "pending").is_evaluated()


def test_cost_model_counts_passes_by_hand():
    def passes(name: str, **params) -> StepPasses:  # of the resolved config, as run.json records it
        return train_passes(create_method(name, **params).config())

    assert passes("dard", attack={"steps": 10}) == StepPasses(23, 2)
    assert passes("dard", attack={"steps": 5}, clean_branch=True) == StepPasses(16, 2)
    assert passes("sat", attack={"steps": 10}) == StepPasses(23, 0)
    assert passes("natural") == StepPasses(3, 0)
    assert passes("adaad", attack={"steps": 10}) == StepPasses(26, 22)
    assert passes("trades", attack={"steps": 10}) == StepPasses(27, 0)  # no teacher
    assert passes("ard", attack={"steps": 10}) == StepPasses(27, 1)
    assert [attack_passes(s) for s in ({"name": "pgd", "steps": 20}, {"name": "fgsm"}, {"name": "autoattack"})] == [
        41,
        3,
        AUTOATTACK_PASSES,
    ]
    cfg = parse_config(
        tiny_config(eval={"attacks": ["fgsm", "pgd20"], "autoattack_subset": 10, "checkpoints": ["best"]})
    )
    sizes = DataSizes(train=256, val=100, test=96, classes=10, shape=(1, 8, 8))
    cost = run_cost(cfg, sizes, None)
    m = arch_macs("small_cnn", 10, (1, 8, 8))
    assert cost.train_macs == 3 * m and cost.images_per_epoch == 256
    assert cost.val_macs == 100 * (1 + 7) * m  # validation: PGD-3 + the scoring forward, and the clean forward
    assert cost.eval_macs == (96 * (1 + 3 + 41) + 10 * (41 + AUTOATTACK_PASSES)) * m  # subset: PGD-20, AutoAttack
    # 2 epochs left at 1 MAC/s: every training image, and one validation per epoch
    assert cost.train_seconds(1.0) == 256 * 3 * m + 100 * 8 * m  # 1 epoch configured
    assert cost.eval_seconds(2.0) == cost.eval_macs / 2.0  # fp32, not compiled: full rate


@pytest.mark.slow
def test_rate_comes_from_the_run_itself_then_earlier_runs_then_the_default(runs):
    import torch

    from dard.runtime import device_name

    est = Estimator(runs, "cpu", device_name(torch.device("cpu")))
    own = est.estimate("stopped", _cfg("stopped"), None)
    assert own.basis.startswith("its own throughput") and own.train_s > 0
    other = est.estimate("dard-new", _cfg("dard-new"), None)
    assert other.basis.startswith("earlier run ") and " on cpu " in other.basis  # sat-s0 or stopped: SAT both
    assert "same architecture and method; the median of 2 such runs" in other.basis
    # a run with its own training rate but no evaluation yet takes the evaluated run's measured evaluation rate: it
    # took the training rate's factor, which put the campaign's evaluations at twice what they took
    measured = measured_eval_rate(RunDir(runs / "sat-s0"), est.sizes(_cfg()))
    assert measured and own.eval_rate == other.eval_rate == pytest.approx(measured)
    assert Estimator(runs, "cpu", "some other device").estimate("x", _cfg("x"), None).basis.startswith("the default")
    done = est.estimate("sat-s0", _cfg(), None)
    assert done.train_s == 0 and done.eval_s == 0  # trained and evaluated: nothing left


@pytest.mark.slow
def test_a_method_not_measured_yet_takes_the_median_of_its_architectures_runs(runs, tmp_path):
    """Not the first run by name: one slow neighbour (AdaAD's rate for a natural run) decided every estimate."""
    import torch

    from dard.runtime import device_name

    for name, ips in (("a-slow", 10.0), ("b-mid", 200.0), ("c-fast", 900.0)):
        shutil.copytree(runs / "sat-s0", tmp_path / name)
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        rows[-1]["images_per_s"] = ips
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from dard.config.schema import MethodConfig

    natural = _cfg("natural-s0").model_copy(update={"method": MethodConfig(name="natural")})
    est = Estimator(tmp_path, "cpu", device_name(torch.device("cpu"))).estimate("natural-s0", natural, None)
    assert est.basis.startswith("earlier run b-mid on cpu")
    assert "(200 images/s; same architecture; the median of 3 such runs" in est.basis
    shutil.rmtree(tmp_path / "c-fast")  # two: the lower one, so that an estimate errs long
    est = Estimator(tmp_path, "cpu", device_name(torch.device("cpu"))).estimate("natural-s0", natural, None)
    assert est.basis.startswith("earlier run a-slow on cpu")
    assert "(10 images/s; same architecture; the median of 2 such runs" in est.basis


STEP = {"attack": {"steps": 2, "step_size": 0.025}}


def _experiment(tmp_path: Path, runs: tuple[str, ...] = ("sat", "dard"), seeds: tuple[int, ...] = (0,)):
    """experiments/tiny/cpu.yaml in ``tmp_path``: a SAT teacher and the given students (sat, dard), ``seeds``."""
    from tests.test_experiment import SPEC, _write

    spec = copy.deepcopy(SPEC)
    for key in ("compare_attacks", "label_gap", "plot_param"):
        spec.pop(key)
    spec["seeds"] = list(seeds)
    spec["runs"] = {name: {"method": {"name": name, "params": STEP}} for name in runs}
    return load_experiment(str(_write(tmp_path, spec)))


def test_a_run_whose_resume_state_does_not_read_is_refused_before_any_run_trains(tmp_path, finished_run):
    # resume.json naming a snapshot that is not there (what `git add` of a folder in use can commit): --plan called
    # it a status with exit 0, and the stretch trained the teacher and the runs before it, then stopped them all on it
    from dard.config import dump_config
    from dard.experiment.plan import plan_runs

    exp, root = _experiment(tmp_path), tmp_path / "runs"
    sat = next(r for r in plan_runs(exp, root, "cpu") if r.name == "sat-s0")
    folder = RunDir(root / "sat-s0")
    folder.path.mkdir(parents=True)
    folder.write_config(dump_config(sat.config))
    shutil.copy(finished_run / "run.json", folder.run_info)  # (a run record of the same device for the estimate)
    folder.point_at(folder.snapshot(99))  # never written
    proc = run_cli("experiment", str(exp.source), "--plan", "--runs", str(root), cwd=tmp_path)
    assert_one_line_error(proc, "run 'sat-s0' cannot resume", "state-000000099")
    with pytest.raises(DardError, match="run 'sat-s0' cannot resume"):
        run_experiment(exp, root, tmp_path / "results", device="cpu", jobs=1, budget=BudgetOptions(3600))
    assert sorted(p.name for p in root.iterdir()) == ["sat-s0"]  # the teacher never started


def test_a_run_starts_when_it_fits_or_may_stop_part_way():
    from dard.experiment.budget import _decide

    est = Estimate(train_s=50.0, eval_s=20.0, startup_s=10.0, basis="test", weights_mib=13.0)
    assert _decide(est, 80.0, BudgetOptions(100)) == "fits"
    assert _decide(est, 79.0, BudgetOptions(100)) == "no"
    assert _decide(est, 79.0, BudgetOptions(100, partial_under=15)) == "partial"  # small enough to travel
    assert _decide(est, 79.0, BudgetOptions(100, partial_under=10)) == "no"
    assert _decide(est, 9.0, BudgetOptions(100, partial_under=15)) == "no"  # not even its start-up fits
    trained = Estimate(train_s=0.0, eval_s=20.0, startup_s=10.0, basis="test", weights_mib=13.0)
    assert _decide(trained, 29.0, BudgetOptions(100)) == "partial"  # evaluation alone: kept attack by attack
    assert _decide(trained, 10.0, BudgetOptions(100)) == "no"
    # --no-training: a run that needs training never starts, however much time is left; a trained one evaluates
    assert _decide(est, 1e9, BudgetOptions(100, partial_under=15, train=False)) == "untrained"
    assert _decide(trained, 29.0, BudgetOptions(100, train=False)) == "partial"
    assert _decide(trained, 31.0, BudgetOptions(100, train=False)) == "fits"


def test_no_training_starts_no_run_that_needs_training(tmp_path, monkeypatch, capsys):
    from dard.experiment.budget import plan_budget

    exp, root = _experiment(tmp_path), tmp_path / "runs"
    small = Estimate(train_s=5.0, eval_s=1.0, startup_s=0.0, basis="test", weights_mib=1.0)
    monkeypatch.setattr(Estimator, "estimate", lambda self, name, cfg, teacher: small)
    options = BudgetOptions(3600, margin_s=0, train=False)
    lines = plan_budget(exp, root, options, "cpu", jobs=1)
    assert lines[0] == (
        "teacher-s0 (teacher): new; needs ~6 s (start 0 + train 5 + test evaluation 1; rate from test); "
        "would not start: it needs training (--no-training)"
    )
    assert run_experiment(exp, root, tmp_path / "results", device="cpu", jobs=1, budget=options) is None
    assert not root.exists() or not any(root.iterdir())  # nothing trained, not even a folder made
    assert "[budget] teacher-s0: not started: it needs training, and --no-training trains nothing" in (
        capsys.readouterr().out
    )
    proc = run_cli("experiment", "main", "--no-training", "--runs", str(root), "--results", str(tmp_path / "r"))
    assert proc.returncode == 2 and proc.stderr.splitlines() == [
        "dard: error: --partial-under, --export and --no-training go with --time-budget"
    ]


def test_a_student_waits_for_its_teacher_to_be_trained_and_evaluated(run: Path):
    """A campaign checks its teacher's robustness (the test evaluation) before any student learns from it."""
    from dard.experiment.budget import _teacher_not_ready

    student = parse_config(tiny_config(teacher={"checkpoint": str(run / "best.safetensors")}))
    assert _teacher_not_ready(student) is None  # trained and evaluated
    shutil.rmtree(run / "eval")
    assert RunDir(run).read_progress().epoch == 1  # trained: the last snapshot is at its last epoch
    assert _teacher_not_ready(student) == "its teacher R is not evaluated yet"
    (run / "best.safetensors").unlink()
    assert _teacher_not_ready(student) == "its teacher R is not trained"


def test_a_budgeted_report_lists_the_runs_in_the_order_an_unbudgeted_one_does(tmp_path, monkeypatch):
    """The campaign takes the runs seed by seed, but its report lists them as the experiment file does (method by
    method), like `dard experiment` without a budget: the same runs give the same report either way."""
    import dard.experiment.budget as budget
    from dard.experiment.plan import campaign_order, read_plan

    exp, root = _experiment(tmp_path, seeds=(0, 1)), tmp_path / "runs"
    reported: list[list[str]] = []
    monkeypatch.setattr(budget._Job, "run", lambda self, run: None)
    monkeypatch.setattr(RunDir, "is_evaluated", lambda self: True)
    monkeypatch.setattr(budget, "write_status", lambda *a, **k: None)
    monkeypatch.setattr(budget, "write_experiment_report", lambda e, dirs, *a, **k: reported.append(dirs))
    budget.run_within_budget(exp, root, tmp_path / "results", BudgetOptions(0), device="cpu")
    plan = [r.name for r in read_plan(exp, root, "cpu")]
    assert [p.name for p in reported[0]] == plan != [r.name for r in campaign_order(read_plan(exp, root, "cpu"))]


def test_a_budget_of_0_rewrites_the_report_and_the_status_without_the_data(tmp_path, monkeypatch):
    """`--time-budget 0` starts nothing, so it needs no data: it stopped on the dataset of a run still to train
    (CIFAR-10 not found) although the report is the finished runs' records alone; status.md says why it has no
    estimate. A budget that may start a run still checks every run's data first."""
    import dard.experiment.budget as budget
    import dard.experiment.estimate as estimate
    import dard.experiment.plan as plan

    def absent(*args, **kwargs):
        raise DardError("CIFAR-10 not found: expected the official python version at data/cifar-10-batches-py")

    monkeypatch.setattr(plan, "dataset_bundle", absent)
    monkeypatch.setattr(estimate, "dataset_bundle", absent)
    exp, root, results = _experiment(tmp_path), tmp_path / "runs", tmp_path / "results"
    monkeypatch.setattr(RunDir, "is_evaluated", lambda self: self.path.name == "teacher-s0")
    reported: list[list[Path]] = []
    monkeypatch.setattr(budget, "write_experiment_report", lambda e, dirs, *a, **k: reported.append(dirs) or dirs[0])
    budget.run_within_budget(exp, root, results, BudgetOptions(0), device="cpu")
    assert [p.name for p in reported[0]] == ["teacher-s0"]
    status = (results / "status.md").read_text()
    assert "1 of 3 runs done, 2 left, no estimate of the compute left (CIFAR-10 not found" in status
    assert "| sat-s0 | student | new |  |  |" in status
    with pytest.raises(DardError, match="run 'sat-s0': CIFAR-10 not found"):
        budget.run_within_budget(exp, root, results, BudgetOptions(3600), device="cpu")


@pytest.mark.parametrize("fits, stopping", [(True, False), (False, False), (True, True)])
def test_a_fitting_run_whose_training_overruns_trains_on_to_the_deadline(tmp_path, monkeypatch, fits, stopping):
    """Training that runs past the deadline less the evaluation's reservation goes on to the deadline itself (the
    evaluation is then pending): stopping at the reservation would leave the time idle when every later run waits
    for this one (a teacher). A run that was never meant to fit stops at the deadline, once, and so does one stopped
    because its experiment is stopping (another run failed, Ctrl-C): it said "training ran past its estimate: it
    trains on to the deadline" and loaded its data and models again to stop at once."""
    import threading

    import dard.training
    from dard.experiment.budget import _Job
    from dard.experiment.plan import PlannedRun
    from dard.training.deadline import watch_stop_event

    est = Estimate(train_s=100.0, eval_s=600.0, startup_s=5.0, basis="test", weights_mib=1.0)
    options = BudgetOptions(3600, margin_s=0)
    calls: list[tuple[float, bool, bool]] = []

    def train(cfg, run_dir, *, resume, final_eval, stop_at, announce):
        calls.append((stop_at, resume, final_eval))
        raise TrainingStopped(run_dir, 0, 3)  # slower than estimated: its deadline comes first

    monkeypatch.setattr(dard.training, "train", train)
    job = _Job(_experiment(tmp_path, runs=("sat",)), tmp_path / "runs", options, estimator_for(tmp_path, "cpu"), "cpu")
    monkeypatch.setattr(job, "estimate", lambda run: est)
    run = PlannedRun(name="teacher-s0", role="teacher", seed=0, config=_cfg())
    event = threading.Event()
    event.set()
    watch_stop_event(event if stopping else None)
    try:
        with pytest.raises(TrainingStopped) as stop:
            job.train_and_evaluate(run, est, fits=fits)
    finally:
        watch_stop_event(None)
    assert not stop.value.evaluation_pending
    deadlines = [c[0] for c in calls]
    if stopping:
        assert deadlines == [options.deadline - est.eval_s]
    elif fits:
        assert deadlines == [options.deadline - est.eval_s, options.deadline]
        assert [c[1:] for c in calls] == [(False, False), (True, False)]  # the second call resumes the snapshot
    else:
        assert deadlines == [options.deadline]


def _pool_task(task: tuple[str, Path]) -> str:
    """For the test below, in a worker: ``train`` a long run in the folder; ``fail`` once that run is under way;
    ``never`` marks that it ran (it must not: it is queued behind them)."""
    kind, folder = task
    if kind == "train":
        cfg = _cfg("long")
        cfg.optim.epochs = 2000
        train(cfg, folder)
    elif kind == "fail":
        for _ in range(600):  # until the other worker's run has done an epoch (at most a minute)
            if (folder / "metrics.jsonl").is_file() and (folder / "metrics.jsonl").stat().st_size:
                break
            time.sleep(0.1)
        raise DardError("this task failed on purpose")
    else:
        folder.mkdir()
    return kind


@pytest.mark.slow
def test_a_failure_in_one_worker_stops_the_others_at_a_step_and_starts_nothing_more(tmp_path):
    """The error is said at once, not after every other run has trained; what was under way can resume."""
    from dard.experiment.pool import pool_map

    long_run = tmp_path / "long"
    tasks = [("train", long_run), ("fail", long_run), ("never", tmp_path / "never")]
    with pytest.raises(DardError, match="this task failed on purpose"):
        pool_map(_pool_task, tasks, jobs=2)
    assert not (tmp_path / "never").exists()
    progress = RunDir(long_run).read_progress()
    assert progress is not None and 1 <= progress.epoch < 2000  # stopped early, with a snapshot to resume from
    assert run_status(long_run, 2000).startswith("resumes at epoch")


@pytest.mark.slow
def test_experiment_budget_starts_nothing_that_cannot_finish_stops_part_way_then_continues(
    tmp_path, monkeypatch, capfd
):
    import torch

    import dard.experiment.budget as budget
    from dard.runtime import device_name

    exp, root, results = _experiment(tmp_path), tmp_path / "runs", tmp_path / "results"
    big = Estimate(train_s=1e6, eval_s=1.0, startup_s=0.0, basis="test", weights_mib=1.0)
    monkeypatch.setattr(Estimator, "estimate", lambda self, name, cfg, teacher: big)
    # (one at a time while this process's patches must hold: worker processes would not see them)
    assert run_experiment(exp, root, results, device="cpu", jobs=1, budget=BudgetOptions(30, margin_s=0)) is None
    assert not root.exists() or not any(root.iterdir())  # nothing fits: nothing started
    # a budget already spent, every run allowed to stop part-way: each run that can start stops after one step
    monkeypatch.setattr(budget, "_decide", lambda est, left, options: "partial")
    spent = BudgetOptions(0, partial_under=2.0, export_dir=tmp_path / "out", margin_s=0)
    spent.left = lambda: 1.0  # a second left at each decision, yet the deadline (when training stops) has passed
    assert run_experiment(exp, root, results, device="cpu", jobs=1, budget=spent) is None
    teacher = RunDir(root / "teacher-s0")
    assert teacher.read_progress().global_step == 1 and not teacher.is_evaluated()
    assert RunDir(root / "sat-s0").read_progress().global_step == 1  # SAT needs no teacher
    assert not (root / "dard-s0").exists()  # its teacher is not trained
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sat-s0.tar.gz", "teacher-s0.tar.gz"]
    monkeypatch.undo()
    capfd.readouterr()
    # the teacher alone on every thread, then the two students side by side in workers, on one thread each, each
    # deciding as it takes its run
    report = run_experiment(exp, root, results, device="cpu", jobs=2, budget=BudgetOptions(3600, margin_s=0))
    names = ("teacher-s0", "sat-s0", "dard-s0")
    assert report is not None and all(RunDir(root / n).is_evaluated() for n in names)
    threads = [RunDir(root / n).read_info().latest_environment()["cpu_threads"] for n in names]
    assert threads == [torch.get_num_threads(), 1, 1]
    sat = RunDir(root / "sat-s0").read_info()  # started here on every thread, resumed at step 1 in a worker
    assert sat.environment["cpu_threads"] == torch.get_num_threads()
    stretches = [(s["step"], s["environment"]["cpu_threads"]) for s in sat.stretches or []]
    assert stretches[0] == (1, 1) and {t for _, t in stretches} == {1}  # (then its evaluation, a second call)
    out = capfd.readouterr().out  # the workers' lines too
    # (the output in the message: once, in a full suite under load, both workers' lines were missing, and nothing
    # else was kept to tell why)
    assert out.count("[budget] sat-s0: starting") == out.count("[budget] dard-s0: starting") == 1, out
    # dard-s0's rate: an earlier run's, on the threads it was measured on, scaled to the one thread it has
    assert f"on {device_name(torch.device('cpu'))} (" in out
    assert torch.get_num_threads() == 1 or f"x1/{torch.get_num_threads()} for 1 thread of its" in out
    status = (results / "status.md").read_text()
    assert "3 of 3 runs done" in status and "students 2 at a time (one thread each), teachers alone" in status
    text = report.read_text()
    assert "Not finished yet" not in text
    # a later invocation that trains nothing writes the same report from the same runs, whatever its budget
    assert run_experiment(exp, root, results, device="cpu", budget=BudgetOptions(0)) == report
    assert report.read_text() == text and "--time-budget 0` rewrites this report" in text


@pytest.mark.slow
def test_train_cli_time_budget_stops_with_exit_3(tmp_path, capsys):
    import yaml

    from dard.cli import main

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(name="cli", optim={"epochs": 2})))
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "cli"), "--time-budget", "0"]) == 3
    err = capsys.readouterr().err
    assert "stopped at its time budget" in err and f"dard train --resume {tmp_path / 'cli'}" in err
    assert RunDir(tmp_path / "cli").read_progress().global_step == 1
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "x"), "--time-budget", "soon"]) == 2
    assert "not a duration" in capsys.readouterr().err


@pytest.mark.slow
def test_a_rate_measured_on_more_threads_is_scaled_down_to_a_runs_threads_never_up(runs, tmp_path):
    """Two runs at a time get one thread each: a rate measured on four threads counts a quarter for one thread,
    and a rate measured on fewer threads than a run has is not raised (two threads are rarely twice one)."""
    root = tmp_path / "runs"
    shutil.copytree(runs / "sat-s0", root / "sat-s0")
    info = json.loads((root / "sat-s0" / "run.json").read_text())
    info["environment"]["cpu_threads"] = 4
    (root / "sat-s0" / "run.json").write_text(json.dumps(info))
    label = str(info["environment"]["device_name"])
    cfg = _cfg("sat-s1")

    def estimate(threads: int) -> Estimate:
        return Estimator(root, "cpu", label, threads).estimate("sat-s1", cfg, None)

    one, four, eight = estimate(1), estimate(4), estimate(8)
    assert one.train_s == pytest.approx(4 * four.train_s) and one.eval_s == pytest.approx(4 * four.eval_s)
    assert (eight.train_s, eight.eval_s) == (four.train_s, four.eval_s)
    assert "x1/4 for 1 thread of its 4" in one.basis and "thread" not in four.basis.split("(", 2)[2]
    assert "thread of its" not in Estimator(root, "cuda", label, 1).estimate("sat-s1", cfg, None).basis  # CPUs only


def test_a_budget_plan_puts_students_jobs_at_a_time_and_a_teacher_alone(tmp_path, monkeypatch):
    """Each run of 100 s in 250 s: a teacher alone (0-100), then two students side by side (100-200); one at a
    time the second student would not fit. Estimates are made on the threads each run would have."""
    from dard.experiment.budget import plan_budget

    exp, root = _experiment(tmp_path), tmp_path / "runs"
    threads: list[tuple[str, int | None]] = []

    def estimate(self, name, cfg, teacher):
        threads.append((name, self.threads))
        return Estimate(train_s=80.0, eval_s=15.0, startup_s=5.0, basis="test", weights_mib=1.0)

    monkeypatch.setattr(Estimator, "estimate", estimate)
    two = plan_budget(exp, root, BudgetOptions(250, margin_s=0), "cpu", jobs=2)
    assert [line.split(" ")[0] for line in two] == ["teacher-s0", "sat-s0", "dard-s0"]
    assert all(line.endswith("; fits") for line in two)
    assert threads == [("teacher-s0", None), ("sat-s0", 1), ("dard-s0", 1)]
    one = plan_budget(exp, root, BudgetOptions(250, margin_s=0), "cpu", jobs=1)
    assert [line.rsplit("; ", 1)[1] for line in one] == ["fits", "fits", "would not start"]
    # 150 s, runs allowed to stop part-way: both students start at 100 s beside each other; one at a time the
    # first holds the rest of the budget
    short = BudgetOptions(150, partial_under=2, margin_s=0)
    ends = [[line.rsplit("; ", 1)[1] for line in plan_budget(exp, root, short, "cpu", jobs=j)] for j in (2, 1)]
    assert ends == [
        ["fits", *["would start and stop part-way"] * 2],
        ["fits", "would start and stop part-way", "would not start"],
    ]


def test_a_rate_measured_on_the_same_cpu_kind_is_preferred_and_another_kind_is_named(finished_run, tmp_path):
    """Every CPU is `cpu (x86_64, N threads)`: a rate measured on an Intel CPU with native bf16 was taken for an AMD
    one that emulates it (35 times slower for a bf16 DARD step), with nothing said. run.json records the CPU's
    model and bf16; a rate of the same kind comes first, and another kind, or an older record's unknown one, is said."""
    from dard.runtime import cpu_model, cpu_native_bf16, environment

    here = ("AMD EPYC", False)
    assert environment()["cpu_model"] == cpu_model() and environment()["cpu_native_bf16"] == cpu_native_bf16()
    for name, ips, kind in (("a-intel", 10.0, ("Intel Xeon", True)), ("b-amd", 900.0, here), ("c-old", 10.0, None)):
        run = Path(shutil.copytree(finished_run, tmp_path / name))
        info = json.loads((run / "run.json").read_text())
        for key in ("cpu_model", "cpu_native_bf16"):
            info["environment"].pop(key, None)  # c-old: a record from before dard recorded them
        if kind:
            info["environment"].update(cpu_model=kind[0], cpu_native_bf16=kind[1])
        (run / "run.json").write_text(json.dumps(info))
        rows = _metrics(run)
        rows[-1]["images_per_s"] = ips
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = parse_config(tiny_run_config(name="new"))
    label = json.loads((finished_run / "run.json").read_text())["environment"]["device_name"]

    def basis() -> str:
        return Estimator(tmp_path, "cpu", label, cpu=here).estimate("new", cfg, None).basis

    assert basis().startswith("earlier run b-amd on cpu") and "kind" not in basis()  # not the median of three
    shutil.rmtree(tmp_path / "b-amd")
    assert (
        "; measured on another CPU kind, Intel Xeon with native bf16 (this one AMD EPYC with emulated bf16)" in basis()
    )
    shutil.rmtree(tmp_path / "a-intel")
    assert "earlier run c-old" in basis() and "measured on a CPU of unknown kind" in basis()
