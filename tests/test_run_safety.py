"""Nothing on disk is lost: the run folder's lock (concurrent writers, a stale lock after SIGKILL), a full disk in
the middle of a snapshot, corrupted files in a finished run, and the changes `--resume` may make (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tests.cli_checks import config_file, fails_cleanly
from tests.conftest import REPO, tiny_run_config, tree_bytes

from dard.cli import main
from dard.config import parse_config
from dard.errors import DardError
from dard.io import atomic_write
from dard.run_dir import FolderLock, RunDir, RunRecord
from dard.training import train


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    """The tiny run trained for two epochs without interruption: what every resumed run must equal."""
    out = tmp_path_factory.mktemp("ref") / "run"
    train(parse_config(tiny_run_config(optim={"epochs": 2})), out)
    return out


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a)), load_file(str(b))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def hold_lock(folder: Path, pid: int = 4242) -> int:
    """Hold ``folder``'s lock from this test through a separate open file (flock locks belong to the open file,
    so dard in this same process is refused exactly as another process would be); returns the descriptor."""
    fd = os.open(folder / ".dard.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, json.dumps({"pid": pid, "host": socket.gethostname(), "since": "2030-01-01 00:00:00"}).encode())
    return fd


# ---------------------------------------------------------------------------------------------------- the lock


def test_locked_folders_refuse_every_writer(run, tmp_path, capsys):
    fd = hold_lock(run)
    runs = tmp_path / "runs"
    runs.mkdir()
    fd_runs = hold_lock(runs, pid=4343)
    try:
        who = f"in use by pid 4242 on host {socket.gethostname()} since 2030-01-01 00:00:00"
        fails_cleanly(capsys, tmp_path, ["train", "--resume", str(run)], f"run folder {run} is {who}")
        argv = ["eval", str(run), "--data", "digits", "--n", "4", "--attacks", "fgsm", "--no-progress"]
        fails_cleanly(capsys, tmp_path, [*argv, "--out", str(run / "eval" / "x.json")], who)
        demo = ["demo", "--out", str(runs)]
        fails_cleanly(capsys, tmp_path, demo, f"runs folder {runs} is in use by pid 4343")
    finally:
        os.close(fd)
        os.close(fd_runs)


def test_a_lock_file_whose_pid_no_process_has_is_stale_where_there_is_no_flock(tmp_path, monkeypatch):
    # without flock (NFS without its lock daemon) the recorded pid decides: a pid over a C int was an internal error
    # (os.kill's OverflowError) for every writer and `dard eval`, and -1 (every process, so "alive") or true (pid
    # 1) kept the folder in use for good
    import dard.run_dir.lock as lock

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock.fcntl, "flock", no_flock)
    host = socket.gethostname()
    for pid in (2**70, 2**31, -1, True, "7"):
        (tmp_path / ".dard.lock").write_text(json.dumps({"pid": pid, "host": host, "since": "x"}))
        assert lock.held_elsewhere(tmp_path) is None
        with FolderLock(tmp_path):
            pass
    (tmp_path / ".dard.lock").write_text(json.dumps({"pid": os.getppid(), "host": host, "since": "x"}))
    assert lock.held_elsewhere(tmp_path).pid == os.getppid()  # a live process's pid still holds it


def test_a_teacher_whose_run_is_in_use_is_refused_before_the_data_loads(run, tmp_path, capsys, monkeypatch):
    # a teacher run still training was distilled from while it replaced its checkpoints (found, if at all, after
    # the data had loaded); its lock is only looked at (no lock file written into the teacher's folder)
    fd = hold_lock(run)
    try:
        data = {"name": "cifar10", "dir": str(tmp_path / "no-data")}
        cfg = config_file(tmp_path, method={"name": "dard", "params": {}}, data=data)
        who = f"in use by pid 4242 on host {socket.gethostname()}"
        for teacher in (run, run / "best.safetensors", run / "last.json"):
            argv = ["train", "--config", cfg, "--teacher", str(teacher), "--out", str(tmp_path / "new")]
            fails_cleanly(capsys, tmp_path, argv, f"teacher {teacher}: its run folder {run} is {who}", "wait for it")
        # its weights given as external weights: the same files, replaced the same way
        weights = ["--set", f"teacher.weights={run}/best.safetensors", "--set", "teacher.arch=small_cnn"]
        weights += ["--set", "teacher.normalize=true", "--out", str(tmp_path / "new")]
        fails_cleanly(capsys, tmp_path, ["train", "--config", cfg, *weights], f"its run folder {run} is {who}")
        # an experiment given that teacher: refused when its plan is read, before any run trains
        exp = tmp_path / "experiments" / "tiny"
        exp.mkdir(parents=True)
        (exp / "base.yaml").write_text(yaml.safe_dump(tiny_run_config()))
        runs = {"dard": {"method": {"name": "dard", "params": {}}, "teacher": {"checkpoint": str(run)}}}
        (exp / "cpu.yaml").write_text(yaml.safe_dump({"title": "t", "base": "base.yaml", "seeds": [0], "runs": runs}))
        monkeypatch.chdir(tmp_path)
        for plan in (["--plan"], []):
            fails_cleanly(capsys, tmp_path, ["experiment", "tiny", "--runs", "runs", *plan], "run 'dard-s0'", who)
        # the experiment's own teacher, trained first: its test evaluation holds its lock beside the students
        from dard.checkpoint import teacher_checkpoint

        assert teacher_checkpoint(run, in_use_ok=True) == run / "best.safetensors"
        student = tiny_run_config(method={"name": "dard", "params": {}}, teacher={"checkpoint": str(run)})
        train(parse_config(student), tmp_path / "student", own_teacher=True)
    finally:
        os.close(fd)
    assert teacher_checkpoint(run) == run / "best.safetensors"
    with FolderLock(run):  # held by this process (an experiment in one process): not another's training
        assert teacher_checkpoint(run) == run / "best.safetensors"


def test_eval_of_a_run_in_use_is_refused_before_the_data_loads(run, tmp_path, capsys):
    # `dard eval RUN` of a run still training evaluated its half-trained checkpoint in silence (its `last`, or a
    # `best` replaced while read), as if it were the run's result; refused as a teacher there is, however named
    fd = hold_lock(run)
    try:
        who = f"in use by pid 4242 on host {socket.gethostname()}"
        no_data = ["--data", "cifar10", "--data-dir", str(tmp_path / "no-data")]
        for given in (run, run / "last.json", run / "best.safetensors"):
            argv = ["eval", str(given), *no_data]
            fails_cleanly(capsys, tmp_path, argv, f"checkpoint {given}: its run folder {run} is {who}", "copy")
        argv = ["eval", "--model", "small_cnn", "--weights", str(run / "last.safetensors"), "--normalization", "none"]
        fails_cleanly(capsys, tmp_path, [*argv, *no_data], f"its run folder {run} is {who}")
    finally:
        os.close(fd)
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(run / f"last{suffix}", copy / f"last{suffix}")
    fd = hold_lock(run)
    try:  # the copy the message asks for is evaluated
        assert main(["eval", str(copy / "last.json"), "--data", "digits", "--n", "4", "--attacks", "fgsm"]) == 0
    finally:
        os.close(fd)


@pytest.mark.parametrize("out", ["newdir/", "newdir/.", "."])
def test_a_file_output_named_as_a_folder_is_refused(out, run, tmp_path, capsys, monkeypatch):
    # `--out newdir/` wrote a file named newdir: the trailing separator is lost once the text is a Path
    monkeypatch.chdir(tmp_path)
    evaluate = ["eval", str(run), "--data", "digits", "--n", "4", "--attacks", "fgsm", "--out", out]
    fails_cleanly(capsys, tmp_path, evaluate, "names a folder, not a file", "record.json")
    fails_cleanly(capsys, tmp_path, ["export", str(run), "--out", out], "names a folder, not a file", "runs.tar.gz")


def test_run_names_that_break_lines_and_plots_are_refused(run, tmp_path, capsys):
    # a control character in a run's name reached matplotlib's glyphs, Markdown rows and the one-line messages
    cfg = config_file(tmp_path, name="bell\x07run")
    fails_cleanly(capsys, tmp_path, ["train", "--config", cfg, "--out", str(tmp_path / "r")], "run name", "control")
    cfg = config_file(tmp_path, name="λ 0.5 (seed 0)")  # any printable name is fine beside an --out folder
    named = tmp_path / "tab\trun"
    fails_cleanly(capsys, tmp_path, ["train", "--config", cfg, "--out", str(named)], "run name", "control")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "name": "\x1b[31mred"}))
    fails_cleanly(capsys, tmp_path, ["report", str(run), "--out", str(tmp_path / "rep")], "run.json", "control")


def test_a_killed_writers_temp_files_go_when_the_folder_is_locked_again(run, tmp_path):
    # SIGKILL (or SIGTERM) between atomic_write's temp file and its rename left `.best.json.<8 chars>.tmp` in the run
    # folder or its eval/ (a half-written 2 MB checkpoint, or a record), which `git add` of a campaign committed
    import tempfile

    def stray(folder: Path, target: str) -> Path:  # the name atomic_write gives the temp file beside ``target``
        fd, name = tempfile.mkstemp(prefix=f".{target}.", suffix=".tmp", dir=folder)
        os.close(fd)
        return Path(name)

    results = tmp_path / "results"
    results.mkdir()
    strays = [stray(run, "best.safetensors"), stray(run / "eval", "best.json"), stray(results, "report.md")]
    kept = [run / ".notes.tmp", run / "eval" / ".best.json.tmp", run / "x.abcdefgh.tmp"]  # not names it makes
    for path in kept:
        path.write_text("mine")
    os.symlink(run / "config.yaml", run / ".config.yaml.abcdefgh.tmp")  # a link: never ours, left alone
    with RunDir(run).lock(), FolderLock(results, "results folder"):
        assert not any(p.exists() for p in strays) and all(p.read_text() == "mine" for p in kept)
    assert os.path.islink(run / ".config.yaml.abcdefgh.tmp")
    new = tmp_path / "new"  # killed as it wrote a new run's config.yaml: an experiment refused the folder as not a run
    new.mkdir()
    stray(new, "config.yaml")
    assert RunDir(new).is_empty()


def test_stale_lock_is_taken_over_with_a_message(run, tmp_path, capsys):
    (run / ".dard.lock").write_text(json.dumps({"pid": 999999, "host": "h", "since": "2030-01-01 00:00:00"}))
    with FolderLock(run):
        assert "left by pid 999999 on host h since 2030-01-01 00:00:00" in capsys.readouterr().err
        assert json.loads((run / ".dard.lock").read_text())["pid"] == os.getpid()
    assert not (run / ".dard.lock").exists()


def test_failed_checks_leave_no_folder_behind(tmp_path):
    folder = tmp_path / "a" / "b" / "run"
    with pytest.raises(RuntimeError), FolderLock(folder):
        assert folder.is_dir()
        raise RuntimeError("a check failed")
    assert list(tmp_path.iterdir()) == []


def _start_training(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen(
        [sys.executable, "-m", "dard", "train", *args], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )


def _wait_for_lock(folder: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``proc`` holds ``folder``'s lock (its lock file names it)."""
    t0 = time.time()
    while True:
        try:
            if json.loads((folder / ".dard.lock").read_text())["pid"] == proc.pid:
                return
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout
        time.sleep(0.02)


