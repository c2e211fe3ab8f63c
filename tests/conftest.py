"""Shared fixtures: CLI runner, the development CIFAR-10 copy (skipped where absent), a tiny run config."""

from __future__ import annotations

import contextlib
import io
import os
import random
import subprocess
import sys
from pathlib import Path
from subprocess import CompletedProcess

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10"


def run_cli(*args: str, cwd: Path | None = None, isolated: bool = False, timeout: float = 600) -> CompletedProcess:
    """Run `dard ARGS` and capture its exit status, stdout and stderr.

    In this process by default (`dard.cli.main` with stdout/stderr captured): a subprocess pays about 2 s of
    torch import per call, the largest single cost of the suite. ``isolated=True`` runs `python -m dard` in a
    subprocess instead, for what only a real process shows: interpreter-level warnings reaching stderr, exit at
    interpreter shutdown, signals. ``timeout`` applies to the subprocess only.
    """
    if isolated:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-m", "dard", *args]
        return subprocess.run(command, cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout, env=env)
    return _run_in_process(list(args), cwd or REPO)


def _run_in_process(argv: list[str], cwd: Path) -> CompletedProcess:
    """`dard.cli.main(argv)` run in ``cwd``, with the process state a real run would not leave behind restored:
    working folder, sys.argv, torch's thread count and RNG, Python's and NumPy's RNG, sys.path, and modules
    imported from user files (a `--model module:function` file of the same name in another test's folder must be
    read anew)."""
    from dard.cli import main

    here, threads, path, program = os.getcwd(), torch.get_num_threads(), list(sys.path), sys.argv
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    modules = set(sys.modules)
    out, err = io.StringIO(), io.StringIO()
    try:
        os.chdir(cwd)
        sys.argv = [str(Path(sys.executable).parent / "dard"), *argv]  # what a report quotes as its command
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(argv)
            except SystemExit as e:  # argparse: usage errors (2), --help and --version (0)
                status = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        os.chdir(here)
        sys.argv = program
        torch.set_num_threads(threads)
        torch.set_rng_state(rng[0])
        random.setstate(rng[1])
        np.random.set_state(rng[2])
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if _is_user_module(sys.modules[name]):
                del sys.modules[name]
    return CompletedProcess(["dard", *argv], status, out.getvalue(), err.getvalue())


def _is_user_module(module) -> bool:
    """A module loaded from a file outside the installed packages, the stdlib and src/ (a file a test wrote)."""
    file = getattr(module, "__file__", None)
    if not file:
        return False
    path = Path(file).resolve()
    kept = (Path(sys.prefix), Path(sys.base_prefix), REPO / "src")  # installed packages, the stdlib, dard itself
    return not any(path.is_relative_to(root.resolve()) for root in kept)


def assert_one_line_error(proc: CompletedProcess, *needles: str) -> None:
    """A user error: non-zero exit, one line on stderr starting with 'dard: error:', no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("dard: error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory) -> Path:
    """The development CIFAR-10 in the official pickle layout, built once per session from ../shared."""
    if not ((SHARED_CIFAR / "build.py").is_file() and (SHARED_CIFAR / "jpeg.npz").is_file()):
        pytest.skip("../shared/data/cifar10 is absent")
    out = tmp_path_factory.mktemp("cifar10")
    proc = subprocess.run(
        [sys.executable, str(SHARED_CIFAR / "build.py"), str(out)],
        capture_output=True,
        text=True,
        cwd=SHARED_CIFAR,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"build.py failed: {proc.stderr[-2000:]}")
    return out


def tiny_config(**sections) -> dict:
    """A run config that trains in a few seconds on the embedded digits data."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "device": "cpu",
        "eps": 0.1,
        "progress": False,
        "data": {"name": "digits", "val_size": 0.2, "train_subset": 256, "test_subset": 96},
        "model": {"arch": "small_cnn"},
        "optim": {"epochs": 1, "batch_size": 64, "lr": 0.05, "schedule": "constant"},
        "val": {"attack": {"name": "pgd", "steps": 3, "step_size": 0.04}, "batch_size": 512},
        "eval": {"attacks": ["fgsm", "pgd20"], "batch_size": 512},
        "method": {"name": "natural", "params": {}},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def tiny_run_config(**sections) -> dict:
    """:func:`tiny_config` made smaller still (128 training, 64 validation, 32 test images; FGSM only)."""
    small: dict = {
        "data": {"train_subset": 128, "val_size": 64, "test_subset": 32},
        "eval": {"attacks": ["fgsm"]},
        "speed": {"threads": 1},  # tiny models: a second thread only adds overhead, the more so on a busy machine
    }
    for key, value in sections.items():
        small[key] = {**small[key], **value} if isinstance(value, dict) and key in small else value
    return tiny_config(**small)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One finished tiny run folder (natural, small_cnn, digits, 1 epoch), trained once per session; copy it
    (``shutil.copytree``) before changing anything in it."""
    from dard.config import parse_config
    from dard.training import train

    run = tmp_path_factory.mktemp("finished") / "run"
    train(parse_config(tiny_run_config()), run)
    return run


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> content): compare before and after a command."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
