"""The teacher-quality extra (an experiment's ``teacher_quality``, the teacher-quality ladder): a distilled run's
teacher measured on its own, cached in the run folder and measured again when its weights change, and the report
section that sets each student beside its teacher."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file
from tests.cli_checks import rehash_checkpoint
from tests.conftest import tiny_run_config

import dard.evaluation.suite as suite
from dard.checkpoint import FORMAT
from dard.config import parse_config
from dard.evaluation.labels import DEFAULT_SUITE
from dard.experiment.extras import extras_passes, teacher_quality
from dard.experiment.spec import ExperimentSpec, TeacherQualitySpec
from dard.experiment.teacher_section import teacher_quality_section
from dard.run_dir import RunDir, RunRecord
from dard.training.cost import DataSizes, attack_passes


def _student(finished_run: Path, tmp_path: Path) -> tuple[Path, Path, object]:
    """(a student folder to cache in, its teacher's weights, the student's planned DARD config)."""
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    shutil.copytree(finished_run, teacher)
    shutil.copytree(finished_run, student)
    weights = teacher / "best.safetensors"
    cfg = parse_config(tiny_run_config(method={"name": "dard", "params": {}}, teacher={"checkpoint": str(weights)}))
    return student, weights, cfg


def test_the_teacher_is_measured_on_the_students_test_images_and_cached(finished_run, tmp_path, monkeypatch):
    student, weights, cfg = _student(finished_run, tmp_path)
    spec = TeacherQualitySpec(n=32)
    measured = teacher_quality(student, cfg, spec, device="cpu")
    own = RunDir(weights.parent).read_eval("best")  # the teacher run's own evaluation: the same 32 images
    assert measured.record.clean == own.clean  # count and per-image outcomes
    assert measured.record.attacks["pgd20"].total == 32 and measured.teacher["epoch"] == 1
    assert RunDir(student).read_teacher_quality() == measured
    monkeypatch.setattr(suite, "evaluate", lambda *a, **k: pytest.fail("measured again"))
    assert teacher_quality(student, cfg, spec, device="cpu") == measured  # cached
    monkeypatch.undo()
    tensors = load_file(weights)
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = tensors[first] * 0
    save_file(tensors, weights, metadata={"format": FORMAT, "arch": "small_cnn"})
    rehash_checkpoint(weights)
    again = teacher_quality(student, cfg, spec, device="cpu")  # other weights: measured again
    assert again.teacher["weights_digest"] != measured.teacher["weights_digest"]


def test_the_section_sets_each_student_beside_its_teacher(finished_run, tmp_path):
    student, _, cfg = _student(finished_run, tmp_path)
    spec = TeacherQualitySpec(n=32)
    teacher_quality(student, cfg, spec, device="cpu")
    extra: dict = {}
    record = RunRecord.load(student)
    text = teacher_quality_section(spec, [record], tmp_path / "results", extra)
    row = next(line for line in text.splitlines() if line.startswith(f"| {record.name} |"))
    best = RunDir(student).read_eval("best")
    assert f"| best.safetensors (epoch 1) | {100 * best.clean.accuracy:.2f} |" in row  # the teacher is this run
    assert (tmp_path / "results" / "teacher_quality.png").stat().st_size > 0
    assert extra["teacher_quality"][0]["run"] == record.name
    none = teacher_quality_section(spec, [RunRecord.load(finished_run)], tmp_path / "other", {})
    assert "No run has its teacher measured yet." in none and not (tmp_path / "other").exists()


def test_the_budget_counts_the_teachers_passes(finished_run, tmp_path):
    _, _, cfg = _student(finished_run, tmp_path)
    base = {"title": "t", "base": "x.yaml", "seeds": [0], "runs": {"dard": {}}}
    sizes = DataSizes(train=128, val=64, test=32, classes=10, shape=(1, 8, 8))
    without = extras_passes(ExperimentSpec.model_validate(base), cfg, sizes)
    spec = ExperimentSpec.model_validate({**base, "teacher_quality": {"n": 16}})
    # clean and PGD-20 (as the cost model counts it) on 16 images, of a teacher as large as the student (the same run)
    assert extras_passes(spec, cfg, sizes) == without + 16 * (1 + attack_passes(DEFAULT_SUITE["pgd20"]))


def test_the_section_names_the_runs_it_left_out_and_why(finished_run, tmp_path):
    # a run distilled from external weights or a zoo model was left out of the table in silence: a reader could
    # not tell it from a run that was never there
    weights = finished_run / "best.safetensors"
    teachers = {
        "weights": {"weights": str(weights), "arch": "small_cnn", "normalize": False},
        "zoo": {"checkpoint": "robustbench:Standard"},
        "gone": {"checkpoint": str(tmp_path / "nowhere" / "best.safetensors")},
        "gone-weights": {"weights": str(tmp_path / "nowhere.pt"), "arch": "small_cnn", "normalize": False},
    }
    records = [RunRecord.load(finished_run)]  # natural: no teacher
    for name, teacher in teachers.items():
        shutil.copytree(finished_run, tmp_path / name)
        raw = tiny_run_config(method={"name": "dard", "params": {}}, teacher=teacher)
        (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(raw))
        records.append(RunRecord.load(tmp_path / name))
    spec = TeacherQualitySpec(n=32)
    text = teacher_quality_section(spec, records, tmp_path / "results", {})
    left = next(line for line in text.splitlines() if line.startswith("Left out: "))
    assert f"{finished_run.name} (it distils from no teacher)" in left
    assert "weights (not measured yet)" in left  # its file is there: measured, as a zoo model's is where found
    assert "zoo (its zoo teacher cannot be looked up here: model 'robustbench:Standard' needs the robustbench" in left
    assert "gone (its teacher's checkpoint is not there)" in left
    assert "gone-weights (its teacher's weights file is not there)" in left


def test_an_external_weights_teacher_is_measured_and_cached_on_its_sha256(finished_run, tmp_path, monkeypatch):
    # a teacher given as teacher.arch + teacher.weights was left out ("not a dard checkpoint"), a ladder of such
    # teachers had an empty table; now measured as it loads for the run, cached on its file's SHA-256 and how it is
    # built (a changed normalisation is another teacher)
    student, weights = tmp_path / "student", tmp_path / "teacher.safetensors"
    shutil.copytree(finished_run, student)
    shutil.copyfile(finished_run / "best.safetensors", weights)  # a checkpoint's tensors, without its metadata
    teacher = {"arch": "small_cnn", "weights": str(weights), "normalize": True}
    raw = tiny_run_config(method={"name": "dard", "params": {}}, teacher=teacher)
    (student / "config.yaml").write_text(yaml.safe_dump(raw))
    spec = TeacherQualitySpec(n=32)
    measured = teacher_quality(student, parse_config(raw), spec, device="cpu")
    assert measured.record.clean == RunDir(finished_run).read_eval("best").clean  # the same model, the same images
    assert measured.teacher["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    monkeypatch.setattr(suite, "evaluate", lambda *a, **k: pytest.fail("measured again"))
    assert teacher_quality(student, parse_config(raw), spec, device="cpu") == measured  # cached
    raw["teacher"]["normalize"] = False
    with pytest.raises(pytest.fail.Exception, match="measured again"):  # built otherwise: another teacher
        teacher_quality(student, parse_config(raw), spec, device="cpu")
    monkeypatch.undo()
    text = teacher_quality_section(spec, [RunRecord.load(student)], tmp_path / "results", {})
    assert "| teacher.safetensors (small_cnn) |" in text  # the file and its architecture


def test_the_budget_counts_the_label_gap_only_where_it_measures(finished_run, tmp_path):
    # RSLAD's kl_pgd takes no labels: label_gap leaves the run out, but the budget counted its passes
    cfg = parse_config(
        tiny_run_config(method={"name": "rslad", "params": {}}, teacher={"checkpoint": str(tmp_path / "t.safetensors")})
    )
    base = {"title": "t", "base": "x.yaml", "seeds": [0], "runs": {"rslad": {}}}
    sizes = DataSizes(train=128, val=64, test=32, classes=10, shape=(1, 8, 8))
    without = extras_passes(ExperimentSpec.model_validate(base), cfg, sizes)
    assert extras_passes(ExperimentSpec.model_validate({**base, "label_gap": {"n": 16}}), cfg, sizes) == without
    dard = parse_config(tiny_run_config(method={"name": "dard", "params": {}}, teacher={"checkpoint": "t"}))
    assert extras_passes(ExperimentSpec.model_validate({**base, "label_gap": {"n": 16}}), dard, sizes) > without


def test_a_measured_run_without_a_best_evaluation_is_named_not_dropped(finished_run, tmp_path):
    # a run whose teacher was measured but whose final evaluation (eval/best.json) is gone was missing from the
    # table in silence: the table sets the teacher beside the student's best evaluation
    student, weights, cfg = _student(finished_run, tmp_path)
    raw = tiny_run_config(method={"name": "dard", "params": {}}, teacher={"checkpoint": str(weights)})
    (student / "config.yaml").write_text(yaml.safe_dump(raw))
    spec = TeacherQualitySpec(n=32)
    teacher_quality(student, cfg, spec, device="cpu")
    (student / "eval" / "best.json").unlink()
    text = teacher_quality_section(spec, [RunRecord.load(student)], tmp_path / "results", {})
    assert "Left out: student (it has no final evaluation)." in text.splitlines()


def test_a_budget_measures_the_teacher_when_that_is_the_only_extra(finished_run, monkeypatch):
    """The ladder's one extra: `dard experiment ladder --time-budget` never ran it, its table left empty."""
    from types import SimpleNamespace

    import dard.experiment.budget as budget
    from dard.experiment.estimate import Estimate

    measured: list[str] = []
    monkeypatch.setattr(budget, "run_extras", lambda spec, root, runs, device: measured.extend(r.name for r in runs))
    sizes = DataSizes(train=128, val=64, test=32, classes=10, shape=(1, 8, 8))
    free = Estimate(train_s=0.0, eval_s=0.0, startup_s=1.0, basis="test", weights_mib=1.0, eval_rate=1e12)
    estimator = SimpleNamespace(sizes=lambda cfg: sizes, estimate=lambda *a: free)
    spec = ExperimentSpec.model_validate(
        {"title": "t", "base": "x.yaml", "seeds": [0], "runs": {"r": {}}, "teacher_quality": {"n": 16}}
    )
    job = budget._Job(SimpleNamespace(spec=spec), finished_run.parent, budget.BudgetOptions(3600), estimator, "cpu")
    run = SimpleNamespace(name=finished_run.name, config=RunDir(finished_run).read_run_config(), teacher_arch=None)
    job.extras(run)
    assert measured == [finished_run.name]
