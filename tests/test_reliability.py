"""Bad input gives one line `dard: error: ...`, exit status 2, and changes nothing on disk (docs/reliability.md).

One parametrised test per class of failure (issue "Reliability", items 1-14); each case runs `dard.cli.main` in
this process on a copy of one finished tiny run and asserts: exit 2, one stderr line starting `dard: error:` of
bounded length, no traceback, and every file under the test folder byte-identical afterwards (nothing created
either). The few cases whose point is what reaches a real stderr (torch's warnings) run in a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from tests.cli_checks import config_file, edit_json, fails_cleanly, image_folder, rehash_checkpoint
from tests.conftest import assert_one_line_error, run_cli

import dard
from dard.cli import main

# --------------------------------------------------------------------------------------------------- 2: eval --out


@pytest.mark.parametrize(
    "target, needle",
    [
        ("R/config.yaml", "inside run folder"),
        ("R/best.safetensors", "inside run folder"),
        ("R/state-000000002/progress.json", "inside run folder"),
        ("weights.pt", "not a dard eval record"),
        ("folder", "is a folder"),
    ],
)
def test_eval_out_never_overwrites_what_is_not_an_eval_record(target, needle, run, tmp_path, capsys):
    torch.save({"w": torch.zeros(2)}, tmp_path / "weights.pt")
    (tmp_path / "folder").mkdir()
    argv = ["eval", str(run), "--data", "digits", "--n", "4", "--attacks", "fgsm", "--no-progress"]
    fails_cleanly(capsys, tmp_path, [*argv, "--out", str(tmp_path / target)], needle)


def test_eval_out_writes_eval_records_only_where_allowed(run, tmp_path, capsys):
    argv = ["eval", str(run), "--data", "digits", "--n", "4", "--attacks", "fgsm", "--no-progress"]
    assert main([*argv, "--out", str(run / "eval" / "mine.json")]) == 0
    assert main([*argv, "--out", str(tmp_path / "rec.json")]) == 0
    assert main([*argv, "--out", str(tmp_path / "rec.json")]) == 0  # an eval record may be replaced
    assert json.loads((run / "eval" / "mine.json").read_text())["clean"]["total"] == 4
    assert [p.name for p in tmp_path.glob("rec*")] == ["rec.json"]  # by the same evaluation, run again
    # ... but not by another one: the record of 4 images under FGSM was lost to one of 6 under PGD-20
    capsys.readouterr()
    other = [*argv[:-5], "--n", "6", "--attacks", "pgd20", "--no-progress", "--out", str(tmp_path / "rec.json")]
    assert main(other) == 0
    kept = tmp_path / "rec.superseded-1.json"
    assert f"note: {tmp_path / 'rec.json'} held the record of another evaluation; it is kept as {kept}" in (
        capsys.readouterr().out
    )
    assert list(json.loads(kept.read_text())["attacks"]) == ["fgsm"]
    assert list(json.loads((tmp_path / "rec.json").read_text())["attacks"]) == ["pgd20"]
    assert not (run / ".dard.lock").exists()  # the run's lock is given back


# ---------------------------------------------------------------------------------------- 3: checked before work


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--set", "val.attack.name=nosuch"], ["val.attack: unknown attack 'nosuch'"]),
        (["--set", "eval.attacks=[fgsm,nosuch]"], ["eval.attacks: unknown attack 'nosuch'", "pgd20", "pgd-large"]),
        (["--method", "sat", "--set", "method.params.attack.steps=-1"], ["method:", "steps"]),
        (["--set", "eval.eps_sweep=[2.0]"], ["eval.eps_sweep"]),
        (["--method", "dard", "--teacher", "{tmp}/nowhere"], ["not found"]),
        (["--method", "sat", "--teacher", "{run}"], ["takes no teacher"]),
        (["--method", "dard"], ["needs a teacher", "--teacher RUN"]),
        (["--method", "dard", "--teacher", "timm:resnet18"], ["a timm model by name has no trained weights"]),
        (["--model", "nosuchnet"], ["model.arch: unknown model 'nosuchnet'"]),
        # found only when the data loaded, after the run folder was made and locked (an experiment: naming no key)
        (["--data", "mnist"], ["data.name: unknown dataset 'mnist'; valid: cifar10, cifar100, digits, folder"]),
        # configs the schema took that failed later, as internal errors: at the optimizer, the cost estimate, the
        # model's construction, the first torch.compile
        (["--set", "optim.nesterov=true", "--set", "optim.momentum=0"], ["optim", "nesterov needs a momentum"]),
        (["--set", "eval.checkpoints=[]"], ["eval.checkpoints", "at least 1"]),
        (["--set", "optim.batch_size=1000"], ["optim.batch_size 1000 exceeds the 128 training images"]),
        # `attack: pgd` (a name, not a mapping) was an internal error (ValueError from dict())
        (["--method", "sat", "--set", "method.params.attack=pgd"], ["method 'sat': attack must be a mapping"]),
        (["--method", "trades", "--set", "method.params.attack=[1]"], ["method 'trades': attack must be a mapping"]),
        (["--set", "model.kwargs={num_classes: 3}"], ["model.kwargs", "num_classes comes from the dataset"]),
        (["--set", "model.kwargs={std: [1]}"], ["model.kwargs", "normalisation comes from the dataset"]),
        pytest.param(  # slow: imports torch._dynamo
            ["--set", "speed.compile=true", "--set", "speed.compile_backend=nope"],
            ["speed.compile_backend", "no backend 'nope'", "inductor"],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_new_run_is_checked_before_any_work(extra, needles, run, tmp_path, capsys):
    extra = [a.replace("{tmp}", str(tmp_path)).replace("{run}", str(run)) for a in extra]
    fails_cleanly(
        capsys, tmp_path, ["train", "--config", config_file(tmp_path), "--out", str(tmp_path / "new"), *extra], *needles
    )


@pytest.mark.parametrize(
    "teacher, needles",
    [
        ({"arch": "resnet81"}, ["teacher.arch: unknown model 'resnet81'"]),
        ({"weights": "{tmp}/missing.pt"}, ["teacher.weights: weights file not found"]),
        ({"weights": "{tmp}/notes.pt"}, ["teacher.weights:", "neither safetensors nor a PyTorch checkpoint"]),
        # a misspelt factory argument was found when the teacher was built, after the data and the student
        ({"kwargs": {"widht": 2}}, ["teacher.kwargs: model 'small_cnn': its factory takes no argument 'widht'"]),
    ],
)
def test_a_teacher_from_weights_is_checked_before_the_data_loads(teacher, needles, tmp_path, capsys):
    # teacher.arch and teacher.weights were first looked at after the data had loaded (CIFAR: seconds, a download)
    # and the student was built: here the data is missing, and the teacher's own error still comes first
    (tmp_path / "notes.pt").write_text("not weights\n")
    save_file(dard.create_model("small_cnn", in_channels=1).state_dict(), str(tmp_path / "t.safetensors"))
    given = {"arch": "small_cnn", "weights": str(tmp_path / "t.safetensors"), "normalize": False, **teacher}
    given = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in given.items()}
    data = {"name": "cifar10", "dir": str(tmp_path / "no-data")}
    cfg = config_file(tmp_path, method={"name": "dard", "params": {}}, teacher=given, data=data)
    fails_cleanly(capsys, tmp_path, ["train", "--config", cfg, "--out", str(tmp_path / "new")], *needles)


def _small_cnn_weights(path: Path, *, classes: int = 10, poison: bool = False) -> str:
    state = dard.create_model("small_cnn", num_classes=classes, in_channels=3).state_dict()
    if poison:
        state["conv1.weight"].view(-1)[3] = float("nan")
    save_file(state, str(path))
    return str(path)


def test_weights_that_do_not_fit_are_refused_before_the_data_loads(run, tmp_path, capsys):
    # another architecture's tensors, NaN values or another class count (a teacher's external weights or dard
    # checkpoint, `dard eval --weights` or a checkpoint) were found only after the data had loaded: here the data is
    # missing, and the weights' own error still comes first
    resnet8 = tmp_path / "r8.safetensors"
    save_file(dard.create_model("resnet8", num_classes=10).state_dict(), str(resnet8))
    cases = [
        ("resnet20", str(resnet8), ["r8.safetensors into CifarResNet", "missing key(s) [layer1.1.conv1.weight"]),
        ("small_cnn", _small_cnn_weights(tmp_path / "nan.safetensors", poison=True), ["'conv1.weight' holds 1 NaN"]),
        ("small_cnn", _small_cnn_weights(tmp_path / "c5.safetensors", classes=5), ["fc.bias: checkpoint (5,) vs"]),
    ]
    data = {"name": "cifar10", "dir": str(tmp_path / "no-data")}
    for arch, weights, needles in cases:
        given = {"arch": arch, "weights": weights, "normalize": False}
        cfg = config_file(tmp_path, method={"name": "dard", "params": {}}, teacher=given, data=data)
        fails_cleanly(capsys, tmp_path, ["train", "--config", cfg, "--out", str(tmp_path / "new")], *needles)
        argv = ["eval", "--model", arch, "--weights", weights, "--normalization", "none", "--data-dir", data["dir"]]
        fails_cleanly(capsys, tmp_path, argv, *needles)
    # a dard checkpoint as teacher or evaluated: its class count against the dataset's, its weights finite
    data = {"name": "cifar100", "dir": str(tmp_path / "no-data")}
    cfg = config_file(tmp_path, method={"name": "dard", "params": {}}, data=data)
    argv = ["train", "--config", cfg, "--teacher", str(run), "--out", str(tmp_path / "new")]
    fails_cleanly(capsys, tmp_path, argv, "teacher has 10 classes but dataset 'cifar100' has 100")
    argv = ["eval", str(run), "--data", "cifar100", "--data-dir", data["dir"]]
    fails_cleanly(capsys, tmp_path, argv, "has 10 classes but dataset 'cifar100' has 100")
    _poison(run / "best.safetensors", float("nan"))
    argv = ["train", "--config", config_file(tmp_path, method={"name": "dard", "params": {}}, data=data)]
    fails_cleanly(capsys, tmp_path, [*argv, "--teacher", str(run), "--out", str(tmp_path / "new")], "conv1.weight")
    fails_cleanly(capsys, tmp_path, ["eval", str(run), "--data", "cifar100", "--data-dir", data["dir"]], "conv1.weight")


def test_a_teacher_run_without_its_best_checkpoint_is_refused_not_taken_at_its_last(run, tmp_path, capsys):
    # `--teacher RUN` whose best.safetensors was gone distilled from last.safetensors in silence, run.json naming
    # only the folder: another teacher than the one meant, and results that changed without a word
    (run / "best.safetensors").unlink()
    data = {"name": "cifar10", "dir": str(tmp_path / "no-data")}  # refused before the data loads
    cfg = config_file(tmp_path, method={"name": "dard", "params": {}}, data=data)
    argv = ["train", "--config", cfg, "--out", str(tmp_path / "new")]
    fails_cleanly(
        capsys, tmp_path, [*argv, "--teacher", str(run)], f"best checkpoint {run}/best.safetensors is missing",
        f"name it: {run}/last.safetensors",
    )  # fmt: skip
    # named, the last checkpoint is taken, and run.json says which file and epoch the student learned from
    cfg = config_file(tmp_path, method={"name": "dard", "params": {}})
    assert main(["train", "--config", cfg, "--out", str(tmp_path / "new"), "--teacher", f"{run}/last.json"]) == 0
    teacher = json.loads((tmp_path / "new" / "run.json").read_text())["teacher"]
    assert teacher["source"] == f"{run}/last.safetensors" and teacher["epoch"] == 1
    # a resume may say where its teacher lies now, but not in the student's own folder: it distilled from its own
    # best checkpoint, which its training replaced
    student = tmp_path / "new"
    argv = ["train", "--resume", str(student), "--epochs", "2", "--set", f"teacher.checkpoint={student}/best.json"]
    fails_cleanly(capsys, tmp_path, argv, f"is a checkpoint of the run being trained ({student})")


def test_a_dard_checkpoint_given_as_external_weights_keeps_its_normalisation(run, tmp_path, capsys):
    # a checkpoint's .safetensors given as teacher.weights or --weights with the other normalisation than its .json
    # records was normalised twice or not at all: a teacher or an evaluation far below its accuracy, without a word
    weights = run / "best.safetensors"
    given = {"arch": "small_cnn", "weights": str(weights), "normalize": False}
    data = {"name": "cifar10", "dir": str(tmp_path / "no-data")}
    cfg = config_file(tmp_path, method={"name": "dard", "params": {}}, teacher=given, data=data)
    needles = [f"{weights} is a dard checkpoint trained on inputs normalised with the dataset's mean/std (best.json)"]
    argv = ["train", "--config", cfg, "--out", str(tmp_path / "new")]
    fails_cleanly(capsys, tmp_path, argv, *needles, "teacher.normalize: false contradicts", f"--teacher {weights}")
    argv = ["eval", "--model", "small_cnn", "--weights", str(weights), "--normalization", "none", "--data", "digits"]
    fails_cleanly(capsys, tmp_path, argv, *needles, "--normalization none contradicts", f"dard eval {weights}")
    argv = [*argv[:-3], "dataset", "--data", "digits", "--n", "4", "--attacks", "fgsm"]
    assert main(argv) == 0  # as recorded: taken


def test_run_json_records_the_teachers_sha256_and_a_resume_keeps_that_teacher(run, tmp_path, capsys):
    # run.json named the teacher's file by its path alone: two students of teachers with one name but other weights
    # could not be told apart, and `--resume --set teacher.checkpoint=` of other weights continued in silence
    other = Path(shutil.copytree(run, tmp_path / "other"))
    _poison(other / "best.safetensors", 0.5)  # another teacher, same layout and name
    cfg = config_file(tmp_path, method={"name": "dard", "params": {}})
    student = tmp_path / "student"
    assert main(["train", "--config", cfg, "--teacher", str(run), "--out", str(student)]) == 0
    info = json.loads((student / "run.json").read_text())
    assert info["teacher_sha256"] == hashlib.sha256((run / "best.safetensors").read_bytes()).hexdigest()
    argv = ["train", "--resume", str(student), "--epochs", "2", "--set", f"teacher.checkpoint={other}"]
    fails_cleanly(capsys, tmp_path, argv, f"teacher {other} is not the one this run started with", "SHA-256")
    # the same teacher where it lies now is followed
    moved = Path(shutil.move(str(run), tmp_path / "moved"))
    assert main(["train", "--resume", str(student), "--epochs", "2", "--set", f"teacher.checkpoint={moved}"]) == 0
    # external weights: the file given
    given = {"arch": "small_cnn", "weights": str(other / "best.safetensors"), "normalize": True}
    cfg = config_file(tmp_path, method={"name": "dard", "params": {}}, teacher=given)
    assert main(["train", "--config", cfg, "--out", str(tmp_path / "s2")]) == 0
    info = json.loads((tmp_path / "s2" / "run.json").read_text())
    assert info["teacher_sha256"] == hashlib.sha256((other / "best.safetensors").read_bytes()).hexdigest()
    # a value that is no SHA-256 is refused when read
    edit_json(tmp_path / "s2" / "run.json", lambda d: d.update(teacher_sha256="abc"))
    fails_cleanly(capsys, None, ["report", str(tmp_path / "s2"), "--out", str(tmp_path / "rep")], "teacher_sha256")


@pytest.mark.parametrize(
    "damage, needle",
    [("folder", "best.safetensors: it is a folder, not"), ("empty", "best.safetensors is not a weights file")],
)
def test_a_checkpoint_that_is_no_weights_file_is_refused_before_the_data_loads(damage, needle, run, tmp_path, capsys):
    # a folder named best.safetensors was looked into for checkpoints ("holds no checkpoint"), and an empty one
    # was found only when the weights loaded, after the data (a teacher's and dard eval RUN's alike)
    weights = run / "best.safetensors"
    weights.unlink()
    weights.mkdir() if damage == "folder" else weights.write_bytes(b"")
    data = {"name": "cifar10", "dir": str(tmp_path / "no-data")}
    cfg = config_file(tmp_path, method={"name": "dard", "params": {}}, data=data)
    for teacher in (run, weights):
        argv = ["train", "--config", cfg, "--teacher", str(teacher), "--out", str(tmp_path / "new")]
        fails_cleanly(capsys, tmp_path, argv, needle)
    fails_cleanly(capsys, tmp_path, ["eval", str(run), "--data", "cifar10", "--data-dir", data["dir"]], needle)


def test_a_checkpoint_named_by_an_eval_record_or_an_archive_says_what_it_is(run, tmp_path, capsys):
    # --teacher R/eval/best.json was "checkpoint not found: R/eval/best.safetensors", and an export archive "not a dard
    # checkpoint; a teacher from raw weights needs ...": neither said what the file was nor what to give
    archive = tmp_path / "runs.tar.gz"
    assert main(["export", str(run), "--out", str(archive)]) == 0
    data = {"name": "cifar10", "dir": str(tmp_path / "no-data")}
    cfg = config_file(tmp_path, method={"name": "dard", "params": {}}, data=data)
    for given, needles in [
        (run / "eval" / "best.json", ["no best.safetensors beside it, so no checkpoint", "a run folder"]),
        (run / "run.json", ["no run.safetensors beside it, so no checkpoint"]),
        (archive, ["is an archive, not a checkpoint", f"dard import {archive} --runs DIR"]),
    ]:
        argv = ["train", "--config", cfg, "--teacher", str(given), "--out", str(tmp_path / "new")]
        fails_cleanly(capsys, tmp_path, argv, *needles)
        fails_cleanly(capsys, tmp_path, ["eval", str(given), "--data-dir", data["dir"]], *needles)


def test_model_kwargs_are_checked_before_the_data_loads(tmp_path, capsys):
    # model.kwargs met the factory's signature when the student was built, after the data had loaded
    data = {"name": "cifar10", "dir": str(tmp_path / "no-data")}
    cfg = config_file(tmp_path, model={"arch": "small_cnn", "kwargs": {"widht": 2}}, data=data)
    argv = ["train", "--config", cfg, "--out", str(tmp_path / "new")]
    fails_cleanly(capsys, tmp_path, argv, "model.kwargs: model 'small_cnn': its factory takes no argument 'widht'")


@pytest.mark.parametrize(
    "extra, needles",
    [
        (["--method", "sat"], ["--method cannot change"]),
        (["--out", "{tmp}/x"], ["--out cannot change"]),
        (["--set", "optim.lr=0.5"], ["cannot change optim.lr (0.05 -> 0.5)"]),
        (["--epochs", "0"], ["optim.epochs"]),
        (["--set", "eval.attacks=[nosuch]"], ["eval.attacks: unknown attack"]),
    ],
)
def test_resume_refuses_what_it_does_not_apply(extra, needles, run, tmp_path, capsys):
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    fails_cleanly(capsys, tmp_path, ["train", "--resume", str(run), *extra], *needles)


# ------------------------------------------------------------------------------------------------- 4: not UTF-8


def test_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    fails_cleanly(capsys, tmp_path, ["train", "--config", str(bad), "--out", str(tmp_path / "o")], "not UTF-8")
    fails_cleanly(capsys, tmp_path, ["experiment", str(bad), "--plan", "--runs", str(tmp_path / "r")], "not UTF-8")


# ------------------------------------------------------------------------------------- 5: corrupt files on resume


def _optim_without_keys(run: Path) -> None:
    torch.save({"x": torch.zeros(1)}, run / "state-000000002" / "optim.pt")


@pytest.mark.parametrize(
    "name, corrupt",
    [
        ("resume.json", lambda r: (r / "resume.json").write_text('{"snapshot": "sta')),
        ("resume.json", lambda r: (r / "resume.json").write_text("")),
        ("resume.json", lambda r: (r / "resume.json").write_text("[]")),
        ("config.yaml", lambda r: (r / "config.yaml").write_text("optim: [1,\n")),
        ("config.yaml", lambda r: (r / "config.yaml").write_bytes(b"name: caf\xe9\n")),
        ("config.yaml", lambda r: (r / "config.yaml").write_text("optim: {lr: -1}\n")),
        ("optim.pt", _optim_without_keys),
        ("progress.json", lambda r: (r / "state-000000002" / "progress.json").write_text('{"epoch": 1}')),
        ("student.safetensors", lambda r: (r / "state-000000002" / "student.safetensors").write_bytes(b"\x08")),
        ("eval/best.json", lambda r: (r / "eval" / "best.json").write_text("{")),
    ],
)
def test_corrupt_run_file_on_resume_names_it(name, corrupt, run, tmp_path, capsys):
    corrupt(run)
    fails_cleanly(capsys, tmp_path, ["train", "--resume", str(run)], name)


# -------------------------------------------------------------------------------------- 6: outputs not writable


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["train", "--config", "{cfg}", "--out", "{tmp}/file.txt"], ["file.txt is a file, not a folder"]),
        (["train", "--config", "{cfg}", "--out", "{tmp}/file.txt/run"], ["file.txt is a file, not a folder"]),
        (["report", "{run}", "--out", "{tmp}/file.txt"], ["file.txt is a file"]),
        (["eval", "{run}", "--data", "digits", "--out", "{tmp}/file.txt/r.json"], ["file.txt is a file"]),
        (["experiment", "demo", "--scale", "digits", "--runs", "{tmp}/file.txt"], ["file.txt is a file"]),
    ],
)
def test_output_that_cannot_be_written_is_one_line(argv, needles, run, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("mine\n")
    subst = {"{cfg}": config_file(tmp_path), "{tmp}": str(tmp_path), "{run}": str(run)}
    argv = [next((a.replace(k, v) for k, v in subst.items() if k in a), a) for a in argv]
    fails_cleanly(capsys, tmp_path, argv, *needles)


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only file system (a tmpfs mounted read-only; needs root, which CI has)."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_runs_and_reports_never_land_inside_a_run_folder(run, tmp_path, capsys):
    # `dard import --runs RUN` put the runs (and its staging folder) among the run's own files, a link to a run
    # folder too; `dard experiment --runs/--results` inside a run trained and reported there
    (tmp_path / "link").symlink_to(run)
    for target in (run, run / "eval", tmp_path / "link"):
        fails_cleanly(capsys, tmp_path, ["import", str(run), "--runs", str(target)], "lies inside run folder")
    base = Path(dard.__file__).parent / "experiments" / "_scales" / "digits.yaml"
    exp = tmp_path / "exp.yaml"
    exp.write_text(
        yaml.safe_dump(
            {"title": "t", "base": str(base), "seeds": [0], "runs": {"nat": {"method": {"name": "natural"}}}}
        )
    )
    outside = str(tmp_path / "elsewhere")
    for runs, results in ((run / "runs", outside), (outside, run / "report")):
        argv = ["experiment", str(exp), "--runs", str(runs), "--results", str(results)]
        fails_cleanly(capsys, tmp_path, argv, "lies inside run folder")


def test_read_only_output_is_one_line(read_only_dir, run, tmp_path, capsys):
    cfg = config_file(tmp_path)
    fails_cleanly(
        capsys, tmp_path, ["train", "--config", cfg, "--out", str(read_only_dir / "r")], "Read-only file system"
    )
    eval_argv = ["eval", str(run), "--data", "digits", "--out", str(read_only_dir / "e.json")]
    fails_cleanly(capsys, tmp_path, eval_argv, "Read-only file system")


# ------------------------------------------------------------------------------- 7, 8: malformed and absurd files


def _count_off_by_one(count: dict) -> None:
    count["correct"] = (count["correct"] + 1) % (count["total"] + 1)  # still a count, no longer its outcomes


@pytest.mark.parametrize(
    "edit, needles",
    [
        (lambda d: [], ["eval/best.json", "object"]),
        (lambda d: d.update(attacks=5), ["eval/best.json", "attacks"]),
        # per-image outcomes that are not the record's images or counts: reports pair (McNemar) on the outcomes
        # and print the counts, so a pair's numbers were not the table's (or the pairing failed as a bare line)
        (lambda d: d["clean"].update(outcomes="AAAAAAAAAAAA"), ["eval/best.json", "clean", "9 bytes"]),
        (lambda d: _count_off_by_one(d["clean"]), ["eval/best.json", "clean", "per-image outcomes"]),
        (lambda d: _count_off_by_one(d["attacks"]["fgsm"]), ["eval/best.json", "fgsm", "per-image outcomes"]),
        (lambda d: d["worst_case"].update(outcomes="@@@@"), ["eval/best.json", "worst_case", "base64"]),
        (lambda d: d["data"].update(first_n=7), ["eval/best.json", "data.first_n"]),
        # a count of no images: 0 of 0 was printed as an accuracy of 0.00% in every table
        (lambda d: d["clean"].update(correct=0, total=0, outcomes=None), ["eval/best.json", "clean", "on 0 images"]),
        (lambda d: d["attacks"]["fgsm"].update(correct=0, total=0), ["eval/best.json", "fgsm", "no accuracy"]),
    ],
)
def test_report_on_malformed_eval_record(edit, needles, run, tmp_path, capsys):
    edit_json(run / "eval" / "best.json", edit)
    fails_cleanly(capsys, tmp_path, ["report", str(run), "--out", str(tmp_path / "rep")], *needles)


def _not_its_own(run: Path, name: str, how: str) -> None:
    """Put a link to another run's file (or folder), or a FIFO, where the run's file ``name`` belongs."""
    import os
    import shutil

    other = Path(shutil.copytree(run, run.parent / "other"))
    path = run / name
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.symlink(other / name, path) if how == "link" else os.mkfifo(path)


RUN_FILES = ("run.json", "config.yaml", "metrics.jsonl", "eval/best.json", "eval/last.json")


@pytest.mark.parametrize("name, how", [(n, h) for n in RUN_FILES for h in ("link", "fifo")] + [("eval", "link")])
def test_report_reads_only_the_runs_own_files(name, how, run, tmp_path, capsys):
    # a report read through a link inside the run (metrics.jsonl -> /elsewhere, eval/best.json -> another run's)
    # and took a FIFO metrics.jsonl or run.json for absent: numbers that are not the run's, without a word
    _not_its_own(run, name, how)
    kind = {"link": "a symbolic link", "fifo": "a FIFO"}[how]
    needle = f"{run}/eval is {kind}, not a folder" if name == "eval" else f"{run}/{name}: it is {kind}, not the"
    fails_cleanly(capsys, tmp_path, ["report", str(run), "--out", str(tmp_path / "rep")], needle)


@pytest.mark.parametrize("name", ["best.safetensors", "best.json"])
def test_a_runs_checkpoint_is_read_only_as_its_own(name, run, tmp_path, capsys):
    # RUN/best.safetensors -> another run's weights was evaluated (and distilled from) as this run's best
    _not_its_own(run, name, "link")
    needle = f"{run}/{name}: it is a symbolic link"
    fails_cleanly(capsys, tmp_path, ["eval", str(run), "--data", "digits", "--n", "4"], needle)
    cfg = config_file(tmp_path, method={"name": "dard", "params": {}})
    argv = ["train", "--config", cfg, "--teacher", str(run), "--out", str(tmp_path / "s")]
    fails_cleanly(capsys, tmp_path, argv, needle)


@pytest.mark.parametrize("key, value", [("num_classes", 10**12), ("in_channels", 10**9), ("num_classes", "10")])
def test_absurd_sizes_in_checkpoint_metadata_are_bounded(key, value, run, tmp_path, capsys):
    edit_json(run / "best.json", lambda d: d["model"].update({key: value}))
    fails_cleanly(capsys, tmp_path, ["eval", str(run), "--data", "digits", "--n", "4"], "best.json", key)


@pytest.mark.parametrize(
    "key, value", [("epoch", "abc"), ("epoch", -1), ("selected_by", [1]), ("metrics", {"epoch": 1, "lr": "x"})]
)
def test_checkpoint_provenance_is_typed_not_echoed(key, value, run, tmp_path, capsys):
    # eval records and the ladder's teacher table quote a checkpoint's epoch: it was copied in unchecked
    edit_json(run / "best.json", lambda d: d.update({key: value}))
    fails_cleanly(capsys, tmp_path, ["eval", str(run), "--data", "digits", "--n", "4"], "best.json", key)


DEEP_JSON = "[" * 5000 + "]" * 5000  # deeper than Python's JSON parser recurses


def test_json_nested_too_deep_is_malformed_json(run, tmp_path, capsys):
    # the parser's RecursionError slipped past the callers' ValueError: an internal error instead of their answer
    (run / ".dard.lock").write_text(DEEP_JSON[:4096])  # a lock file left with no owner dard can read: taken over
    argv = ["eval", str(run), "--data", "digits", "--n", "4", "--attacks", "fgsm", "--no-progress"]
    assert main([*argv, "--out", str(run / "eval" / "mine.json")]) == 0, capsys.readouterr().err
    assert not (run / ".dard.lock").exists()
    (run / "best.json").write_text(DEEP_JSON)
    fails_cleanly(capsys, tmp_path, argv, "best.json", "not a dard checkpoint")
    report = tmp_path / "rep"
    report.mkdir()
    (report / "results.json").write_text(DEEP_JSON)
    fails_cleanly(capsys, tmp_path, ["report", str(run), "--out", str(report)], "results.json", "did not write")


# ----------------------------------------------------------------------------------- 9: images too small for it


def test_images_too_small_for_the_model_name_its_minimum(run, tmp_path, capsys):
    folder = image_folder(tmp_path / "px1", side=1)
    cfg = config_file(
        tmp_path, data={"name": "folder", "dir": str(folder), "train_subset": None, "test_subset": None, "val_size": 10}
    )
    argv = ["train", "--config", cfg, "--set", "optim.batch_size=8", "--out", str(tmp_path / "new")]
    fails_cleanly(capsys, tmp_path, argv, "needs images of at least 2x2 pixels", "1x1")
    eval_argv = ["eval", str(run), "--data", "folder", "--data-dir", str(folder)]
    fails_cleanly(capsys, tmp_path, eval_argv, "at least 2x2")


# --------------------------------------------------------------------------------------- 10: demo --seeds a,b


@pytest.mark.parametrize("seeds", ["a,b", "0,-1", ","])
def test_demo_seeds_must_be_integers(seeds, tmp_path, capsys):
    fails_cleanly(capsys, tmp_path, ["demo", "--seeds", seeds, "--out", str(tmp_path / "demo")], "--seeds")


# --------------------------------------------------------------------------- 11: pickles: one line, no warnings


@pytest.mark.slow
def test_pickled_weights_are_refused_in_exactly_one_line(tmp_path):
    """A protocol-4 pickle is refused by the weights-only loader; torch's warnings must not reach stderr."""
    model = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, model, pickle_protocol=4)
    argv = ["--model", "small_cnn", "--weights", str(model), "--normalization", "none", "--data", "digits"]
    proc = run_cli("eval", *argv, "--n", "4", isolated=True)  # warnings reach a real stderr only
    assert_one_line_error(proc, "model.pt")


