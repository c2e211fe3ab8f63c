"""Shared fixtures: CLI runner, CIFAR-10 ($DARD_DATA_DIR, else a small synthetic set), tiny run configs and runs.

Two tiers (README, "Two commands"): ``pytest -m "not slow"`` is the unit tier (meant to stay under a minute on two
idle cores), where only :func:`finished_run` trains (once per session, 128 digits images, for the tests that need a
finished run folder); ``slow`` marks the end-to-end runs (``dard train``/``experiment``/``demo``, resume, every method,
distributed, bundle, packaging), which ``make test`` runs with the rest. Figures are drawn only in the tests marked
``plots`` (and by fixtures of module or session scope, and in the processes a test starts); elsewhere they are built
and saved undrawn.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pickle
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Read once and removed, so every other test sees dard's default data folder (./data) as in any clone; the tests
# that need CIFAR-10 take it from the `cifar10` fixture. CI points it at the development copy it has. The
# pytest-xdist workers start from this process's environment, after this removal: they read it under a name dard
# does not know.
DATA_DIR = os.environ.pop("DARD_DATA_DIR", None) or os.environ.get("DARD_TESTS_DATA_DIR")
if DATA_DIR:
    os.environ["DARD_TESTS_DATA_DIR"] = DATA_DIR
# One intra-op thread for the tests' tiny models, here and in every dard the tests start (dard.runtime.default_threads
# reads it): a second thread only adds synchronisation at these sizes, and on a busy machine each OpenMP barrier waits
# for a descheduled thread (tests/test_attacks.py and test_method_losses.py beside a two-process campaign: 83 s of
# pytest on one thread, over 900 s on two). Tests of thread handling set their own.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


# What a figure is saved as where a test does not look at plots (:func:`_figures_drawn_where_tests_look_at_them`):
# a white 1x1 PNG
PLACEHOLDER_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c49444154789c63f8ffff3f0005fe02fe0def"
    "46b80000000049454e44ae426082"
)


def _save_placeholder(fig, fname, *args, **kwargs) -> None:
    """``Figure.savefig`` without drawing: the placeholder PNG, written where the figure would have been."""
    if hasattr(fname, "write"):
        fname.write(PLACEHOLDER_PNG)
    else:
        Path(fname).write_bytes(PLACEHOLDER_PNG)


@pytest.fixture(autouse=True)
def _figures_drawn_where_tests_look_at_them(request, monkeypatch) -> None:
    """Reports and experiments draw their plots with matplotlib, about a second of CPU a figure (constrained layout,
    every text measured, the figure drawn twice for its tight crop), while most tests of them read the tables, the
    notes and which files are there. A test marked ``plots`` (tests/test_report.py, where the plots are tested: PNGs,
    names as plain text, long names, a glyph the font lacks) draws them; elsewhere a figure is built as always and
    saved as :data:`PLACEHOLDER_PNG`, through dard's own (atomic) write of each file."""
    if request.node.get_closest_marker("plots") is None:
        monkeypatch.setattr("matplotlib.figure.Figure.savefig", _save_placeholder)


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


@dataclass(frozen=True)
class Cifar10Copy:
    """A CIFAR-10 folder for the tests: ``root`` holds ``cifar-10-batches-py/`` in the official pickle layout."""

    root: Path
    real: bool  # the 60,000 images in the official order ($DARD_DATA_DIR), not the small synthetic set
    compact: Path | None = None  # the compact folder (jpeg.npz) it was built from, if it was


# The synthetic set: 5 training batches of 60 images and a test batch of 100, balanced over the 10 classes, whose
# first labels are the official ones (so a test asserts the same order on either copy).
SYNTHETIC_PER_BATCH, SYNTHETIC_TEST = 60, 100
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_FIRST_LABELS = {"train": [6, 9, 9], "test": [3, 8, 8, 0, 6]}
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)


