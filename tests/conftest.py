"""Shared fixtures: CLI runner, the development CIFAR-10 copy (skipped where absent), a tiny run config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10"


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m dard ARGS` in a subprocess and capture its output."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "dard", *args], cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout, env=env
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
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
