"""The reliability rules, proved on generated cases (docs/reliability.md, "The write rule" and "The resume rule").

Each test draws its cases with Hypothesis (few examples, derandomised: the suite stays fast and repeatable) and
runs `dard.cli.main` in this process on a fresh copy of one finished tiny run. Every refused case asserts exit
status 2, one bounded `dard: error:` line, no traceback, and every file under the case's folder byte-identical
afterwards (a file outside the run that a link points at included).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest.mock import patch

import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from tests.cli_checks import config_file, fails_cleanly, rehash_checkpoint
from tests.conftest import assert_one_line_error, run_cli
from tests.test_run_safety import hold_lock

import dard
import dard.cli
from dard.cli import main
from dard.errors import DardError
from dard.names import PLAIN_NAME
from dard.run_dir import RunDir

# Few examples, always the same ones: each runs the CLI on a copy of a run.
FEW = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
PRECIOUS = b"the user's own file\n"


@contextlib.contextmanager
def case(finished_run: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A fresh folder for one generated case, holding a copy of the finished run (``R``) and a file of the user's
    outside it (``precious``): (folder, run)."""
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    try:
        run = Path(shutil.copytree(finished_run, root / "R"))
        (root / "precious").write_bytes(PRECIOUS)
        (root / "elsewhere").mkdir()
        yield root, run
    finally:
        shutil.rmtree(root, ignore_errors=True)


def plant(path: Path, kind: str, root: Path) -> None:
    """Put ``kind`` where ``path`` is: a link to the user's file or folder outside the run, a FIFO, a hard link."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "link":
        path.symlink_to(root / "precious")
    elif kind == "dir-link":
        path.symlink_to(root / "elsewhere", target_is_directory=True)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        try:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
        except PermissionError:
            pytest.skip("creating a device node needs root")
    else:
        os.link(root / "precious", path)


def run_files(run: Path) -> list[str]:
    """Every position of a file or folder in the run, relative to it."""
    files = [p.relative_to(run).as_posix() for p in RunDir(run).files()]
    return sorted({*files, "eval", *(f.split("/")[0] for f in files if f.startswith("state-"))})


# ------------------------------------------------------------------------------------- 1: links, FIFOs, devices


@pytest.mark.parametrize(
    "kind",
    [
        "link",
        "dir-link",
        "fifo",
        pytest.param("hardlink", marks=pytest.mark.slow),
        pytest.param("device", marks=pytest.mark.slow),
    ],
)
def test_resume_never_writes_through_a_link_fifo_or_device(kind, finished_run, tmp_path, capsys):
    """Every position of a run file or folder, one at a time, for each kind of thing that is not dard's file. A
    hard link is replaced by an atomic rename, never written through, so only the lock file (which dard truncates
    in place) must refuse it; elsewhere the user's file must stay as it was."""
    with case(finished_run, tmp_path) as (root, run):
        positions = run_files(run)
    for where in positions:
        with case(finished_run, tmp_path) as (root, run):
            plant(run / where, kind, root)
            if kind != "hardlink" or where == ".dard.lock":
                fails_cleanly(capsys, root, ["train", "--resume", str(run)])
            else:
                assert main(["train", "--resume", str(run)]) in (0, 2)
            assert (root / "precious").read_bytes() == PRECIOUS