# -------------------------------------------------------------------------------------- 12: NaN or inf weights


def _poison(weights: Path, value: float) -> None:
    tensors = load_file(str(weights))
    tensors["conv1.weight"].view(-1)[3] = value
    save_file(tensors, str(weights))
    rehash_checkpoint(weights)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_name_the_tensor(value, run, tmp_path, capsys):
    _poison(run / "best.safetensors", value)
    fails_cleanly(capsys, tmp_path, ["eval", str(run), "--data", "digits", "--n", "4"], "conv1.weight")
    argv = ["train", "--config", config_file(tmp_path), "--method", "dard", "--teacher", str(run)]
    line = fails_cleanly(capsys, tmp_path, [*argv, "--out", str(tmp_path / "new")], "conv1.weight", "best.safetensors")
    assert "optim.lr" not in line


# --------------------------------------------------------------------------------- 13: echoed values are capped


def _alias_chain(levels: int = 9) -> str:
    """YAML whose value expands to 9**levels items (shared aliases): megabytes when printed in full."""
    lines = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(lines) + f", *a{levels - 1}]"


@pytest.mark.parametrize("key", ["optim.lr", "method.params.lam", "eps"])
def test_echoed_values_are_capped(key, tmp_path, capsys):
    argv = ["train", "--config", config_file(tmp_path), "--method", "dard", "--set", f"{key}={_alias_chain()}"]
    fails_cleanly(capsys, tmp_path, [*argv, "--out", str(tmp_path / "new")], key.split(".")[-1])


