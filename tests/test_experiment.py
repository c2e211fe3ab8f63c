"""`dard experiment` and `dard demo` (which is an experiment): runs, reuse, config guards, report contents."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import pytest
import torch
import yaml
from tests.conftest import assert_one_line_error, run_cli

from dard.attacks import Attack
from dard.config import parse_config
from dard.errors import DardError
from dard.evaluation.suite import evaluate
from dard.experiment import deep_merge, load_experiment, run_experiment
from dard.run_dir import CompareFile, EvalFile, LabelGapFile, Progress, RunDir, RunInfo

BASE = {
    "device": "cpu",
    "eps": 0.1,
    "progress": False,
    "data": {"name": "digits", "val_size": 0.2, "train_subset": 192, "test_subset": 64},
    "model": {"arch": "small_cnn"},
    "optim": {"epochs": 1, "batch_size": 64, "lr": 0.05, "schedule": "constant"},
    "val": {"attack": {"name": "pgd", "steps": 2, "step_ratio": 0.25}},
    "eval": {"attacks": ["fgsm", "pgd20"], "checkpoints": ["best"]},
}
STEP = {"attack": {"steps": 2, "step_size": 0.025}}
SPEC = {
    "title": "tiny experiment",
    "about": "what it tests",
    "caveat": "digits only",
    "base": "base.yaml",
    "seeds": [0, 1],
    "teacher": {"name": "teacher", "seed": 0, "config": {"method": {"name": "sat", "params": STEP}}},
    "runs": {
        "sat": {"method": {"name": "sat", "params": STEP}},
        "dard": {"method": {"name": "dard", "params": STEP}},
        "dard-lam1": {"method": {"name": "dard", "params": {"lam": 1.0, **STEP}}},
    },
    "compare_attacks": {
        "n": 32,
        "attacks": {
            "pgd-2": {"name": "pgd", "steps": 2, "step_ratio": 0.25},
            "dpgd-2": {"name": "dpgd", "steps": 2, "step_ratio": 0.25},
        },
    },
    "plot_param": {"param": "lam", "label": "lambda"},
    "label_gap": {"n": 40},
}


def _write(tmp_path, spec=SPEC, base=BASE):
    folder = tmp_path / "experiments" / "tiny"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    (folder / "cpu.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "cpu.yaml"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exp")
    _write(tmp)
    proc = run_cli(
        "experiment", "tiny", "--runs", str(tmp / "runs"), "--results", str(tmp / "results"), "--jobs", "1", cwd=tmp
    )
    assert proc.returncode == 0, proc.stderr
    return tmp, proc


@pytest.mark.slow
def test_experiment_trains_teacher_once_then_students_and_reports(finished):
    tmp, proc = finished
    runs = sorted(p.name for p in (tmp / "runs").iterdir())
    assert runs == ["dard-lam1-s0", "dard-lam1-s1", "dard-s0", "dard-s1", "sat-s0", "sat-s1", "teacher-s0"]
    cfg = yaml.safe_load((tmp / "runs" / "dard-s1" / "config.yaml").read_text())
    assert cfg["teacher"]["checkpoint"] == str(tmp / "runs" / "teacher-s0" / "best.safetensors")
    assert cfg["seed"] == 1 and cfg["method"]["params"]["attack"]["steps"] == 2
    assert (
        "teacher" not in yaml.safe_load((tmp / "runs" / "sat-s0" / "config.yaml").read_text())
        or not yaml.safe_load((tmp / "runs" / "sat-s0" / "config.yaml").read_text())["teacher"]["checkpoint"]
    )
    report = (tmp / "results" / "report.md").read_text()
    table = [ln for ln in report.splitlines() if ln.startswith("| ")]
    assert table[1].startswith("| teacher |")  # the teacher's own numbers head the table
    assert "## Sweep over lambda" in report and "## Attack success rate" in report
    assert "## Teacher soft-label gap" in report
    assert "- Caveat: digits only" in report and "- Command: `dard experiment tiny" in report
    for f in ["curves.png", "sweep.png", "attack_success.png", "results.json", "experiment.yaml"]:
        assert (tmp / "results" / f).stat().st_size > 0
    # the paper tables come with every experiment report, and say the numbers of results.json
    groups = json.loads((tmp / "results" / "results.json").read_text())["groups"]
    rows = {r["run"]: r for r in csv.DictReader((tmp / "results" / "results.csv").open(encoding="utf-8"))}
    tex = (tmp / "results" / "results.tex").read_text(encoding="utf-8")
    for g in groups:
        clean = g["best"]["clean"]["mean"]
        assert float(rows[g["name"]]["clean_pct"]) == pytest.approx(100 * clean, abs=1e-4)
        assert f"{100 * clean:.1f}" in tex


@pytest.mark.slow
def test_results_json_holds_every_number(finished):
    tmp, _ = finished
    res = json.loads((tmp / "results" / "results.json").read_text())
    extra = res["extra"]
    assert extra["experiment"] == "tiny" and extra["scale"] == "cpu"
    assert set(extra["sweep"]["points"]) == {"0.5", "1.0"}
    assert extra["sweep"]["points"]["0.5"]["clean"]["n"] == 2  # two seeds
    table = extra["attack_comparison"]
    assert table["labels"] == ["pgd-2", "dpgd-2"]
    for group, row in table["groups"].items():
        for label, s in row.items():
            assert 0.0 <= s["mean"] <= 1.0, (group, label)
    # success rates are recomputable from the cached per-run records
    rec = json.loads((tmp / "runs" / "sat-s0" / "eval" / "compare-best.json").read_text())["record"]
    for a in rec["attacks"].values():
        assert a["clean_correct"] == rec["clean"]["correct"]
        assert 0 <= a["fooled"] <= a["clean_correct"]


@pytest.mark.slow
def test_label_gap_only_for_distilled_runs_and_cached(finished):
    tmp, _ = finished
    gaps = json.loads((tmp / "results" / "results.json").read_text())["extra"]["label_gap"]
    assert set(gaps) == {"dard", "dard-lam1"}  # SAT has no teacher
    cached = json.loads((tmp / "runs" / "dard-s0" / "eval" / "label-gap-best.json").read_text())
    assert cached["gap"]["n"] == 40 and cached["attack"]["name"] == "dpgd" and cached["attack"]["steps"] == 2
    assert 0.0 <= cached["gap"]["tv"] <= 1.0 and 0.0 <= cached["gap"]["top1_agreement"] <= 1.0
    assert gaps["dard"]["tv"]["n"] == 2


@pytest.mark.slow
def test_label_gap_leaves_out_runs_whose_training_attack_takes_no_labels(tmp_path):
    # RSLAD's kl_pgd takes the teacher's probabilities: attacked with labels, the label gap stopped the experiment
    # after every run had trained ("kl_pgd: target probabilities must be a float tensor"), and at every rerun
    # ... and the report said nothing of the runs it left out; a DARD run whose training attack was crafted against
    # the teacher (attack_target: teacher) had its gap measured with the attack on the student instead
    runs = {
        "dard": SPEC["runs"]["dard"],
        "rslad": {"method": {"name": "rslad", "params": STEP}},
        "dard-t": {"method": {"name": "dard", "params": {"attack_target": "teacher", **STEP}}},
    }
    _write(tmp_path, spec={**SPEC, "seeds": [0], "runs": runs, "compare_attacks": None, "plot_param": None})
    proc = run_cli("experiment", "tiny", "--runs", "runs", "--results", "res", "--jobs", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads((tmp_path / "res" / "results.json").read_text())["extra"]["label_gap"]) == {"dard", "dard-t"}
    against = {
        r: RunDir(tmp_path / "runs" / f"{r}-s0").read_label_gap("best").attack["against"] for r in ("dard", "dard-t")
    }
    assert against == {"dard": "student", "dard-t": "teacher"}
    section = (tmp_path / "res" / "report.md").read_text().split("## Teacher soft-label gap")[1].split("\n## ")[0]
    assert "Attacked against the teacher, as their training was: dard-t-s0." in section
    left = next(line for line in section.splitlines() if line.startswith("Left out: "))
    assert "rslad-s0 (its training attack (kl_pgd) takes no labels)" in left
    assert "teacher-s0 (it distils from no teacher)" in left and "dard-s0" not in left


def test_attack_comparison_names_the_runs_it_left_out(finished_run, tmp_path):
    # a run without the compared checkpoint's weights (imported without them) was missing from the table in silence
    from dard.experiment.report import _attack_section
    from dard.experiment.spec import CompareAttacksSpec
    from dard.run_dir import RunRecord

    shutil.copytree(finished_run, tmp_path / "bare")
    (tmp_path / "bare" / "best.safetensors").unlink()
    spec = CompareAttacksSpec.model_validate(SPEC["compare_attacks"])
    runs = [RunRecord.load(finished_run), RunRecord.load(tmp_path / "bare")]
    text = _attack_section(spec, runs, tmp_path / "res", {})
    left = next(line for line in text.splitlines() if line.startswith("Left out: "))
    assert left == f"Left out: {finished_run.name} (not measured yet); bare (its folder holds no best weights)."


@pytest.mark.slow
def test_every_file_of_the_runs_round_trips_through_its_type(finished):
    tmp, _ = finished
    typed = {"compare-": CompareFile, "label-gap-": LabelGapFile}
    seen = set()
    for folder in sorted((tmp / "runs").iterdir()):
        run = RunDir(folder)
        assert RunInfo.from_dict(raw := json.loads(run.run_info.read_text())).to_dict() == raw
        assert [r.to_dict() for r in run.read_metrics()] == [
            json.loads(ln) for ln in run.metrics.read_text().splitlines()
        ]
        snap = run.resume_snapshot()
        assert Progress.from_dict(raw := json.loads(snap.progress.read_text())).to_dict() == raw
        for f in run.eval_dir.iterdir():
            kind = next((t for prefix, t in typed.items() if f.name.startswith(prefix)), EvalFile)
            assert kind.from_dict(raw := json.loads(f.read_text())).to_dict() == raw, f
            seen.add(kind)
    assert seen == {EvalFile, CompareFile, LabelGapFile}


@pytest.mark.slow
def test_second_run_reuses_everything(finished):
    tmp, _ = finished
    before = (tmp / "runs" / "dard-s0" / "best.safetensors").stat().st_mtime_ns
    proc = run_cli(
        "experiment", "tiny", "--runs", str(tmp / "runs"), "--results", str(tmp / "results2"), "--jobs", "1", cwd=tmp
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": reused") == 7
    assert proc.stdout.splitlines()[0].endswith("1 at a time; 7/7 runs finished")  # nothing left to estimate
    assert (tmp / "runs" / "dard-s0" / "best.safetensors").stat().st_mtime_ns == before
    a = json.loads((tmp / "results" / "results.json").read_text())["groups"]
    b = json.loads((tmp / "results2" / "results.json").read_text())["groups"]
    assert a == b


@pytest.mark.slow
def test_report_names_every_commit_the_runs_were_made_with(finished, tmp_path):
    tmp, _ = finished
    shutil.copytree(tmp / "runs", tmp_path / "runs")
    shutil.copytree(tmp / "experiments", tmp_path / "experiments")
    teacher = RunDir(tmp_path / "runs" / "teacher-s0")
    info = teacher.read_info()
    info.environment["git_commit"] = "abcdef0" + "1" * 33
    teacher.write_info(info)
    proc = run_cli(
        "experiment",
        "tiny",
        "--runs",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results"),
        "--jobs",
        "1",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    device_line = next(
        ln for ln in (tmp_path / "results" / "report.md").read_text().splitlines() if ln.startswith("- Device:")
    )
    assert "abcdef0 (teacher-s0)" in device_line and "6 runs" in device_line, device_line


@pytest.mark.slow
def test_run_folder_with_another_config_is_refused_and_left_alone(finished, tmp_path):
    tmp, _ = finished
    runs = tmp_path / "runs"
    shutil.copytree(tmp / "runs", runs)
    spec = deep_merge(SPEC, {"runs": {"sat": {"method": {"name": "sat", "params": {"attack": {"steps": 3}}}}}})
    _write(tmp_path, spec=spec)
    before = (runs / "sat-s0" / "config.yaml").read_text()
    proc = run_cli("experiment", "tiny", "--runs", str(runs), "--results", str(tmp_path / "res"), cwd=tmp_path)
    assert_one_line_error(proc, "sat-s0 was made with a different config", "method.params.attack.steps")
    assert (runs / "sat-s0" / "config.yaml").read_text() == before
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize(
    "spec,needle",
    [
        ({**SPEC, "sedes": [0]}, "sedes: unknown key"),
        ({**SPEC, "seeds": []}, "seeds"),
        ({**SPEC, "runs": {"x": {"optim": {"epochs": 0}}}}, "run 'x-s0'"),
        ({**SPEC, "runs": {"x": {"method": {"name": "dard"}}}, "teacher": None}, "needs a teacher"),
        # the extra sections, once found out only after the training (or never: an empty section)
        ({**SPEC, "compare_attacks": {"attacks": {"x": {"name": "nosuch"}}}}, "compare_attacks.attacks.x"),
        ({**SPEC, "compare_attacks": {"attacks": {"x": {"name": "pgd", "norm": "l1"}}}}, "compare_attacks.attacks.x"),
        ({**SPEC, "compare_attacks": {"attacks": {}}}, "compare_attacks.attacks"),
        # an attack's own seed was passed twice (an internal error at load); null would draw from the global stream
        ({**SPEC, "compare_attacks": {"attacks": {"x": {"name": "pgd", "seed": None}}}}, "'teacher-s0'): pgd: seed"),
        ({**SPEC, "compare_attacks": {**SPEC["compare_attacks"], "checkpoint": "worst"}}, "compare_attacks.checkpoint"),
        ({**SPEC, "label_gap": {"checkpoint": "../../x"}}, "label_gap.checkpoint"),
        ({**SPEC, "plot_param": {"param": "nosuch"}}, "plot_param.param 'nosuch' is no numeric parameter"),
        # a whole-file check's line named the key path "config" before its own key
        ({**SPEC, "pairs": [["sat", "sat"]]}, ".yaml: pairs: [sat, sat] compares a row with itself"),
        # a method that is no mapping was an internal error (AttributeError) before the run's parse could name it
        ({**SPEC, "runs": {"x": {"method": "dard"}}}, "run 'x-s0': config error: method: Input should be a valid dict"),
        ({**SPEC, "teacher": {**SPEC["teacher"], "config": {"method": ["sat"]}}}, "run 'teacher-s0': config error: me"),
        # one report table takes one threat model: the report refused it after every run had trained
        ({**SPEC, "runs": {**SPEC["runs"], "x": {"eps": 0.2}}}, "linf eps 0.2 (x-s0, x-s1): set data.name, norm and"),
        ({**SPEC, "teacher": {**SPEC["teacher"], "config": {**SPEC["teacher"]["config"], "eps": 0.2}}}, "0.2 (teacher"),
        # a run's own seeds are some of the experiment's, each once
        ({**SPEC, "runs": {"sat": {"seeds": [2]}}}, "runs.sat.seeds must be distinct seeds of the experiment's (0, 1)"),
        ({**SPEC, "runs": {"sat": {"seeds": [0, 0]}}}, "runs.sat.seeds"),
        ({**SPEC, "runs": {"sat": {"seeds": []}}}, "runs.sat.seeds"),
        ({**SPEC, "runs": {"sat": {"seeds": 0}}}, "runs.sat.seeds"),
        # what a run builds is checked for every run at load, named by file and run: a method parameter was found by
        # --plan's estimate after its lines, by a campaign only when the run started (after the teacher)
        ({**SPEC, "runs": {"x": {"method": {"name": "dard", "params": {"lamda": 0.5}}}}}, "run 'x-s0': method:"),
        ({**SPEC, "runs": {"x": {"method": {"name": "dardd"}}}}, "run 'x-s0': method: unknown method 'dardd'"),
        ({**SPEC, "runs": {"x": {"eval": {"attacks": ["pgd-20"]}}}}, "run 'x-s0': eval.attacks: unknown attack"),
        ({**SPEC, "runs": {"x": {"val": {"attack": {"name": "nosuch"}}}}}, "run 'x-s0': val.attack: unknown attack"),
        ({**SPEC, "teacher": {**SPEC["teacher"], "config": {"method": {"name": "dard"}}}}, "its method must take no"),
        # a teacher named like a run shared its folder; a run's own seed or name was dropped in silence
        ({**SPEC, "teacher": {**SPEC["teacher"], "name": "sat"}}, "the teacher and run 'sat' share a name"),
        # at a seed no run takes, two report rows 'sat': the pair [sat, dard] compared the teacher
        ({**SPEC, "teacher": {**SPEC["teacher"], "name": "sat", "seed": 5}}, "the teacher and run 'sat' share a n"),
        # one folder on macOS and Windows: the second run resumed, or was reused as, the first
        ({**SPEC, "teacher": {**SPEC["teacher"], "name": "SAT"}}, "runs SAT-s0 and sat-s0 differ only in case"),
        ({**SPEC, "runs": {**SPEC["runs"], "Dard": {"method": {"name": "sat"}}}}, "dard-s0 and Dard-s0 differ only"),
        ({**SPEC, "runs": {"sat": {"seed": 5}}}, "runs.sat.seed: the experiment sets each run's seed"),
        ({**SPEC, "runs": {"sat": {"name": "mine"}}}, "runs.sat.name: the experiment sets each run's name"),
        ({**SPEC, "teacher": {**SPEC["teacher"], "config": {"seed": 3}}}, "teacher.config.seed: the experiment sets"),
        # a run's own device was dropped for --device (default auto) in silence, and --plan passed `device: xla`
        ({**SPEC, "runs": {"sat": {"device": "xla"}}}, "runs.sat.device: the experiment sets each run's device"),
        ({**SPEC, "teacher": {**SPEC["teacher"], "config": {"device": "cpu"}}}, "teacher.config.device: the exp"),
        # a teacher the file gives a run must be there (the campaign stopped when that run began)
        ({**SPEC, "runs": {"x": {"method": {"name": "dard"}, "teacher": {"checkpoint": "no/run"}}}}, "'x-s0': checkp"),
        (
            {
                **SPEC,
                "runs": {
                    "x": {"method": {"name": "ard"}, "teacher": {"arch": "mlp", "weights": "w.pt", "normalize": True}}
                },
            },
            "w.pt",
        ),
        # strict as a run config: a seed or count of another type was taken as a number (seeds: ["1"] ran seed 1)
        ({**SPEC, "seeds": ["0", 1]}, "seeds.0: Input should be a valid integer"),
        ({**SPEC, "seeds": [True, 2]}, "seeds.0: Input should be a valid integer"),
        ({**SPEC, "teacher": {**SPEC["teacher"], "seed": "0"}}, "teacher.seed: Input should be a valid integer"),
        ({**SPEC, "compare_attacks": {**SPEC["compare_attacks"], "n": 10**20}}, "compare_attacks.n"),
        ({**SPEC, "label_gap": {"n": 4.0}}, "label_gap.n: Input should be a valid integer"),
        # a misspelt key of the file names the nearest one, as a run config's does (it said "unknown key" alone)
        ({**SPEC, "sedds": [0]}, "sedds: unknown key; did you mean seeds? (the top level has: title, about,"),
        ({**SPEC, "teacher": {**SPEC["teacher"], "sede": 1}}, "teacher.sede: unknown key; did you mean teacher.seed?"),
        (
            {**SPEC, "compare_attacks": {**SPEC["compare_attacks"], "chekpoint": "best"}},
            "compare_attacks.chekpoint: unknown key; did you mean compare_attacks.checkpoint? (compare_attacks has: n",
        ),
    ],
)
def test_bad_experiment_files_are_one_line_errors(tmp_path, spec, needle):
    _write(tmp_path, spec=spec)
    proc = run_cli("experiment", "tiny", "--runs", str(tmp_path / "runs"), cwd=tmp_path)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "runs").exists()


# every image of the folder: the base's subsets (192 and 64 digits) are more than it has, refused before its data loads
FOLDER_DATA = {"name": "folder", "dir": "imgs", "val_size": 3, "train_subset": None, "test_subset": None}
FOLDER_TEACHER = {"data": FOLDER_DATA, "optim": {"batch_size": 4}}


@pytest.mark.parametrize(
    "runs, teacher_config, needle",
    [
        ({"x": {"data": {"val_size": 5000}}}, {}, "run 'x-s0': data.val_size 5000 leaves no training"),
        ({"x": {"data": {"train_subset": 32}}}, {}, "run 'x-s0': optim.batch_size 64 exceeds the 32 training images"),
        # a teacher of another dataset: refused with the rest of one report table's runs, when the file loads (its
        # classes against a run's, by check_data, where both name one dataset in other folders)
        ({"dard": SPEC["runs"]["dard"]}, FOLDER_TEACHER, "the runs of an experiment share one report table"),
        # a model kwarg its factory does not take: refused by the estimate after --plan's lines, naming no run
        ({"x": {"model": {"kwargs": {"width": 2}}}}, {}, "run 'x-s0': model.kwargs: model 'small_cnn': its factory"),
    ],
)
def test_runs_that_do_not_fit_their_data_are_refused_before_any_training(tmp_path, runs, teacher_config, needle):
    # found out only when the run started, after the teacher and the runs before it had trained (and without the
    # run's name); --plan said nothing
    from tests.cli_checks import image_folder

    image_folder(tmp_path / "imgs", side=8, classes=3)
    teacher = {**SPEC["teacher"], "config": {**SPEC["teacher"]["config"], **teacher_config}}
    _write(tmp_path, spec={**SPEC, "runs": {"sat": SPEC["runs"]["sat"], **runs}, "teacher": teacher})
    for plan in (["--plan"], []):
        proc = run_cli("experiment", "tiny", "--runs", str(tmp_path / "runs"), *plan, cwd=tmp_path)
        assert_one_line_error(proc, "cpu.yaml: " + needle)
        assert not (tmp_path / "runs").exists()


def test_a_subset_larger_than_a_folders_data_is_refused_by_the_plan(tmp_path):
    # the image folder's sizes are known once it loads, which --plan's data check does: it took the run's subsets
    # without the check, so a new run found it when it started, after the teacher and the runs before it
    from tests.cli_checks import image_folder

    from dard.experiment.plan import PlannedRun, check_data

    image_folder(tmp_path / "imgs", side=8, classes=3)  # 9 training images, 9 test images
    data = {"name": "folder", "dir": str(tmp_path / "imgs"), "val_size": 3}
    cfg = parse_config({"data": {**data, "test_subset": 10}, "optim": {"batch_size": 2}, "method": {"name": "sat"}})
    run = PlannedRun("x-s0", "student", 0, cfg, status="new")
    with pytest.raises(DardError, match=r"e.yaml: run 'x-s0': data.test_subset 10 exceeds the 9 test images"):
        check_data([run], tmp_path / "runs", tmp_path / "e.yaml")
    check_data([dataclasses.replace(run, status="resumes at epoch 2/3")], tmp_path / "runs", tmp_path / "e.yaml")


@pytest.mark.slow
def test_plan_reports_every_run_and_trains_nothing(finished, tmp_path):
    tmp, _ = finished
    before = (tmp / "runs" / "dard-s0" / "best.safetensors").stat().st_mtime_ns
    proc = run_cli("experiment", "tiny", "--runs", str(tmp / "runs"), "--plan", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["teacher-s0", "teacher", "sat"]  # the teacher comes first
    assert len(lines) == 8 and all(ln.endswith("done (reused)") for ln in lines[:7])
    assert lines[-1].endswith("7 done, 0 to train or evaluate")
    assert (tmp / "runs" / "dard-s0" / "best.safetensors").stat().st_mtime_ns == before

    _write(tmp_path)  # the same experiment, nothing run yet: everything is new and no folder is created
    proc = run_cli("experiment", "tiny", "--runs", str(tmp_path / "runs"), "--plan", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(" new\n") == 7 and not (tmp_path / "runs").exists()


def test_a_run_may_take_fewer_of_the_experiments_seeds(tmp_path):
    # rows that can wait (TRADES, AdaAD, natural at the small scale) run seed 0 first; seeds added later reuse them
    from dard.experiment.plan import campaign_order, plan_runs
    from dard.experiment.report import _fewer_seeds

    lam1 = {**SPEC["runs"]["dard-lam1"], "seeds": [1]}
    runs = {**SPEC["runs"], "dard-lam1": lam1, "nat": {"method": {"name": "natural"}, "seeds": [0]}}
    exp = load_experiment(str(_write(tmp_path, spec={**SPEC, "runs": runs})))
    planned = campaign_order(plan_runs(exp, tmp_path / "runs"))
    names = ["teacher-s0", "sat-s0", "dard-s0", "nat-s0", "sat-s1", "dard-s1", "dard-lam1-s1"]
    assert [r.name for r in planned] == names and planned[-1].config.method.params["lam"] == 1.0
    assert _fewer_seeds(exp.spec) == " (dard-lam1: seed 1; nat: seed 0)"


def test_a_compared_attack_may_name_its_seed(tmp_path):
    # `seed: 5` in a compare_attacks entry was passed to the attack twice: an internal error when the file loaded
    from dard.evaluation.suite import attack_from_spec

    attacks = {"pgd-s5": {"name": "pgd", "steps": 2, "seed": 5}}
    exp = load_experiment(str(_write(tmp_path, spec={**SPEC, "compare_attacks": {"n": 8, "attacks": attacks}})))
    assert exp.spec.compare_attacks is not None
    assert attack_from_spec(exp.spec.compare_attacks.attacks["pgd-s5"], 0.1, 0).seed == 5


def test_an_empty_run_entry_or_section_is_the_base_config(tmp_path):
    # YAML reads `plain:` alone on its line (or `method:` with its keys commented out) as null: it was "Input should
    # be a valid dictionary"; it is the base config as it is, and an empty section overrides nothing
    from dard.experiment.plan import plan_runs

    # (sat's entry is the base's config, which `plain` is: one run twice; `kept` sets a learning rate of its own)
    runs = {k: v for k, v in SPEC["runs"].items() if k != "sat"}
    spec = {**SPEC, "runs": {**runs, "plain": None, "kept": {"method": None, "optim": {"lr": 0.04}}}}
    spec["teacher"] = {**SPEC["teacher"], "config": None}
    base = {**BASE, "method": {"name": "sat", "params": STEP}}
    exp = load_experiment(str(_write(tmp_path, spec=spec, base=base)))
    planned = {r.name: r.config for r in plan_runs(exp, tmp_path / "runs")}
    base_method = parse_config(base).method
    assert planned["plain-s0"].method == planned["kept-s0"].method == planned["teacher-s0"].method == base_method
    assert planned["dard-s0"].method.name == "dard"


def test_a_run_of_another_method_takes_only_the_base_params_its_method_has(tmp_path):
    # a base's method.params (sat's attack and attack_mode) made a natural run an error ("method 'natural' has no
    # parameter 'attack'") that no run entry could undo: a null section overrides nothing
    from dard.experiment.plan import plan_runs

    base = {**BASE, "method": {"name": "sat", "params": {**STEP, "attack_mode": "train"}}}
    runs = {
        "nat": {"method": {"name": "natural"}},
        "trades": {"method": {"name": "trades", "params": {"beta": 1.0}}},
        "sat": {"method": {"params": {"attack": {"steps": 3}}}},
    }
    exp = load_experiment(str(_write(tmp_path, spec={**SPEC, "runs": runs, "plot_param": None}, base=base)))
    planned = {r.name: r.config.method for r in plan_runs(exp, tmp_path / "runs")}
    assert planned["nat-s0"].params == {}
    assert planned["trades-s0"].params == {**STEP, "beta": 1.0}  # the attack budget carries over; attack_mode not
    assert planned["sat-s0"].params == {"attack": {"steps": 3, "step_size": 0.025}, "attack_mode": "train"}
    assert planned["teacher-s0"].params == {**STEP, "attack_mode": "train"}  # the same method: merged as before


def test_an_experiment_of_your_own_may_extend_a_packaged_scale_or_config(tmp_path):
    # a copy of a packaged experiment (`base: ../_scales/digits.yaml`), or one written anywhere, reached a scale only
    # by its installed path: "base run config not found"; a packaged run config's name is taken as --config takes it
    from dard.errors import DardError

    runs = {"sat": {"method": {"name": "sat"}}}
    for base, name in [("../_scales/digits.yaml", "demo"), ("cifar10/sat_resnet18", "sat-resnet56-to-resnet18")]:
        path = tmp_path / "mine.yaml"
        path.write_text(yaml.safe_dump({"title": "mine", "base": base, "seeds": [0], "runs": runs}))
        assert load_experiment(str(path)).base["name"] == name
    (tmp_path / "_scales").mkdir()  # a file of your own beside it comes first
    (tmp_path / "_scales" / "digits.yaml").write_text(yaml.safe_dump({**BASE, "name": "own"}))
    path = tmp_path / "sub" / "mine.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({"title": "mine", "base": "../_scales/digits.yaml", "seeds": [0], "runs": runs}))
    assert load_experiment(str(path)).base["name"] == "own"
    path.write_text(yaml.safe_dump({"title": "mine", "base": "../_scales/nope.yaml", "seeds": [0], "runs": runs}))
    with pytest.raises(DardError, match=r"base run config not found: .*nope.yaml \(nor a packaged scale, .*small.yaml"):
        load_experiment(str(path))


def test_a_base_section_that_is_no_mapping_is_refused_not_replaced(tmp_path):
    # `data: cifar10` in the base: a run's own data section replaced it, and the run trained on digits in silence
    _write(tmp_path, spec={**SPEC, "runs": {"x": {"data": {"val_size": 0.3}}}}, base={**BASE, "data": "cifar10"})
    proc = run_cli("experiment", "tiny", "--runs", str(tmp_path / "runs"), "--plan", cwd=tmp_path)
    assert_one_line_error(proc, "base.yaml: data is a section of keys, not 'cifar10'")


def test_plan_checks_the_output_folders_as_the_experiment_does(tmp_path):
    # --plan printed a plan for a runs folder that is a file, which the experiment itself refuses at once
    _write(tmp_path)
    (tmp_path / "afile").write_text("mine\n")
    proc = run_cli("experiment", "tiny", "--runs", str(tmp_path / "afile"), "--plan", cwd=tmp_path)
    assert_one_line_error(proc, f"runs folder {tmp_path / 'afile'} is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "mine\n"
    # and the results folder likewise
    argv = ["experiment", "tiny", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "afile"), "--plan"]
    proc = run_cli(*argv, cwd=tmp_path)
    assert_one_line_error(proc, f"results folder {tmp_path / 'afile'} is a file, not a folder")
    assert (tmp_path / "afile").read_text() == "mine\n" and not (tmp_path / "runs").exists()


def test_a_run_folder_that_is_a_link_is_refused(tmp_path):
    # runs/<name> a link to a folder elsewhere (another experiment's run, say) was trained into, evaluated and
    # reported from as this experiment's run
    _write(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "sat-s0").symlink_to(elsewhere)
    for plan in (["--plan"], ["--time-budget", "0"]):
        proc = run_cli("experiment", "tiny", "--runs", str(tmp_path / "runs"), *plan, cwd=tmp_path)
        assert_one_line_error(proc, f"{tmp_path / 'runs' / 'sat-s0'} is a symbolic link (to '{elsewhere}')")
    assert not any(elsewhere.iterdir()) and not (tmp_path / "results").exists()


def test_plan_checks_the_data_before_anything_runs(tmp_path):
    _write(tmp_path, base=deep_merge(BASE, {"data": {"name": "cifar10", "dir": str(tmp_path / "no-data")}}))
    proc = run_cli("experiment", "tiny", "--runs", str(tmp_path / "runs"), "--plan", cwd=tmp_path)
    assert_one_line_error(proc, "CIFAR-10 not found", str(tmp_path / "no-data"))
    # --data-dir points every run elsewhere: still missing, and named in the error
    proc = run_cli(
        "experiment",
        "tiny",
        "--runs",
        str(tmp_path / "runs"),
        "--plan",
        "--data-dir",
        str(tmp_path / "elsewhere"),
        cwd=tmp_path,
    )
    assert_one_line_error(proc, str(tmp_path / "elsewhere"))


def test_run_status_reads_the_resume_state(tmp_path):
    from dard.experiment import RUN_DONE, run_status

    run = RunDir(tmp_path / "run")
    assert run_status(run.path, 3) == "new"
    snap = run.snapshot(7)
    snap.path.mkdir(parents=True)
    run.point_at(snap)
    assert run_status(run.path, 3).startswith("resume state unreadable")  # pointer to a snapshot without progress
    snap.write_progress(Progress(epoch=1, batch=3, global_step=7))
    assert run_status(run.path, 3) == "resumes at epoch 2/3, step 4"
    snap.write_progress(Progress(epoch=2, batch=0, global_step=7))
    assert run_status(run.path, 3) == "resumes at epoch 3/3"
    snap.write_progress(Progress(epoch=3, batch=0, global_step=7))
    assert run_status(run.path, 3) == "trained; test evaluation pending"
    run.eval_file("best").parent.mkdir()
    run.eval_file("best").write_text("{}")  # only its presence counts
    assert run_status(run.path, 3) == RUN_DONE


def test_unknown_experiment_and_scale(tmp_path):
    _write(tmp_path)
    assert_one_line_error(run_cli("experiment", "nope", cwd=tmp_path), "unknown experiment 'nope'", "tiny")
    assert_one_line_error(run_cli("experiment", "tiny", "--scale", "paper", cwd=tmp_path), "no scale 'paper'", "cpu")


def test_a_name_or_scale_that_is_a_path_is_refused_and_a_files_name_is_its_folders(tmp_path, monkeypatch):
    # `--scale ../other/cpu` (or an absolute path) loaded another experiment's file under this name, and the
    # default runs and report folders (runs/experiments/<scale>, results/<name>/<scale>) went where it led
    path = _write(tmp_path)
    (tmp_path / "experiments" / "other").mkdir()
    shutil.copy(path, tmp_path / "experiments" / "other" / "cpu.yaml")
    for args, what in [
        (("tiny", "--scale", "../other/cpu"), "scale '../other/cpu'"),
        (("tiny", "--scale", str(path.with_suffix(""))), "is not a plain name"),
        (("../experiments/tiny",), "experiment name '../experiments/tiny'"),  # a folder there
    ]:
        proc = run_cli("experiment", *args, "--plan", cwd=tmp_path)
        assert_one_line_error(proc, what)
    # a file is run as it is: `--scale gpu` beside its path was ignored in silence
    proc = run_cli("experiment", str(path), "--scale", "gpu", "--plan", cwd=tmp_path)
    assert_one_line_error(proc, "is a file, run as it is: drop --scale")
    # a file given as ../cpu.yaml was the experiment '..', its report bound for results/../cpu
    sub = tmp_path / "experiments" / "tiny" / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    exp = load_experiment("../cpu.yaml")
    assert (exp.name, exp.scale) == ("tiny", "cpu")
    # `...yaml` had the scale '..': its runs went to runs/experiments/.., runs/ itself
    for odd in ("..yaml", "...yaml"):
        shutil.copy(path, sub / odd)
        proc = run_cli("experiment", odd, "--plan", cwd=sub)
        assert_one_line_error(proc, "which is no folder name")


def test_a_report_names_a_file_of_your_own_by_its_path(tmp_path, monkeypatch):
    # the budgeted report's "`dard experiment tiny --scale cpu --time-budget 0` rewrites this report" named a file
    # given by its path by its folder and stem: for `mine/my exp.yaml`, `dard experiment mine --scale my exp`
    from dard.experiment.report import _preamble

    _write(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert load_experiment("tiny").command() == "dard experiment tiny --scale cpu"
    mine = tmp_path / "mine" / "my exp.yaml"
    mine.parent.mkdir()
    shutil.copy(tmp_path / "experiments" / "tiny" / "cpu.yaml", mine)
    shutil.copy(tmp_path / "experiments" / "tiny" / "base.yaml", mine.parent)
    exp = load_experiment("mine/my exp.yaml")
    assert exp.command() == "dard experiment 'mine/my exp.yaml'"
    assert "- Command: `dard experiment 'mine/my exp.yaml'`" in _preamble(exp, [], "", None)


def test_a_teacher_per_seed_trains_only_for_the_seeds_runs_take(tmp_path):
    # `teacher.seed: null` with every run at seed 1 of [0, 1]: teacher-s0 was planned and trained for no run
    from dard.experiment.plan import plan_runs

    runs = {key: {**entry, "seeds": [1]} for key, entry in SPEC["runs"].items()}
    spec = {**SPEC, "teacher": {**SPEC["teacher"], "seed": None}, "runs": runs}
    planned = plan_runs(load_experiment(str(_write(tmp_path, spec=spec))), tmp_path / "runs")
    assert [r.name for r in planned if r.role == "teacher"] == ["teacher-s1"]
    spec["runs"]["sat"] = SPEC["runs"]["sat"]  # a run at both seeds: a teacher for each
    planned = plan_runs(load_experiment(str(_write(tmp_path, spec=spec))), tmp_path / "runs")
    assert [r.name for r in planned if r.role == "teacher"] == ["teacher-s0", "teacher-s1"]


def test_two_entries_that_make_the_same_run_are_refused(tmp_path):
    # `sat2` overrides the base to the very config of `sat` (lr 0.05 is the base's): both trained, twice the compute,
    # and the report showed one run as two rows
    same = {"method": {"name": "sat", "params": STEP}, "optim": {"lr": 0.05}}
    spec = {**SPEC, "runs": {**SPEC["runs"], "sat2": same}}
    with pytest.raises(DardError, match="runs sat-s0 and sat2-s0 have the same config"):
        load_experiment(str(_write(tmp_path, spec=spec)))
    spec["runs"]["sat2"] = {**same, "optim": {"lr": 0.04}}  # a setting of its own
    assert "sat2" in load_experiment(str(_write(tmp_path, spec=spec))).spec.runs


def test_shipped_experiments_validate():
    from dard.experiment import experiments_root, load_experiment

    found = sorted(p for p in experiments_root().glob("*/*.yaml") if not p.parent.name.startswith("_"))
    assert {p.parent.name for p in found} >= {"main", "lambda", "attacks"}
    for p in found:
        exp = load_experiment(str(p))
        assert exp.spec.seeds and len(exp.spec.seeds) >= (3 if exp.scale == "cpu" else 1)


@pytest.mark.slow
def test_demo_is_an_experiment_and_runs_end_to_end_in_small(tmp_path):
    from dard.experiment.demo import demo_experiment

    exp = demo_experiment([0])
    assert [*exp.spec.runs] == ["sat", "ard", "rslad", "pgdard", "dard"]
    # the shipped spec, shrunk: a small_cnn teacher, 128 images, one epoch, no AutoAttack
    exp.spec.teacher.config = deep_merge(exp.spec.teacher.config, {"model": {"arch": "small_cnn"}})
    exp.base = deep_merge(
        exp.base,
        {
            "device": "cpu",
            "data": {"train_subset": 128, "test_subset": 32, "val_size": 64},
            "optim": {"epochs": 1},
            "eval": {"autoattack_subset": None, "eps_sweep": [], "attacks": ["fgsm"]},
        },
    )
    report = run_experiment(exp, tmp_path / "runs", tmp_path / "report", device="cpu", jobs=1)
    text = report.read_text()
    for name in ["teacher-sat-resnet20", "| sat |", "| ard |", "| rslad |", "| pgdard |", "| dard |"]:
        assert name in text


class _Identity(Attack):
    name = "identity"

    def perturb(self, model, x, y):
        return x


class _Black(Attack):
    name = "black"

    def perturb(self, model, x, y):
        return torch.zeros_like(x)


def test_attack_success_rate_counts_flipped_clean_correct_points():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.rand(40, 1, 2, 2)
    y = torch.randint(0, 3, (40,))
    rec = evaluate(model, x, y, {"id": _Identity(eps=1.0), "black": _Black(eps=1.0)}, progress=False)
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
        black_ok = model(torch.zeros_like(x)).argmax(1) == y
    assert rec.attacks["id"].fooled == 0 and rec.attacks["id"].success_rate == 0.0
    assert rec.attacks["black"].clean_correct == int(clean_ok.sum())
    assert rec.attacks["black"].fooled == int((clean_ok & ~black_ok).sum())
    assert rec.attacks["black"].success_rate == pytest.approx(float((clean_ok & ~black_ok).sum() / clean_ok.sum()))


@pytest.mark.slow
def test_experiment_says_each_run_as_it_starts_and_ends_with_the_time_left(finished):
    _, proc = finished
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("[experiment] 7 runs in ") and "~" in lines[0] and "of the plan left" in lines[0]
    assert "[experiment] teacher-s0: starting (new, training only)" in lines
    assert "[experiment] sat-s1: starting (new)" in lines
    ends = [ln for ln in lines if ln.startswith("[experiment] dard-s0: done in ")]
    assert len(ends) == 1
    left = [ln for ln in lines if "runs finished" in ln]
    assert left[-1] == "[experiment] 7/7 runs finished" and any(" 3/7 runs finished; ~" in ln for ln in left)


def test_a_report_names_a_packaged_experiment_file_the_same_from_any_folder(tmp_path, monkeypatch):
    from dard.experiment.report import _experiment_file

    monkeypatch.chdir(tmp_path)  # the committed reports are written from the repository's root; this is not it
    assert _experiment_file(load_experiment("precision", "cpu")) == "src/dard/experiments/precision/cpu.yaml"


def test_the_results_keep_the_experiment_file_as_it_was_read(finished_run, tmp_path, monkeypatch):
    # experiment.yaml was copied into the results by a second, unbounded read once the runs had finished: a file
    # edited since was kept as the one the runs were planned from (a FIFO put there blocked the report)
    from dard.experiment.report import write_experiment_report

    monkeypatch.chdir(tmp_path)
    spec = {"title": "t", "base": "base.yaml", "seeds": [0], "runs": {"natural": {"method": {"name": "natural"}}}}
    source = _write(tmp_path, spec=spec)
    read = source.read_text()
    exp = load_experiment("tiny", "cpu")
    source.write_text(read + "# edited after the plan\n")
    write_experiment_report(exp, [finished_run], tmp_path / "res")
    assert (tmp_path / "res" / "experiment.yaml").read_text() == read


@pytest.mark.parametrize("mine", ["status.md", "experiment.yaml", "report.md", "sweep.png"])
def test_a_results_folder_holding_the_users_files_is_refused(tmp_path, capsys, mine):
    # `dard experiment --results DIR` replaced DIR's status.md (the user's notes) at its first step, even under
    # --time-budget 0 with nothing to train, and report.md, experiment.yaml and the plots once a run finished:
    # `dard report --out` refused such a folder, the experiment checked only that it could write there
    from tests.cli_checks import fails_cleanly

    from dard.experiment.status import check_results_folder

    results = tmp_path / "res"
    results.mkdir()
    (results / mine).write_text("# my notes\n")
    argv = ["experiment", "demo", "--scale", "digits", "--plan", "--runs", str(tmp_path / "runs"), "--results"]
    fails_cleanly(capsys, tmp_path, [*argv, str(results)], f"--results {results} holds {mine}, which dard did not")
    (results / mine).unlink()
    (results / "status.md").write_text("# Status: demo at the digits scale\n\nWritten ...\n")  # dard's: replaced
    check_results_folder(results)
