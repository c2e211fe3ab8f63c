"""Packaged run configs and experiment files: how names resolve, and that a non-editable install (what
`pip install git+URL` does) carries them.

The wheel is built offline from a copy of the source tree and installed with ``pip install --target`` into a
fresh folder. Commands then run with ``PYTHONPATH`` set to that folder alone, from a working folder outside the
checkout: the folder comes first on ``sys.path``, so ``import dard`` finds the installed copy and neither the
checkout nor an editable install of it (checked through ``dard.__file__``), while PyTorch and the other
dependencies still come from the running interpreter's environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tests.conftest import REPO, assert_one_line_error

from dard.config import load_config
from dard.errors import DardError
from dard.experiment import list_experiments, load_experiment
from dard.packaged import CONFIGS_DIR, EXPERIMENTS_DIR, find_config, list_configs
from dard.registry import METHODS


def test_config_resolves_a_file_first_then_a_packaged_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    packaged = CONFIGS_DIR / "cifar10" / "sat_resnet18.yaml"
    for name in ("cifar10/sat_resnet18", "cifar10/sat_resnet18.yaml", "configs/cifar10/sat_resnet18.yaml"):
        assert find_config(name) == packaged
    assert load_config("cifar10/sat_resnet18").method.name == "sat"
    # a file at the given path wins over the packaged config of that name
    mine = tmp_path / "configs" / "cifar10" / "sat_resnet18.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text(yaml.safe_dump({"method": {"name": "natural"}}))
    assert load_config("configs/cifar10/sat_resnet18.yaml").method.name == "natural"
    assert load_config("cifar10/sat_resnet18").method.name == "sat"
    with pytest.raises(DardError, match="config file not found: cifar10/nope .*cifar10/dard_resnet18"):
        find_config("cifar10/nope")
    assert {"cifar10/dard_resnet18", "cifar100/dard_resnet18"} <= set(list_configs())
    # every method has its CIFAR-10 ResNet-18 config in the authors' setup, so each runs under the same budget
    from dard.methods import list_methods

    assert {f"cifar10/{m}_resnet18" for m in list_methods()} <= set(list_configs())


def test_a_packaged_config_asks_for_a_teacher_only_when_its_method_takes_one():
    # sat, trades and natural said "Set the teacher with --teacher RUN", which dard train refuses for them
    for name in list_configs():
        header = "".join(line for line in find_config(name).read_text().splitlines() if line.startswith("#"))
        cfg = load_config(name)
        assert ("--teacher RUN" in header) == METHODS.get(cfg.method.name).needs_teacher, name


def test_experiments_resolve_in_the_working_folder_first_then_the_packaged_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert {"main", "lambda", "attacks", "demo"} <= set(list_experiments())
    # an experiments/ folder of one's own adds names and may shadow a packaged one; the rest stay reachable
    mine = tmp_path / "experiments" / "main"
    mine.mkdir(parents=True)
    shutil.copytree(EXPERIMENTS_DIR / "_scales", tmp_path / "experiments" / "_scales")
    spec = yaml.safe_load((EXPERIMENTS_DIR / "main" / "cpu.yaml").read_text())
    (mine / "cpu.yaml").write_text(yaml.safe_dump({**spec, "seeds": [7]}))
    assert list_experiments()["main"] == ["cpu"]
    assert list_experiments()["lambda"] == ["cpu", "gpu", "paper", "paper-cifar100", "small"]
    assert load_experiment("main").spec.seeds == [7]
    packaged = load_experiment("lambda")
    assert packaged.spec.seeds == [0, 1, 2] and packaged.source.is_absolute()  # outside the working folder


def test_packaged_experiment_is_shown_relative_to_the_working_folder(monkeypatch):
    monkeypatch.chdir(REPO)
    assert load_experiment("main").source.as_posix() == "src/dard/experiments/main/cpu.yaml"


# ---- a built wheel, installed outside the checkout (slow: a pip build and install)


def _pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--quiet"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _git(*args: str, cwd: Path) -> str:
    proc = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(site folder holding the installed wheel, an empty working folder outside the checkout); the wheel is built
    from a git checkout of the copied sources, whose commit is in ``<site>/../commit``."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so the build's build/ and *.egg-info never land in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "_build_commit.txt")
    )
    _git("init", "-q", cwd=source)
    _git("add", "-A", cwd=source)
    _git("commit", "-qm", "copy", cwd=source)
    (tmp / "commit").write_text(_git("rev-parse", "HEAD", cwd=source))
    _pip("wheel", "--no-build-isolation", "--wheel-dir", str(tmp / "dist"), str(source), cwd=tmp)
    (wheel,) = (tmp / "dist").glob("dard-*.whl")
    _pip("install", "--target", str(tmp / "site"), str(wheel), cwd=tmp)
    work = tmp / "work"
    work.mkdir()
    return tmp / "site", work


def _run(site: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    return subprocess.run([*args], cwd=work, env=env, capture_output=True, text=True, timeout=300)


# Several `dard` commands in one Python process of the installed copy (each process pays PyTorch's start-up,
# 3-4 s of CPU): `dard.cli.main` per command, its exit status, stdout and stderr kept apart, then dard's file.
MANY = """
import contextlib, io, json, sys
from dard.cli import main
import dard
done = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else 2
    done.append([argv, status, out.getvalue(), err.getvalue()])