def test_long_names_are_capped(run, tmp_path, capsys):
    fails_cleanly(
        capsys, tmp_path, ["eval", str(run), "--data", "digits", "--attacks", "x" * 100_000], "unknown attack"
    )


# ------------------------------------------------------------------------------------------------ 14: small ones


@pytest.mark.parametrize(
    "extra, needles, absent",
    [
        (["--set", "optim.lr=.inf"], ["optim.lr", "finite"], None),
        (["--set", "eps=.nan"], ["eps", "finite"], None),
        (["--method", "dard", "--teacher", "{tmp}/x.pt"], ["teacher.arch", "teacher.weights"], "--model ARCH"),
        # external weights whose normalisation nobody stated: the default normalised a teacher twice without an error
        (
            ["--method", "dard", "--set", "teacher.arch=small_cnn", "--set", "teacher.weights={tmp}/x.pt"],
            ["teacher.normalize", "raw [0, 1]"],
            None,
        ),
    ],
)
def test_small_ones(extra, needles, absent, tmp_path, capsys):
    torch.save({"w": torch.zeros(2)}, tmp_path / "x.pt")
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    argv = ["train", "--config", config_file(tmp_path), "--out", str(tmp_path / "new"), *extra]
    line = fails_cleanly(capsys, tmp_path, argv, *needles)
    assert absent is None or absent not in line