@pytest.mark.slow
def test_two_trainings_on_one_folder_and_a_killed_one(tmp_path, capsys):
    """Two trainings on one --out: the second gets the "in use" line. The first is then SIGKILLed while it holds
    the lock; the resume that follows takes the stale lock over with a message, and the folder holds the first
    run alone, finished."""
    cfg = tmp_path / "c.yaml"
    # mid-epoch snapshots: the first training has a resume point from its first step on
    cfg.write_text(yaml.safe_dump(tiny_run_config(data={"train_subset": 256}, checkpoint_every_steps=2)))
    out = tmp_path / "R"
    first = _start_training(tmp_path, "--config", str(cfg), "--out", str(out), "--epochs", "2")
    _wait_for_lock(out, first)
    # (the folder is not compared before and after: the first training is writing it meanwhile)
    line = fails_cleanly(capsys, None, ["train", "--config", str(cfg), "--out", str(out), "--seed", "1"])
    assert f"is in use by pid {first.pid} on host {socket.gethostname()}" in line
    t0 = time.time()
    while not (out / "resume.json").exists():
        assert first.poll() is None and time.time() - t0 < 120, first.communicate()
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert json.loads((out / ".dard.lock").read_text())["pid"] == first.pid
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0
    assert f"left by pid {first.pid}" in capsys.readouterr().err
    record = RunRecord.load(out)
    assert record.seed == 0 and [m.epoch for m in record.metrics] == [1, 2] and set(record.evals) == {"best", "last"}
    assert not (out / ".dard.lock").exists()