print(json.dumps({"dard": dard.__file__, "done": done}))
"""


def _run_many(site: Path, work: Path, *argvs: list[str]) -> list[subprocess.CompletedProcess]:
    """Each of ``argvs`` as `dard ARGV` in one process of the installed copy (checked), from ``work``."""
    proc = _run(site, work, sys.executable, "-c", MANY, json.dumps(argvs))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert Path(result["dard"]).is_relative_to(site)
    return [subprocess.CompletedProcess(["dard", *a], rc, out, err) for a, rc, out, err in result["done"]]


@pytest.mark.slow
def test_wheel_imports_the_installed_copy(installed):
    site, work = installed
    proc = _run(site, work, sys.executable, "-c", "import dard; print(dard.__file__); print(dard.__version__)")
    assert proc.returncode == 0, proc.stderr
    where, version = proc.stdout.split()
    assert Path(where).is_relative_to(site)
    assert version == "0.1.0"
    # no git around the installed copy: the commit comes from the file the build wrote
    proc = _run(site, work, sys.executable, "-c", "from dard.runtime import git_commit; print(git_commit())")
    assert proc.returncode == 0 and proc.stdout.strip() == (site.parent / "commit").read_text(), proc.stderr
    assert (site / "dard" / "experiments" / "main" / "cpu.yaml").is_file()
    assert (site / "dard" / "configs" / "cifar10" / "dard_resnet18.yaml").is_file()


@pytest.mark.slow
def test_wheel_lists_packaged_experiments_and_configs(installed):
    site, work = installed
    proc = _run(site, work, str(site / "bin" / "dard"), "list")  # the console script pip generated
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(": ", 1) for line in proc.stdout.splitlines())
    for experiment in ("main (cpu/gpu/paper/paper-cifar100/small)", "lambda (", "attacks (", "demo (digits)"):
        assert experiment in lines["experiments"]
    assert "cifar10/dard_resnet18" in lines["configs"].split(", ")


@pytest.mark.slow
def test_wheel_finds_experiments_and_configs_outside_the_checkout(installed):
    site, work = installed
    config = "configs/cifar10/sat_resnet18.yaml"  # a packaged config by the checkout's path (README commands)
    plan, trained, demo = _run_many(
        site,
        work,
        ["experiment", "main", "--scale", "cpu", "--plan", "--runs", "runs"],
        ["train", "--config", config, "--data-dir", "nodata", "--out", "run"],
        ["experiment", "demo", "--scale", "digits", "--plan", "--runs", "runs"],
    )
    # past the experiment lookup and the config checks: the plan stops at the (absent) dataset
    assert_one_line_error(plan, "CIFAR-10 not found")
    # the packaged config, past the config checks to the dataset
    assert_one_line_error(trained, "CIFAR-10 not found")
    assert not (work / "run").exists()
    # the demo experiment plans end to end on its embedded data
    assert demo.returncode == 0, demo.stderr
    assert "6 runs in runs: 0 done, 6 to train or evaluate" in demo.stdout
