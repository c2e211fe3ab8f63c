"""Multi-process training through PyTorch's own engine: ``torchrun --nproc_per_node=N -m dard train ...``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on
GPUs, gloo on CPUs), and the training loop wraps the student in DistributedDataParallel, shards each global
batch over the ranks (``DeviceLoader(rank=, world_size=)``), sums its metrics over ranks, and lets rank 0 alone
validate, write checkpoints and evaluate.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from dard.errors import DardError, one_line, shown
from dard.run_dir import RunDir

# Whether this process has begun to join its job's process group: what failed before came from the command line,
# alike on every rank (rank 0 alone says it, :func:`speaks`); what fails from here on may be this rank's own.
_joining = {"begun": False}


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job (``world_size == 1`` and ``enabled`` False for a plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    enabled: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistInfo:
    """Read torchrun's environment variables (a plain ``python -m dard`` has none: single process); a one-line
    DardError for values torchrun would not set (a ``WORLD_SIZE`` left in a job script's environment, without
    the rendezvous address torchrun sets beside it, ended in an internal error of torch's rendezvous)."""
    world = _count("WORLD_SIZE", "1")
    if world <= 1:
        return DistInfo()
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    rank, local_rank = _count("RANK", "0"), _count("LOCAL_RANK", "0")
    if missing or rank >= world:
        why = f"{', '.join(missing)} unset" if missing else f"RANK={rank}"
        raise DardError(
            f"WORLD_SIZE={world} in the environment with {why}: several processes are started by torchrun "
            "(torchrun --nproc_per_node=N -m dard train ...), which sets them all; unset WORLD_SIZE to run one process"
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, enabled=True)


def _count(name: str, default: str) -> int:
    """The environment variable ``name`` as a whole number of at least 0 (``default`` when unset or empty)."""
    text = os.environ.get(name) or default
    if not text.strip().isdigit():
        raise DardError(
            f"{name}={shown(text)} in the environment is not a process count or rank; torchrun sets it (torchrun "
            "--nproc_per_node=N -m dard train ...); unset it to run one process"
        )
    return int(text)


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; returns this rank's info and device.

    On CUDA each rank takes ``cuda:LOCAL_RANK`` and NCCL; on the CPU, gloo.
    """
    info = from_environment()
    if not info.enabled:
        return info, device
    _joining["begun"] = True
    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise DardError(f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} CUDA device(s)")
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def teardown(info: DistInfo) -> None:
    """Leave the process group (no-op for a single process)."""
    if info.enabled and dist.is_initialized():
        # Free cyclic garbage that may still hold the group's work objects (DDP, autograd graphs) while the
        # interpreter is whole: destroyed during interpreter shutdown instead, they can abort the process
        # ("terminate called without an active exception"; a 2-process gloo + DDP script did so 3 times in 40).
        gc.collect()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for a single process)."""
    if info.enabled:
        dist.barrier()


def sum_over_ranks(values: dict[str, float], info: DistInfo, device: torch.device) -> dict[str, float]:
    """Sum each number over all ranks (in float64); the identity for a single process."""
    if not info.enabled:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))


def agree(ok: bool, message: str, info: DistInfo, device: torch.device) -> None:
    """Raise a DardError on every rank if any rank says not ``ok`` (so no rank is left waiting): the ``message`` of
    the first rank that failed, on every rank alike (``every_rank``: rank 0 alone says it)."""
    if not any_rank(not ok, info, device):
        return
    said: list[str | None] = [message if not ok else None]
    if info.enabled:  # the rare path: a failure; the rank that failed has the words for it
        said = [None] * info.world_size
        dist.all_gather_object(said, None if ok else message)
    error = DardError(next(m for m in said if m is not None))
    error.every_rank = info.enabled
    raise error


# What a collective raises once another process of the job has gone (its own failure, said by itself, or a kill):
# gloo's RuntimeError names the remote worker or the closed connection; NCCL and the store raise torch's DistError.
_PEER_GONE = ("remote worker", "Connection closed by peer", "Connection reset by peer")


def leave_after(error: BaseException, info: DistInfo, run_dir: Path) -> None:
    """Leave the process group after ``error`` (:func:`teardown`); an error a collective raised because another process
    of the job had gone becomes a DardError every rank has alike (rank 0 says it): rank 1 waiting for a rank 0
    whose write failed said "internal error ... please report it" beside rank 0's own line."""
    teardown(info)
    gone = isinstance(error, dist.DistError) or (
        isinstance(error, RuntimeError) and any(m in str(error) for m in _PEER_GONE)
    )
    if not (info.enabled and gone):
        return
    resume = RunDir(run_dir)
    hint = f"; dard train --resume {resume.path} continues from its last snapshot" if resume.has_snapshot() else ""
    lost = DardError(
        f"another process of this torchrun job stopped while rank {info.rank} waited for it ({type(error).__name__}: "
        f"{one_line(error, 160)}): its own line, or torchrun's summary after this one, says why{hint}"
    )
    lost.every_rank = True
    raise lost from None


def speaks(error: BaseException | None = None) -> bool:
    """Whether this process says ``error`` (``None``: a line every rank would say alike, an interrupt's) on stderr:
    a plain process does, and under torchrun rank 0; another rank only an error of its own, raised once it began to
    join the process group and not by every rank alike (:func:`agree`): N copies of one line buried it."""
    try:
        if from_environment().is_main:
            return True
    except DardError:  # no torchrun job after all: this process says its line
        return True
    return error is not None and _joining["begun"] and not (isinstance(error, DardError) and error.every_rank)


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Whether ``flag`` is true on any rank (every rank gets the same answer); ``flag`` itself for one process."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item()) > 0