def _synthetic_labels(n: int, first: list[int], rng: np.random.Generator) -> np.ndarray:
    rest = np.repeat(np.arange(10), n // 10)
    for label in first:  # the balance holds with the fixed first labels taken out of the pool
        rest = np.delete(rest, np.flatnonzero(rest == label)[0])
    return np.concatenate([first, rng.permutation(rest)]).astype(np.int64)


def _synthetic_rows(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Official CHW-flattened uint8 rows: per-class stripes of random amplitude around CIFAR-10's channel means
    (the stripes average to zero over an image, so the set's channel means are CIFAR-10's)."""
    ramp = np.arange(32)
    pattern = np.cos(2 * np.pi * (labels[:, None, None] + 1) * (ramp[:, None] + ramp[None, :]) / 32)
    amplitude = rng.uniform(20, 60, (len(labels), 3, 1, 1))
    img = np.array(CIFAR10_MEAN)[None, :, None, None] * 255 + amplitude * pattern[:, None]
    return img.round().clip(0, 255).astype(np.uint8).reshape(len(labels), -1)


def write_synthetic_cifar10(root: Path, seed: int = 0) -> Path:
    """A small CIFAR-10 in the official python-pickle layout under ``root/cifar-10-batches-py``; returns ``root``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train = _synthetic_labels(5 * SYNTHETIC_PER_BATCH, CIFAR10_FIRST_LABELS["train"], rng)
    test = _synthetic_labels(SYNTHETIC_TEST, CIFAR10_FIRST_LABELS["test"], rng)
    per = SYNTHETIC_PER_BATCH
    batches = [(f"data_batch_{k + 1}", train[k * per : (k + 1) * per]) for k in range(5)]
    for name, labels in [*batches, ("test_batch", test)]:
        record = {"batch_label": name, "labels": labels.tolist(), "data": _synthetic_rows(labels, rng)}
        (folder / name).write_bytes(pickle.dumps(record, protocol=4))
    meta = {"num_cases_per_batch": SYNTHETIC_PER_BATCH, "label_names": CIFAR10_CLASSES, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=4))
    return root


def shared_folder(tmp_path_factory, name: str, make: Callable[[Path], object]) -> Path:
    """A folder ``make(folder)`` fills once per test session, shared by the pytest-xdist workers (each worker has
    its session fixtures: the 60,000-image CIFAR-10 build took each of them ~13 s). The first worker to come makes
    it under a lock in the workers' common temporary folder (pytest-xdist's documented pattern), the others wait
    for it and read it; a folder left half made by a worker that died is made again. Readers must not change it."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: its own folder, as any session fixture
        folder = tmp_path_factory.mktemp(name)
        make(folder)
        return folder
    root = tmp_path_factory.getbasetemp().parent  # the session's folder, above each worker's own
    folder, done = root / f"shared-{name}", root / f"shared-{name}.done"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or when its process dies
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def synthetic_cifar10_dir(tmp_path_factory) -> Path:
    """The small synthetic CIFAR-10 (:func:`write_synthetic_cifar10`), written once per session: not official."""
    return write_synthetic_cifar10(tmp_path_factory.mktemp("cifar10-synthetic"))


@pytest.fixture(scope="session")
def cifar10(request, tmp_path_factory) -> Cifar10Copy:
    """CIFAR-10 for the tests that read it: ``$DARD_DATA_DIR`` when set (a folder with ``cifar-10-batches-py/``,
    or the compact form of tools/bundle/cifar10_npz.py, built here once per session), else the synthetic set, so a
    clone anywhere runs these tests."""
    if DATA_DIR is None:
        return Cifar10Copy(request.getfixturevalue("synthetic_cifar10_dir"), real=False)
    source = Path(DATA_DIR)
    if (source / "cifar-10-batches-py").is_dir():
        return Cifar10Copy(source, real=True)
    if (source / "jpeg.npz").is_file():
        from tools.bundle import cifar10_npz

        out = shared_folder(tmp_path_factory, "cifar10", lambda folder: cifar10_npz.build(source, folder))
        return Cifar10Copy(out, real=True, compact=source)
    pytest.fail(f"DARD_DATA_DIR={source} holds neither cifar-10-batches-py/ nor the compact jpeg.npz")


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


@pytest.fixture
def run(finished_run: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`finished_run` at ``tmp_path/R``, to change as a test likes."""
    return Path(shutil.copytree(finished_run, tmp_path / "R"))


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> content): compare before and after a command."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