@FEW
@given(
    where=st.sampled_from([".dard.lock", "eval", "eval/mine.json"]),
    kind=st.sampled_from(["link", "dir-link", "fifo", "hardlink"]),
)
def test_eval_out_never_writes_through_a_link(where, kind, finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        plant(run / where, kind, root)
        argv = [
            "eval",
            str(run),
            "--attacks",
            "fgsm",
            "--n",
            "16",
            "--no-progress",
            "--out",
            str(run / "eval/mine.json"),
        ]
        fails_cleanly(capsys, root, argv)


@FEW
@given(
    name=st.sampled_from(
        ["best.json", "last.json", "compare-best.json", "label-gap-last.json", "best.superseded-1.json"]
    )
)
def test_eval_out_is_never_a_record_dard_writes_or_another_runs(name, finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        other = Path(shutil.copytree(run, root / "other"))
        argv = ["eval", str(run), "--attacks", "fgsm", "--n", "16", "--no-progress", "--out"]
        fails_cleanly(capsys, root, [*argv, str(run / "eval" / name)], "dard writes itself")
        fails_cleanly(capsys, root, [*argv, str(other / "eval" / "mine.json")], "not that run's")


@FEW
@given(data=st.data())
def test_export_out_never_lands_in_a_run_or_over_another_file(data, finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        inside = data.draw(st.sampled_from([*run_files(run), "new.tar.gz", "eval/x.tar.gz"]))
        fails_cleanly(capsys, root, ["export", str(run), "--out", str(run / inside)], "inside run folder")
        fails_cleanly(capsys, root, ["export", str(run), "--out", str(root / "precious")], "not a dard export")
        assert main(["export", str(run), "--out", str(root / "a.tar.gz")]) == 0
        assert main(["export", str(run), "--out", str(root / "a.tar.gz")]) == 0  # its own kind: replaced
        other = Path(shutil.copytree(run, root / "other"))
        fails_cleanly(capsys, root, ["export", str(other), "--out", str(root / "a.tar.gz")], "export of other runs")


@FEW
@given(name=st.sampled_from(["report.md", "results.json", "results.csv", "curves.png"]), link=st.booleans())
def test_report_out_never_overwrites_what_it_did_not_write(name, link, finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        out = root / "out"
        out.mkdir()
        if link:
            plant(out / "robustbench", "dir-link", root)
        else:
            (out / name).write_bytes(PRECIOUS)
        fails_cleanly(capsys, root, ["report", str(run), "--out", str(out)])


def test_report_out_replaces_its_own_report(finished_run, tmp_path):
    with case(finished_run, tmp_path) as (root, run):
        assert main(["report", str(run), "--out", str(root / "out")]) == 0
        (root / "out" / "notes.md").write_bytes(PRECIOUS)
        assert main(["report", str(run), "--out", str(root / "out")]) == 0  # its own report: replaced
        assert (root / "out" / "notes.md").read_bytes() == PRECIOUS


# ------------------------------------------------------------------------------------- 2: import


def test_import_keeps_the_local_copy_and_holds_the_lock(finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        runs = root / "runs"
        local = Path(shutil.copytree(run, runs / "R"))
        (local / "resume.json").unlink()  # behind the import: no evaluation records, fewer epochs
        shutil.rmtree(local / "eval")
        (local / "metrics.jsonl").write_text("")
        (local / "notes.txt").write_bytes(PRECIOUS)
        os.mkfifo(root / "pipe")
        fails_cleanly(capsys, root, ["import", str(root / "pipe"), "--runs", str(runs)], "FIFO")
        fd = hold_lock(local)  # a training writes the folder: the import changes nothing
        try:
            fails_cleanly(capsys, root, ["import", str(run), "--runs", str(runs)], "in use by pid 4242")
        finally:
            os.close(fd)
        (local / ".dard.lock").unlink()
        assert main(["import", str(run), "--runs", str(runs)]) == 0
        kept = runs / "R.local-1"
        assert (kept / "notes.txt").read_bytes() == PRECIOUS
        assert (runs / "R" / "eval" / "best.json").is_file()


# ------------------------------------------------------------------------------------- 3: resume


def _edit_optim(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        path = next(run.glob("state-*/optim.pt"))
        blob = torch.load(path, weights_only=True)
        edit(blob)
        torch.save(blob, path)

    return apply


def _edit_weights(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        path = next(run.glob("state-*/student.safetensors"))
        tensors = dict(load_file(path))
        edit(tensors)
        save_file(tensors, path)

    return apply


def _edit_progress(key: str, value: object) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        path = next(run.glob("state-*/progress.json"))
        d = json.loads(path.read_text())
        d[key] = value
        path.write_text(json.dumps(d))

    return apply


def _first(d: dict) -> str:
    return sorted(k for k in d if d[k].is_floating_point())[0]


SNAPSHOT_DAMAGE = {
    "weights cast to float16": _edit_weights(lambda t: t.update({_first(t): t[_first(t)].half()})),
    "weights cast to int32": _edit_weights(lambda t: t.update({_first(t): t[_first(t)].to(torch.int32)})),
    "a bogus weights key": _edit_weights(lambda t: t.update({"bogus": torch.zeros(2)})),
    "a missing weights key": _edit_weights(lambda t: t.pop(_first(t))),
    "a weights shape": _edit_weights(lambda t: t.update({_first(t): t[_first(t)].flatten()[:3].clone()})),
    "no momentum": _edit_optim(lambda b: b["optimizer"].update(state={})),
    "an int64 momentum": _edit_optim(lambda b: b["optimizer"]["state"][0].update(momentum_buffer=torch.zeros(1))),
    "a bogus state key": _edit_optim(lambda b: b["optimizer"]["state"].update({999: {"momentum_buffer": None}})),
    "no lr": _edit_optim(lambda b: b["optimizer"]["param_groups"][0].pop("lr")),
    "a NaN lr": _edit_optim(lambda b: b["optimizer"]["param_groups"][0].update(lr=math.nan)),
    "another momentum": _edit_optim(lambda b: b["optimizer"]["param_groups"][0].update(momentum=0.5)),
    "a negative scheduler step": _edit_optim(lambda b: b["scheduler"].update(last_epoch=-4)),
}
PROGRESS_DAMAGE = st.sampled_from(["epoch", "batch", "global_step", "best_epoch"]).map(lambda k: (k, -1)) | st.tuples(
    st.sampled_from(["train_seconds", "best_score"]), st.sampled_from([math.nan, math.inf, -math.inf])
)


@FEW
@given(damage=st.sampled_from(sorted(SNAPSHOT_DAMAGE)))
def test_resume_refuses_a_snapshot_that_does_not_fit_exactly(damage, finished_run, tmp_path, capsys):
    # before the data loads (it was matched against the student built for the loaded data)
    not_loaded = DardError("the data was loaded before the snapshot was checked")
    with case(finished_run, tmp_path) as (root, run), patch("dard.training.setup.load_dataset", side_effect=not_loaded):
        SNAPSHOT_DAMAGE[damage](run)
        fails_cleanly(capsys, root, ["train", "--resume", str(run)], "cannot resume from")


@FEW
@given(damage=PROGRESS_DAMAGE)
def test_resume_refuses_progress_out_of_range(damage, finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        _edit_progress(*damage)(run)
        fails_cleanly(capsys, root, ["train", "--resume", str(run)], "progress.json")


@FEW
@given(
    edit=st.sampled_from(["optim.lr", "seed", "method.name", "comment"]),
    epochs=st.sampled_from([None, 3]),
)
def test_resume_refuses_a_config_edited_by_hand(edit, epochs, finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        if edit == "comment":
            text = (run / "config.yaml").read_text() + "# edited\n"
        else:
            section, _, key = edit.rpartition(".")
            node = cfg[section] if section else cfg
            node[key] = {"optim.lr": 0.01, "seed": 7, "method.name": "sat"}[edit]
            text = yaml.safe_dump(cfg, sort_keys=False)
        (run / "config.yaml").write_text(text)
        extra = ["--epochs", str(epochs)] if epochs else []
        fails_cleanly(capsys, root, ["train", "--resume", str(run), *extra], "changed after dard wrote it")


def test_resume_refuses_a_trained_folder_without_its_pointer_and_accepts_older_folders(finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        (run / "resume.json").unlink()
        fails_cleanly(capsys, root, ["train", "--resume", str(run)], "no resume.json", "start over")
    with case(finished_run, tmp_path) as (root, run):
        info = json.loads((run / "run.json").read_text())
        assert len(info.pop("config_sha256")) == 64
        (run / "run.json").write_text(json.dumps(info))  # a folder written before the hash was recorded
        (run / "config.yaml").write_text((run / "config.yaml").read_text() + "# an older writer\n")
        RunDir(run).check_config_unchanged()


# ------------------------------------------------------------------------------------- 4: names that are paths

NOT_NAMES = st.sampled_from(["../../escaped", "/tmp/x/absrun", "a/b", "..", ".hidden", "a\\b", "x" * 200]) | st.text(
    min_size=1, max_size=12
).filter(lambda s: not PLAIN_NAME.fullmatch(s))


def experiment_file(root: Path, **spec) -> Path:
    """An experiment file on the embedded digits (the demo's scale), with ``spec`` over a one-run default."""
    base = {
        "title": "t",
        "base": str(Path(dard.__file__).parent / "experiments" / "_scales" / "digits.yaml"),
        "seeds": [0],
        "runs": {"nat": {"method": {"name": "natural", "params": {}}}},
        **spec,
    }
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


@FEW
@given(name=NOT_NAMES, role=st.sampled_from(["run", "teacher"]))
def test_run_and_teacher_names_are_one_path_component(name, role, tmp_path, capsys):
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    if role == "run":
        spec = {"runs": {name: {"method": {"name": "natural", "params": {}}}}}
    else:
        spec = {"teacher": {"name": name, "config": {}}}
    path = experiment_file(root, **spec)
    argv = ["experiment", str(path), "--plan", "--runs", str(root / "runs"), "--results", str(root / "res")]
    fails_cleanly(capsys, root, argv, "not a plain name")


# ------------------------------------------------------------------------------------- 5: values out of range

NUMERIC_KEYS = [
    "seed",
    "eps",
    "data.val_size",
    "data.train_subset",
    "optim.epochs",
    "optim.batch_size",
    "optim.lr",
    "optim.weight_decay",
    "optim.milestones",
    "optim.warmup_epochs",
    "val.every",
    "val.batch_size",
    "eval.batch_size",
    "eval.eps_sweep",
    "eval.autoattack_subset",
    "speed.threads",
    "speed.sync_every",
    "checkpoint_every_steps",
]
BAD_NUMBERS = ["-1", "2**70", "true", ".nan", ".inf", "1e400", "-.inf", str(2**70)]


@FEW
@given(key=st.sampled_from(NUMERIC_KEYS), value=st.sampled_from(BAD_NUMBERS))
def test_every_numeric_config_key_is_bounded(key, value, tmp_path, capsys):
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    raw = f"[{value}]" if key in ("optim.milestones", "eval.eps_sweep") else value
    if key == "optim.milestones" and value in ("true", "-1"):
        raw = "[-1]"
    cfg = config_file(root)
    fails_cleanly(capsys, root, ["train", "--config", cfg, "--set", f"{key}={raw}", "--out", str(root / "new")], key)
    if key == "seed":
        return  # an experiment's seeds come from its seeds list (the test below)
    # --plan refuses what the run would refuse
    section, _, leaf = key.rpartition(".")
    override: dict = {leaf: yaml.safe_load(raw) if value != "2**70" else raw}
    if section:
        override = {section: override}
    path = experiment_file(root, runs={"nat": {"method": {"name": "natural", "params": {}}, **override}})
    argv = ["experiment", str(path), "--plan", "--runs", str(root / "runs"), "--results", str(root / "res")]
    fails_cleanly(capsys, root, argv, leaf)


@FEW
@given(
    option=st.sampled_from(
        [
            ["demo", "--jobs"],
            ["experiment", "main", "--plan", "--jobs"],
            ["experiment", "main", "--time-budget", "1m", "--partial-under"],
            ["export", "x", "--out", "a.tar.gz", "--max-weights-mib"],
            ["eval", "x", "--n"],
            ["eval", "x", "--batch-size"],
            ["eval", "x", "--seed"],
        ]
    ),
    value=st.sampled_from(["-3", "0", "nan", "inf", "-1e400", str(2**70)]),
)
def test_every_numeric_cli_option_is_bounded(option, value, tmp_path, capsys):
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    if value == "0" and option[-1] in ("--partial-under", "--max-weights-mib", "--seed"):
        value = "-0.5"  # 0 is in range for these
    if option[-1] in ("--n", "--batch-size", "--jobs", "--seed") and value in ("nan", "inf", "-1e400"):
        value = "-7"  # an int option: argparse refuses a float itself
    fails_cleanly(capsys, root, [*option[:-1], f"{option[-1]}={value}"], option[-1])


@pytest.mark.parametrize(
    "text, needle",
    [
        ("optim:\n  lr: 0.1\noptim:\n  epochs: 2\n", "given twice"),
        ("seed: 1\nseed: 2\n", "given twice"),
        (
            "\n".join(["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]),
            "aliases",
        ),
        ("name: x\n" + "#" * (1 << 20) + "\n", "bytes"),
    ],
)
def test_yaml_that_is_ambiguous_or_huge_is_one_line(text, needle, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text(text)
    fails_cleanly(
        capsys, tmp_path, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "n")], needle
    )


@pytest.mark.parametrize("seeds", [[0, 0], [-1], [2**40]])
def test_experiment_seeds_are_distinct_and_in_range_at_plan_time(seeds, tmp_path, capsys):
    path = experiment_file(tmp_path, seeds=seeds)
    argv = ["experiment", str(path), "--plan", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "r")]
    fails_cleanly(capsys, tmp_path, argv, "seeds")


@FEW
@given(
    value=st.sampled_from([-1, "over", 2.5, True]),
    where=st.sampled_from(["clean", "attack", "fooled", "clean_correct", "corrected"]),
)
@example(value=-1, where="fooled")  # each bookkeeping count at least once, whatever the draw
@example(value="over", where="clean_correct")
@example(value=-1, where="corrected")
def test_eval_records_with_impossible_counts_are_refused(value, where, finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        d = json.loads((run / "eval" / "best.json").read_text())
        target = d["clean"] if where == "clean" else next(iter(d["attacks"].values()))
        key = where if where in ("fooled", "clean_correct", "corrected") else "correct"  # an attack's bookkeeping
        target[key] = target["total"] + 1 if value == "over" else value  # more correct than images, ...
        (run / "eval" / "best.json").write_text(json.dumps(d))
        fails_cleanly(capsys, root, ["report", str(run), "--out", str(root / "rep")], "best.json")


@FEW
@given(dtype=st.sampled_from([torch.int8, torch.int32, torch.bool, torch.complex64]))
def test_weights_of_a_non_float_dtype_are_refused(dtype, finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        tensors = dict(load_file(run / "best.safetensors"))
        name = _first(tensors)
        tensors[name] = tensors[name].to(dtype)
        save_file(tensors, run / "best.safetensors")
        rehash_checkpoint(run / "best.safetensors")
        argv = ["eval", str(run), "--attacks", "fgsm", "--n", "8", "--no-progress"]
        fails_cleanly(capsys, root, argv, str(dtype))


def test_paths_a_file_system_cannot_take_are_one_line(finished_run, tmp_path, capsys):
    fails_cleanly(capsys, tmp_path, ["export", str(finished_run), "--out", str(tmp_path / ("a" * 300))], "255")
    bad = os.fsdecode(b"\xff.tar.gz")
    fails_cleanly(capsys, tmp_path, ["export", str(finished_run), "--out", str(tmp_path / bad)], "not UTF-8")


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "{run}", "--out", ""],
        ["export", "{run}", "--out", ""],
        ["eval", "{run}", "--out", ""],
        ["report", ""],
        ["train", "--config", ""],
        ["experiment", "main", "--runs", "", "--plan"],
    ],
)
def test_an_empty_path_is_one_line_not_the_current_folder(argv, finished_run, tmp_path, monkeypatch, capsys):
    """`--out "$UNSET"` named the current folder: a report or an archive landed among the user's files."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.txt").write_text("the user's")
    argv = [a.replace("{run}", str(finished_run)) for a in argv]
    fails_cleanly(capsys, tmp_path, argv, "is empty; give a path")


# ------------------------------------------------------------------------ 6-8: processes, user code, messages


def test_crash_log_is_the_users_own_and_never_through_a_link(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(dard.cli.COMMANDS, "list", lambda args: 1 // 0)
    monkeypatch.delenv("DARD_LOG_DIR", raising=False)
    monkeypatch.delenv("DARD_DEBUG", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["list"]) == 1 and main(["list"]) == 1
    logs = sorted((tmp_path / "cache" / "dard" / "logs").iterdir())
    assert len(logs) == 2 and all(p.stat().st_mode & 0o077 == 0 for p in logs)  # two names, the user's alone
    assert str(logs[0]) in capsys.readouterr().err
    monkeypatch.setenv("DARD_LOG_DIR", str(tmp_path / "planted"))
    (tmp_path / "planted").mkdir()
    target = tmp_path / "precious"
    target.write_bytes(PRECIOUS)
    assert main(["list"]) == 1  # every name is new and unguessable: a planted link is never the log
    (log,) = (tmp_path / "planted").iterdir()
    assert not log.is_symlink() and target.read_bytes() == PRECIOUS


@pytest.mark.parametrize("body", ["raise ValueError('boom')", "raise SystemExit(0)", "import sys; sys.exit(3)"])
def test_user_factory_that_raises_is_named_in_one_line(body, tmp_path, capsys):
    (tmp_path / "usernet.py").write_text(f"def make(num_classes, in_channels):\n    {body}\n")
    cfg = config_file(tmp_path)
    argv = ["train", "--config", cfg, "--model", "usernet:make", "--out", str(tmp_path / "new")]
    proc = run_cli(*argv, cwd=tmp_path)
    assert_one_line_error(proc, "usernet:make", "the user's factory raised")
    assert not (tmp_path / "new").exists()


@FEW
@given(host=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=3000))
def test_messages_are_one_escaped_bounded_line(host, finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        fd = hold_lock(run)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": 4242, "host": host + "\n\x1b[31m", "since": "x\ny"}).encode(), 0)
            line = fails_cleanly(capsys, root, ["train", "--resume", str(run)], "in use by pid 4242")
        finally:
            os.close(fd)
        assert "\x1b" not in line and all(c.isprintable() for c in line)


@pytest.mark.slow
def test_workers_die_with_their_parent(tmp_path):
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import os, time; from dard.runtime import die_with_parent; "
        "die_with_parent(os.getppid()); print(os.getpid(), flush=True); time.sleep(120)'], stdout=subprocess.PIPE)\n"
        "print(child.stdout.readline().decode().strip(), flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    pid = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    raise AssertionError("the worker outlived its parent")