# ------------------------------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path, finished_run, monkeypatch):
    """A folder where the second epoch's snapshot does not fit: a tmpfs just large enough for one epoch's files
    plus one more weights file (root only, as in CI), else a disk that reports ENOSPC on that snapshot."""
    used = sum(-(-p.stat().st_size // 4096) for p in finished_run.rglob("*") if p.is_file())  # pages
    weights = -(-(finished_run / "best.safetensors").stat().st_size // 4096)
    mnt = tmp_path / "disk"
    mnt.mkdir()
    size = (used + weights + 4) * 4096
    mounted = not subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True
    ).returncode
    if not mounted:
        real = atomic_write

        def full_disk(path, write, **kw):
            if Path(path).name == "optim.pt" and Path(path).parent == mnt / "R" / "state-000000004":

                def half(p):
                    p.write_bytes(b"\0" * 1000)
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

                return real(path, half, **kw)
            return real(path, write, **kw)

        monkeypatch.setattr("dard.io.atomic_write", full_disk)
    yield mnt
    if mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


@pytest.mark.slow
def test_full_disk_is_one_line_and_the_last_snapshot_resumes_exactly(small_disk, two_epochs, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run_config(optim={"epochs": 2})))
    out = small_disk / "R"
    # (the folder keeps what the first epoch wrote: that is the point)
    line = fails_cleanly(capsys, None, ["train", "--config", str(cfg), "--out", str(out)], "No space left")
    assert "state-000000004" in line
    folder = RunDir(out)
    assert [s.path.name for s in folder.snapshots()] == ["state-000000002"]  # no partial state-000000004/
    assert folder.resume_snapshot().read_progress().epoch == 1
    moved = tmp_path / "R"
    shutil.copytree(out, moved)  # the user frees space elsewhere: the folder moves to a larger disk
    assert main(["train", "--resume", str(moved)]) == 0
    assert same_weights(moved / "last.safetensors", two_epochs / "last.safetensors")
    assert same_weights(moved / "best.safetensors", two_epochs / "best.safetensors")


# -------------------------------------------------------------------------------------------------- corruption


def _corruptions(run: Path) -> list[tuple[str, str]]:
    """Every file of ``run``, truncated or with a byte flipped (alternately, so both befall JSON and binary files)."""
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    return [(name, ("truncate", "flip")[i % 2]) for i, name in enumerate(files)]


def _corrupt(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.slow
def test_corrupted_run_gives_a_result_or_one_line(finished_run, tmp_path, capsys):
    """Each file of a finished run truncated or with one byte flipped; `--resume`, `dard eval RUN` and `dard report
    RUN` each either work or print one line: never a traceback, never a changed file on a failure."""
    assert len(_corruptions(finished_run)) == 13  # config, run.json, metrics, 2 checkpoints, 2 evals, pointer, snapshot
    outcomes: dict[str, int] = {}
    for name, how in _corruptions(finished_run):
        case = tmp_path / f"{name.replace('/', '_')}-{how}"
        run = Path(shutil.copytree(finished_run, case / "R"))
        _corrupt(run / name, how)
        for argv in (
            ["train", "--resume", str(run)],
            ["eval", str(run), "--data", "digits", "--n", "2", "--attacks", "fgsm", "--no-progress"],
            ["report", str(run), "--out", str(case / "rep")],
        ):
            before = tree_bytes(case)
            capsys.readouterr()
            status = main(argv)
            err = capsys.readouterr().err
            assert status in (0, 2) and "Traceback" not in err, (name, how, argv[0], err)
            if status == 2:
                lines = err.strip().splitlines()
                assert len(lines) == 1 and lines[0].startswith("dard: error:"), (name, how, err)
                assert tree_bytes(case) == before, (name, how, argv[0])
            outcomes[f"{name} {how} {argv[0]}"] = status
    # the files each command depends on are caught, not used
    for failing in ["resume.json truncate train", "eval/best.json flip report", "best.json truncate eval"]:
        assert outcomes[failing] == 2, failing


# ------------------------------------------------------------------------------------------ what --resume changes


@pytest.mark.slow
def test_resume_applies_and_records_the_safe_changes(run, two_epochs, capsys):
    before = json.loads((run / "eval" / "best.json").read_text())
    assert main(["train", "--resume", str(run), "--epochs", "2", "--set", "eval.attacks=[bim]"]) == 0
    info = json.loads((run / "run.json").read_text())
    (change,) = info["changes"]
    assert change["after_epoch"] == 1
    assert change["changed"] == {
        "optim.epochs": {"from": 1, "to": 2},
        "eval.attacks": {"from": ["fgsm"], "to": ["bim"]},
    }
    assert change["set_aside"]["eval/best.json"] == "eval/best.superseded-1.json"
    assert json.loads((run / "eval" / "best.superseded-1.json").read_text()) == before  # kept, not overwritten
    assert set(json.loads((run / "eval" / "best.json").read_text())["attacks"]) == {"bim"}
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["epochs"] == 2
    assert same_weights(run / "last.safetensors", two_epochs / "last.safetensors")  # as if trained for 2 at once
    assert main(["train", "--resume", str(run)]) == 0  # nothing changed: nothing recorded
    assert len(json.loads((run / "run.json").read_text())["changes"]) == 1


# ------------------------------------------------------------------------------ a checkpoint's two files, one save


class _Killed(Exception):
    """A kill between a checkpoint's two writes (SIGKILL there leaves the same files)."""


def _save_cut(monkeypatch, run: Path, which: str, epoch: int, *, cut: bool = True) -> None:
    """save_checkpoint of fresh weights as ``run``'s checkpoint ``which`` of ``epoch``; with ``cut``, killed after
    the weights are written and before their metadata."""
    import dard.checkpoint as checkpoint

    meta = checkpoint.read_checkpoint_meta(run / f"{which}.safetensors")
    torch.manual_seed(epoch)
    model = checkpoint.build_model(meta["model"])
    with monkeypatch.context() as m:
        if cut:
            m.setattr(checkpoint, "write_json", lambda *a, **k: (_ for _ in ()).throw(_Killed()))
        with pytest.raises(_Killed) if cut else contextlib.nullcontext():
            checkpoint.save_checkpoint(run / which, model, meta["model"], {"epoch": epoch})


def test_a_checkpoint_whose_metadata_is_of_another_save_is_refused(run, tmp_path, capsys, monkeypatch):
    # a training killed between best.safetensors and best.json left new weights beside the old metadata: `dard eval`
    # measured them as the epoch and selection the metadata names, and a student distilled from them so
    _save_cut(monkeypatch, run, "best", epoch=2)
    said = "best.json does not describe best.safetensors beside it"
    fails_cleanly(capsys, tmp_path, ["eval", str(run), "--data", "digits", "--n", "4"], said, "--resume")
    teacher = ["train", "--config", config_file(tmp_path, method={"name": "ard"}), "--teacher", str(run)]
    fails_cleanly(capsys, tmp_path, [*teacher, "--out", str(tmp_path / "s")], said)


def test_a_command_reads_a_checkpoints_weights_once_to_check_its_pair(run, tmp_path, capsys, monkeypatch):
    # dard eval RUN read best.safetensors whole four times (its settings, its checks, the fit check, the load), a
    # training its teacher's five: 0.2 s per 45 MB each. Read once; weights written since are read again
    import hashlib
    import types

    import dard.io

    reads: list[int] = []

    def sha256() -> hashlib._Hash:
        reads.append(1)
        return hashlib.sha256()

    monkeypatch.setattr(dard.io, "hashlib", types.SimpleNamespace(sha256=sha256))
    assert main(["eval", str(run), "--attacks", "fgsm", "--n", "4", "--no-progress"]) == 0
    assert len(reads) == 1
    _save_cut(monkeypatch, run, "best", epoch=2)  # new weights beside the old metadata: not taken for the old
    fails_cleanly(capsys, tmp_path, ["eval", str(run), "--n", "4"], "best.json does not describe best.safetensors")


def test_a_resume_sets_aside_a_checkpoint_its_snapshot_does_not_record(run, monkeypatch):
    # a run killed between its checkpoints and the snapshot recording their epoch kept them as the run's when the
    # resumed epoch was not chosen again: best.* of an epoch metrics.jsonl never had, or half of one save
    from dard.training.state import settle_checkpoints

    folder = RunDir(run)
    progress = folder.read_progress()
    assert (progress.epoch, progress.best_epoch) == (1, 1)
    assert settle_checkpoints(folder, progress) == [] and progress.best_epoch == 1  # one save's pair: kept
    _save_cut(monkeypatch, run, "best", epoch=2)  # new weights, the old metadata
    _save_cut(monkeypatch, run, "last", epoch=2, cut=False)  # a whole save of an epoch the snapshot does not know
    said = settle_checkpoints(folder, progress)
    assert [line.split(" is not")[0] for line in said] == ["checkpoint best", "checkpoint last"]
    assert "chosen again" in said[0] and progress.best_epoch is None and progress.best_score is None
    names = sorted(p.name for p in run.iterdir() if "superseded" in p.name)
    assert names == [f"{w}.superseded-1.{s}" for w in ("best", "last") for s in ("json", "safetensors")]
    assert not (run / "best.safetensors").exists() and not (run / "last.json").exists()


def test_a_run_killed_before_its_first_snapshot_starts_over_with_its_checkpoints_set_aside(run, capsys):
    # a kill between the first epoch's checkpoints and its first snapshot (Ctrl-C reaching an experiment's worker
    # while it wrote the snapshot, which it then removed; SIGKILL) left a folder every resume refused ("holds a
    # trained run but no resume.json"): the campaign's next stretch stopped on it until the folder was moved away
    weights = {n: load_file(run / n) for n in ("best.safetensors", "last.safetensors")}
    rows = [{k: v for k, v in r.to_dict().items() if k not in ("images_per_s", "train_seconds")}
            for r in RunDir(run).read_metrics()]  # fmt: skip
    for path in [run / "resume.json", run / "eval", *run.glob("state-*")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert main(["train", "--resume", str(run)]) == 0
    assert "no resume snapshot (killed before its first one): the run starts over" in capsys.readouterr().out
    for name, tensors in weights.items():  # trained again from its first step, bit for bit; the ghost kept aside
        for again in (load_file(run / name), load_file(run / name.replace(".", ".superseded-1."))):
            assert again.keys() == tensors.keys() and all(torch.equal(again[k], t) for k, t in tensors.items())
    again = [{k: v for k, v in r.to_dict().items() if k not in ("images_per_s", "train_seconds")}
             for r in RunDir(run).read_metrics()]  # fmt: skip
    assert again == rows and RunDir(run).is_evaluated() and RunDir(run).has_snapshot()


def test_a_resume_sets_aside_a_kept_epoch_its_snapshot_has_not_finished(run):
    # keep_epochs' epoch-NNN of an epoch killed before its snapshot (whole, or its weights alone) stayed beside the
    # resumed run's own, read as its checkpoint of that epoch (a ladder's teacher); a link there was written through
    from dard.training.state import check_checkpoints_recorded, settle_checkpoints

    folder = RunDir(run)
    progress = folder.read_progress()
    for name, suffixes in (("epoch-001", ("safetensors", "json")), ("epoch-002", ("safetensors", "json"))):
        for suffix in suffixes:
            shutil.copy(run / f"last.{suffix}", run / f"{name}.{suffix}")
    shutil.copy(run / "last.safetensors", run / "epoch-003.safetensors")  # killed before its metadata
    (run / "epoch-2.json").write_text("{}")  # not a name dard gives a kept epoch: not its file
    with pytest.raises(DardError, match=r"checkpoint epoch-002 is not the one .*\(it has finished epoch 1\)"):
        check_checkpoints_recorded(folder, progress)  # no epoch left to write it again
    said = settle_checkpoints(folder, progress)
    assert [line.split(" is not")[0] for line in said] == ["checkpoint epoch-002", "checkpoint epoch-003"]
    kept = sorted(p.name for p in run.iterdir() if p.name.startswith("epoch-"))
    assert kept == ["epoch-001.json", "epoch-001.safetensors", "epoch-002.superseded-1.json"] + [
        "epoch-002.superseded-1.safetensors",
        "epoch-003.superseded-1.safetensors",
        "epoch-2.json",
    ]
    (run / "epoch-001.json").unlink()
    (run / "epoch-001.json").symlink_to(run / "last.json")
    with pytest.raises(DardError, match="epoch-001.json: it is a symbolic link"):
        folder.check_files()


def test_a_resume_with_no_epoch_left_refuses_a_checkpoint_its_snapshot_does_not_record(
    run, tmp_path, capsys, monkeypatch
):
    # resumed with no epoch left to train (`--epochs` the epochs trained, or a finished run), nothing wrote the ghost
    # best again: the final evaluation measured it as the run's best
    _save_cut(monkeypatch, run, "best", epoch=2, cut=False)  # a whole save of an epoch the snapshot does not know
    said = "checkpoint best is not the one its resume snapshot records (epoch 1)"
    fails_cleanly(capsys, tmp_path, ["train", "--resume", str(run)], said, "--epochs above 1")
