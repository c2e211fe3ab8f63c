"""Seeding, device choice and the environment record every run and evaluation stores."""

from __future__ import annotations

import os
import platform
import random
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dard._git import BUILD_COMMIT_FILE, source_commit
from dard.errors import DardError, shown


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (all devices) from one integer."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; an unavailable explicit device is a DardError.

    Only the CPU and CUDA devices (and Apple's ``mps`` where this torch has it) are taken: torch parses many more
    names (``meta``, ``xpu``, ``vulkan``, ...), which failed later, inside the run, or on ``meta`` computed nothing.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise DardError(f"unknown device {shown(name)}; use auto, cpu, cuda or cuda:N")
    if dev.type == "cpu" and dev.index not in (None, 0):  # torch takes cpu:1, and runs on the one CPU device
        raise DardError(f"unknown device {shown(name)}: the CPU is one device (cpu); use auto, cpu, cuda or cuda:N")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DardError(f"device '{name}' requested but this PyTorch has no MPS (Apple GPU) support here")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DardError(f"device '{name}' requested but CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise DardError(
            f"device '{name}' requested but this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1})"
        )
    return dev


def device_name(device: torch.device) -> str:
    """A human-readable device name, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu (x86_64, 2 threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"cpu ({platform.machine()}, {threads} thread{'' if threads == 1 else 's'})"


def git_commit() -> str | None:
    """The git commit this package comes from (with '+dirty' when modified), if known.

    A package run from its checkout (``<checkout>/src/dard``) asks git; an installed one reads the commit its wheel
    was built from (written by ``setup.py``), and never asks git, which would name whatever repository the
    environment happens to live in.
    """
    package = Path(__file__).resolve().parent
    if (package.parent.parent / "pyproject.toml").is_file() and package.parent.name == "src":
        return source_commit(package)
    try:
        return (package / BUILD_COMMIT_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device | None = None) -> dict[str, Any]:
    """Versions, git commit, device and host facts recorded with every run and evaluation."""
    from dard._version import __version__

    device = device or torch.device("cpu")
    return {
        "dard": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pyautoattack": _version("pyautoattack"),
        "device": str(device),
        "device_name": device_name(device),
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        # the CPU kind a rate was measured on (dard.experiment.estimate): one device_name on every CPU, and an
        # emulated bf16 step is 35 times slower than a native one
        "cpu_model": cpu_model(),
        "cpu_native_bf16": cpu_native_bf16(),
    }


#: the most intra-op threads a config (speed.threads) or OMP_NUM_THREADS may ask for
MAX_THREADS = 4096


def configure_threads(threads: int | None) -> None:
    """Set intra-op threads for CPU runs: ``threads``, else :func:`default_threads`. More threads than cores are
    kept, since a config travels between machines and its reductions follow the thread count, but said once:
    oversubscribed cores make every step slower."""
    cores = usable_cores()
    chosen = threads if threads is not None else default_threads()
    if chosen > cores and chosen != torch.get_num_threads():
        where = "speed.threads" if threads is not None else "OMP_NUM_THREADS"
        print(
            f"dard: note: {where} {chosen} is more than the {cores} core(s) this process may use; "
            "each step will be slower",
            file=sys.stderr,
        )
    torch.set_num_threads(max(1, chosen))


def default_threads() -> int:
    """The threads of a run whose config leaves ``speed.threads`` unset: ``$OMP_NUM_THREADS`` where it is an
    integer in 1-:data:`MAX_THREADS` (torch reads it the same way; torchrun sets 1 per process, and shared machines
    set it to a job's share), else every core the process may use. Another value is ignored, with a note."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isascii() and given.isdigit() and 1 <= int(given[:5]) <= MAX_THREADS:
        return int(given)
    if given and given not in _IGNORED_OMP:
        _IGNORED_OMP.add(given)  # said once per process, not once per run of an experiment
        what = f"OMP_NUM_THREADS={shown(given)}"
        print(f"dard: note: {what} is not an integer in 1-{MAX_THREADS}; ignored", file=sys.stderr)
    return usable_cores()


_IGNORED_OMP: set[str] = set()


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a job's share of a shared machine, ``taskset``), not
    every core the machine has (``os.cpu_count``); the one count of cores for threads and worker processes."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: CPU flags (x86: /proc/cpuinfo "flags"; Arm: "Features") of native bf16 arithmetic
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """This CPU's model as the system names it (x86: cpuinfo's "model name", e.g. 'AMD EPYC'; else
    ``platform.processor()``); None where it cannot tell."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return " ".join(value.split())[:200]
    return platform.processor() or None


def cpu_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether this CPU computes bf16 natively (:data:`BF16_FLAGS`); None where it cannot tell (no cpuinfo)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & BF16_FLAGS) if flags else None


def die_with_parent(parent: int) -> None:
    """Make this worker process end when ``parent`` (the pid that started it) does, however the parent ends (a
    worker of a killed `dard demo` or `dard experiment` must not keep training and holding a run's lock). Linux:
    the kernel sends SIGKILL when the parent dies; elsewhere a daemon thread watches the parent's pid."""
    import signal
    import threading
    import time

    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL) != 0:  # 1: PR_SET_PDEATHSIG
            raise OSError
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
