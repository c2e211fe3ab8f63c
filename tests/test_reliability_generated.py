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
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from tests.cli_checks import fails_cleanly
from tests.test_run_safety import hold_lock

from dard.cli import main
from dard.run_dir import RunDir

# Few examples, always the same ones: each runs the CLI on a copy of a run.
FEW = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
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
    else:
        os.link(root / "precious", path)


def run_files(run: Path) -> list[str]:
    """Every position of a file or folder in the run, relative to it."""
    files = [p.relative_to(run).as_posix() for p in RunDir(run).files()]
    return sorted({*files, "eval", *(f.split("/")[0] for f in files if f.startswith("state-"))})


# ------------------------------------------------------------------------------------- 1: links, FIFOs, devices


@FEW
@given(data=st.data(), kind=st.sampled_from(["link", "dir-link", "fifo", "hardlink"]))
def test_resume_never_writes_through_a_link_fifo_or_hard_link(data, kind, finished_run, tmp_path, capsys):
    with case(finished_run, tmp_path) as (root, run):
        where = data.draw(st.sampled_from(run_files(run)))
        plant(run / where, kind, root)
        fails_cleanly(capsys, root, ["train", "--resume", str(run)])
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
    with case(finished_run, tmp_path) as (root, run):
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
