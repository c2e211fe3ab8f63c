"""The run-folder schema (dard.run_dir): every file a real run writes round-trips through its type, the folder
holds only files RunDir names, and a missing, truncated, non-UTF-8 or wrongly typed file is one error line that
names it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.conftest import assert_one_line_error, run_cli, tiny_config

from dard.config import parse_config
from dard.errors import DardError
from dard.evaluation.record import AttackResult, Count, EvalRecord
from dard.run_dir import EpochMetrics, EvalFile, Progress, ResumePointer, RunDir, RunInfo, RunRecord
from dard.training import train


@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> RunDir:
    """A tiny run with every optional part: AutoAttack on a subset and an eps sweep (best), a mid-epoch snapshot."""
    cfg = tiny_config(
        # eps 1, the whole [0, 1] box: APGD-CE fools every clean-correct point, so FAB-T and Square have nothing
        # left to do (at 0.3 this barely trained model kept one point robust and AutoAttack took 25 s)
        eps=1.0,
        eval={"attacks": ["fgsm"], "autoattack_subset": 4, "eps_sweep": [0.05, 0.1]},
        optim={"epochs": 2},
        checkpoint_every_steps=3,
    )
    return RunDir(train(parse_config(cfg), tmp_path_factory.mktemp("rundir") / "run"))


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.slow
def test_every_file_of_a_real_run_round_trips(real_run: RunDir) -> None:
    best, last = _json(real_run.eval_file("best")), _json(real_run.eval_file("last"))
    assert {"autoattack_subset", "eps_sweep"} <= set(best)
    if best["model"].get("checkpoints") == ["best", "last"]:
        assert last == best  # the same weights: evaluated once, one record under both names
    else:
        assert not {"autoattack_subset", "eps_sweep"} & set(last)
    for raw in (best, last):
        assert EvalFile.from_dict(raw).to_dict() == raw
    parsed = real_run.read_eval("best")
    assert parsed.eps_sweep.attack == "pgd20" and set(parsed.eps_sweep.correct) == {"0.050000", "0.100000"}
    assert parsed.autoattack_subset.data["n"] == 4
    # the subset carries the clean and PGD-20 counts of its own images, which bound AutoAttack's
    sub = parsed.autoattack_subset
    assert list(sub.attacks) == ["pgd20", "autoattack"] and sub.clean.total == sub.first_n == 4
    assert sub.attacks["autoattack"].correct <= sub.clean.correct
    assert (sub.clean.outcome_array() == parsed.clean.outcome_array()[:4]).all()  # the first 4 of the same images
    assert RunInfo.from_dict(raw := _json(real_run.run_info)).to_dict() == raw
    rows = [json.loads(line) for line in real_run.metrics.read_text().splitlines()]
    assert [r.to_dict() for r in real_run.read_metrics()] == rows and len(rows) == 2
    assert ResumePointer.from_dict(raw := _json(real_run.pointer)).to_dict() == raw
    snap = real_run.resume_snapshot()
    assert Progress.from_dict(raw := _json(snap.progress)).to_dict() == raw
    assert snap.read_progress().history == real_run.read_metrics()


@pytest.mark.slow
def test_a_run_folder_holds_only_the_files_run_dir_names(real_run: RunDir) -> None:
    snap = real_run.resume_snapshot()
    named = {real_run.config, real_run.run_info, real_run.metrics, real_run.pointer}
    named |= {real_run.eval_file(w) for w in ("best", "last")}
    named |= {p for w in ("best", "last") for p in (real_run.weights(w), real_run.checkpoint_meta(w))}
    named |= {snap.weights, snap.optimizer, snap.progress}
    assert {p for p in real_run.path.rglob("*") if p.is_file()} == named
    assert real_run.snapshots() == [snap]  # older snapshots are removed once a newer one is complete
    assert real_run.is_run() and real_run.is_trained() and real_run.is_evaluated()


def _record() -> EvalRecord:
    acc = Count(2, 4)
    attacks = {"fgsm": AttackResult({"name": "fgsm", "eps": 0.1}, 1, 4, 0.1, 0.1, [], 1, 2)}
    return EvalRecord({"arch": "mlp"}, {"name": "digits", "n": 4}, {"norm": "linf", "eps": 0.1}, acc, attacks,
                      Count(1, 4), [], 0, {}, 0.5)  # fmt: skip


@pytest.fixture
def small_run(tmp_path: Path) -> RunDir:
    """A finished run folder written through the writers (no training)."""
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.write_config("name: run\nseed: 0\n")
    run.write_info(RunInfo(name="run", seed=0, method={"name": "sat"}, data={"train": 8}))
    run.write_metrics([EpochMetrics(1, 0.1, 2.0, 0.5, 10.0, 1.5, 0.5, 0.25)])
    snap = run.snapshot(3)
    snap.write_progress(Progress(epoch=1, global_step=3, history=run.read_metrics(), train_seconds=1.5))
    run.point_at(snap)
    run.write_eval("best", EvalFile.of(_record()))
    return run


def test_writers_make_a_folder_the_readers_accept(small_run: RunDir) -> None:
    record = RunRecord.load(small_run.path)
    assert record.name == "run" and record.method == {"name": "sat"} and record.train_seconds == 1.5
    assert record.evals["best"].attacks["fgsm"].success_rate == 0.5
    assert record.train_images_per_s == pytest.approx(8 / 1.5)
    assert small_run.read_progress().global_step == 3 and small_run.read_config() == {"name": "run", "seed": 0}


# (file, how it is read) pairs; each reader must fail with one line naming the file
READERS = {
    "eval": (lambda r: r.eval_file("best"), lambda r: RunRecord.load(r.path)),
    "run.json": (lambda r: r.run_info, lambda r: RunRecord.load(r.path)),
    "metrics": (lambda r: r.metrics, lambda r: RunRecord.load(r.path)),
    "progress": (lambda r: r.resume_snapshot().progress, lambda r: r.resume_snapshot().read_progress()),
    "pointer": (lambda r: r.pointer, lambda r: r.resume_snapshot()),
    "config": (lambda r: r.config, lambda r: r.read_config()),
}
WRONG_TYPE = {
    "eval": lambda d: {**d, "attacks": 5},
    "run.json": lambda d: {**d, "seed": "zero"},
    "metrics": lambda d: {**d, "epoch": "one"},
    "progress": lambda d: {**d, "history": {"epoch": 1}},
    "pointer": lambda d: {"snapshot": 7},
}


def _corrupt(path: Path, how: str, which: str) -> None:
    text = path.read_text(encoding="utf-8")
    if how == "list":
        path.write_text("[1, 2]\n" if which != "config" else "- 1\n- 2\n")
    elif how == "truncated":
        path.write_text(text[: len(text) // 2] if which != "config" else "name: [run\n")
    elif how == "non-utf8":
        path.write_bytes(b'{"name": "\xff\xfe"}\n' if which != "config" else b"name: \xff\xfe\n")
    else:
        data = json.loads(text.splitlines()[0] if which == "metrics" else text)  # metrics: its first row
        path.write_text(json.dumps(WRONG_TYPE[which](data)) + "\n")


CASES = [
    (w, h)
    for w in READERS
    for h in ("list", "truncated", "non-utf8", "wrong type")
    if (w, h) != ("config", "wrong type")
]


@pytest.mark.parametrize("which,how", CASES)
def test_a_malformed_file_is_one_error_line_naming_it(small_run: RunDir, which: str, how: str) -> None:
    locate, read = READERS[which]
    path = locate(small_run)
    _corrupt(path, how, which)
    with pytest.raises(DardError) as err:
        read(small_run)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message


def _key_twice(text: str, lines: bool) -> str:
    """The JSON object ``text`` (JSON lines: its first line) with its first key given a second time, first."""
    first, _, rest = text.partition("\n") if lines else (text, "", "")
    data = json.loads(first)
    key = next(iter(data))
    return "{" + json.dumps(key) + ": " + json.dumps(data[key]) + ", " + json.dumps(data)[1:] + "\n" + rest


@pytest.mark.parametrize("which", [w for w in READERS if w != "config"] + ["checkpoint"])
def test_a_json_key_given_twice_is_one_line_naming_the_file(small_run: RunDir, which: str) -> None:
    # {"a": 1, "a": 2} was read as the last value in silence (json.loads and pydantic alike): a hand-edited record
    # said one thing to a reader and another to dard
    from dard.checkpoint import read_checkpoint_meta

    if which == "checkpoint":
        path = small_run.checkpoint_meta("best")
        path.write_text('{"format": "x", "model": {}, "epoch": 1, "epoch": 2}')
        read = lambda r: read_checkpoint_meta(r.weights("best"))  # noqa: E731
    else:
        locate, read = READERS[which]
        path = locate(small_run)
        path.write_text(_key_twice(path.read_text(), lines=which == "metrics"))
        json.loads(path.read_text().splitlines()[0])  # still JSON: only the repeated key is wrong
    with pytest.raises(DardError, match=r"is given twice in one object") as err:
        read(small_run)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_the_experiment_extras_hold_counts_and_fractions(small_run: RunDir) -> None:
    # the cached extras were typed but not range-checked: a compare file's fooled 50 of clean_correct -3 was a
    # success rate of -1667% in the experiment report, a label gap without top1_agreement a KeyError (exit 1)
    from dard.run_dir.records import CompareFile, LabelGapFile, TeacherQualityFile

    gap = {"tv": 0.1, "top1_agreement": 0.9, "teacher_top_prob_clean": 0.8, "teacher_top_prob_adv": 0.7, "n": 4}
    small_run.write_compare("best", CompareFile({}, _record()))
    small_run.write_label_gap("best", LabelGapFile({}, {}, gap))
    small_run.write_teacher_quality(TeacherQualityFile({}, {}, _record()))
    assert small_run.read_compare("best") and small_run.read_label_gap("best") and small_run.read_teacher_quality()
    damaged = {
        small_run.compare_file("best"): lambda d: d["record"]["attacks"]["fgsm"].update(fooled=50, clean_correct=-3),
        small_run.teacher_quality_file: lambda d: d["record"]["clean"].update(correct=9),
        small_run.label_gap_file("best"): lambda d: d["gap"].pop("top1_agreement"),
    }
    for path, edit in damaged.items():
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    for read, needle in (
        (lambda: small_run.read_compare("best"), "record.fgsm.fooled is 50 of 4"),
        (lambda: small_run.read_teacher_quality(), "record.clean is 9 of 4"),
        (lambda: small_run.read_label_gap("best"), "gap.top1_agreement"),
    ):
        with pytest.raises(DardError, match=needle) as err:
            read()
        assert "\n" not in str(err.value) and str(small_run.path) in str(err.value)


def test_metrics_rows_are_one_per_epoch_in_order(small_run: RunDir) -> None:
    # dard writes one row per epoch, in order; a repeated row was a second seed in a report's curves and made an
    # imported copy look further along (import judges by the rows)
    row = small_run.metrics.read_text()
    small_run.metrics.write_text(row + row)
    with pytest.raises(DardError, match="metrics.jsonl: row 2 is epoch 1, after epoch 1"):
        RunRecord.load(small_run.path)


def test_a_missing_file_is_named(small_run: RunDir) -> None:
    small_run.resume_snapshot().progress.unlink()
    with pytest.raises(DardError, match="resume progress not found: .*progress.json"):
        small_run.resume_snapshot().read_progress()
    assert small_run.read_progress() is None  # the lenient reader used by --plan: "unreadable"
    small_run.pointer.write_text(json.dumps({"snapshot": "../elsewhere"}))
    with pytest.raises(DardError, match="not a snapshot folder name"):
        small_run.resume_snapshot()


def test_the_cli_reports_a_malformed_run_in_one_line(small_run: RunDir, tmp_path: Path) -> None:
    eval_file = small_run.eval_file("best")
    eval_file.write_text(json.dumps({**json.loads(eval_file.read_text()), "attacks": 5}))
    proc = run_cli("report", str(small_run.path), "--out", str(tmp_path / "report"))
    assert_one_line_error(proc, str(eval_file), "attacks")
    assert not (tmp_path / "report").exists()

    resumable = tmp_path / "resumable"
    shutil.copytree(small_run.path, resumable)
    RunDir(resumable).config.write_bytes(b"name: \xff\n")
    assert_one_line_error(run_cli("train", "--resume", str(resumable)), "config.yaml", "UTF-8")


def test_a_huge_file_or_a_fifo_is_one_line_and_read_no_further(small_run: RunDir) -> None:
    # a run.json of gigabytes was read and parsed whole (memory and minutes, from an archive or a runs folder), so
    # was a config.yaml checked for an edit, and a FIFO where resume.json belongs blocked the reader until something
    # wrote to it
    import os
    import threading

    from dard.run_dir.files import MAX_RECORD_BYTES
    from dard.yaml_files import MAX_YAML_BYTES

    with open(small_run.config, "r+b") as fh:  # dard export's and a resume's check of an edit read it whole
        fh.truncate(MAX_YAML_BYTES + 1)
    with pytest.raises(DardError, match="config.yaml: over 1 MiB, not a run config file"):
        small_run.check_config_unchanged()
    with open(small_run.run_info, "r+b") as fh:
        fh.truncate(MAX_RECORD_BYTES + 1)  # sparse: no disk, and nothing of it is read
    with pytest.raises(DardError, match="run.json: over 64 MiB, not a run record file"):
        RunRecord.load(small_run.path)
    small_run.pointer.unlink()
    os.mkfifo(small_run.pointer)
    got: list[BaseException] = []
    reader = threading.Thread(target=lambda: got.append(pytest.raises(DardError, small_run.resume_snapshot).value))
    reader.start()
    reader.join(20)
    if reader.is_alive():  # blocked on the FIFO: let it go before failing
        with open(small_run.pointer, "w") as fh:
            fh.write("{}")
        reader.join()
    assert got and "resume.json: it is a FIFO" in str(got[0])


@pytest.mark.parametrize(
    "edit, key",
    [
        ({"data": {"train": 10**30}}, "data.train"),
        ({"data": {"test": -1}}, "data.test"),
        ({"environment": {"world_size": "x"}}, "environment.world_size"),
        ({"stretches": [{"environment": {"world_size": 0}}]}, "environment.world_size"),
    ],
)
def test_the_counts_a_report_reads_from_run_json_are_counts(small_run: RunDir, edit, key) -> None:
    # the free-form data and environment sections were passed on as they were: "world_size": "x" and a 30-digit
    # training set size were internal errors of `dard report` (a str compared with 1, Decimal's InvalidOperation)
    info = json.loads(small_run.run_info.read_text())
    small_run.run_info.write_text(json.dumps({**info, **edit}))
    with pytest.raises(DardError, match=f"run.json: {key} is .*, not a count"):
        RunRecord.load(small_run.path)


@pytest.mark.parametrize(
    ("old", "new", "refused"),
    [
        ("name: natural", "name: my_method", "unknown method"),  # registered from Python when the run was made
        # refused by a later version: a seeded training attack
        ("name: natural\n  params: {}", "name: sat\n  params: {attack: {name: pgd, seed: 3}}", "seed"),
    ],
)
def test_a_recorded_config_is_read_without_building_what_it_names(run: Path, tmp_path, old, new, refused) -> None:
    # read_run_config built the method and attacks a record names: a run made with a method registered from
    # Python, or with a training attack a later version refuses, could no longer be evaluated, reported or imported
    import hashlib

    import yaml

    from dard.config.identity import config_identity

    text = (run / "config.yaml").read_text()
    assert old in text
    (run / "config.yaml").write_text(text.replace(old, new))
    info = _json(run / "run.json")
    info["config_sha256"] = hashlib.sha256((run / "config.yaml").read_bytes()).hexdigest()
    (run / "run.json").write_text(json.dumps(info))
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    with pytest.raises(DardError, match=refused):
        parse_config(recorded)  # a new run's config is built, and refused
    assert RunDir(run).read_run_config().model_dump(mode="json")["method"] == recorded["method"]
    assert config_identity(recorded)["method"] == recorded["method"]
    done = run_cli("eval", str(run), "--attacks", "fgsm", "--out", str(tmp_path / "e.json"))
    assert done.returncode == 0, done.stderr
    assert "fgsm" in (tmp_path / "e.json").read_text()