@pytest.mark.parametrize("eps, hint", [("-1", False), ("8", True), ("300", False)])
def test_eps_hint_only_where_it_makes_sense(eps, hint, run, tmp_path, capsys):
    line = fails_cleanly(capsys, tmp_path, ["eval", str(run), "--data", "digits", "--eps", eps], "outside [0, 1]")
    assert ("/255?" in line) == hint


def test_checkpoint_files_get_the_usual_permissions(finished_run):
    modes = {p.name: p.stat().st_mode & 0o777 for p in finished_run.iterdir() if p.is_file()}
    assert modes["best.safetensors"] == modes["best.json"] == modes["config.yaml"]
    assert modes["best.safetensors"] & 0o044  # readable by group and others under the usual umask


def test_checkpoint_metadata_that_is_a_fifo_is_one_line(run, tmp_path, capsys):
    # a checkpoint's metadata was read with open(): a FIFO at RUN/best.json (`dard eval`, a teacher's checkpoint)
    # blocked the command until something wrote to it
    import os
    import threading

    from dard.checkpoint import checkpoint_meta
    from dard.errors import DardError

    meta = run / "best.json"
    meta.unlink()
    os.mkfifo(meta)
    got: list[BaseException] = []
    reader = threading.Thread(target=lambda: got.append(pytest.raises(DardError, checkpoint_meta, meta).value))
    reader.start()
    reader.join(20)
    if reader.is_alive():  # blocked on the FIFO: let it go before failing
        with open(meta, "w") as fh:
            fh.write("{}")
        reader.join()
    assert got and "best.json: it is a FIFO" in str(got[0])
    fails_cleanly(capsys, tmp_path, ["eval", str(meta), "--data", "digits", "--n", "4"], "best.json", "FIFO")


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "show", "{p}.yaml"],
        ["train", "--config", "{p}.yaml", "--out", "{tmp}/r"],
        ["experiment", "{p}.yaml", "--results", "{tmp}/res"],
        ["eval", "{p}.pt"],
        ["eval", "{p}.json"],
        ["eval", "--weights", "{p}.pt", "--model", "small_cnn", "--normalization", "none", "--data", "digits"],
        ["report", "{p}.json", "--out", "{tmp}/rep"],
    ],
    ids=["config-show", "train-config", "experiment", "eval", "eval-json", "eval-weights", "report"],
)
def test_a_fifo_named_as_a_file_is_said_to_be_one(tmp_path: Path, argv: list[str]) -> None:
    # `dard config show FIFO` said "config file not found" (find_config and the YAML reader asked is_file), as did an
    # experiment's scale or base file, `dard report FIFO` "folder not found": every reader of a named file now says
    # what the path is (dard.reading.check_regular_file), and none blocks on it
    import os

    for suffix in (".yaml", ".pt", ".json"):
        os.mkfifo(tmp_path / f"f{suffix}")
    args = [a.format(p=tmp_path / "f", tmp=tmp_path) for a in argv]
    proc = run_cli(*args)
    assert_one_line_error(proc, "it is a FIFO")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json", "f.pt", "f.yaml"]
