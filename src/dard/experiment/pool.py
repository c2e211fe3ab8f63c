"""Running an experiment's tasks (trainings, extras) a few processes at a time on a CPU."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TypeVar

from dard.config import RunConfig
from dard.crash import as_user_error
from dard.runtime import die_with_parent
from dard.user_code import warnings_held

T = TypeVar("T")


def jobs_for(device: str, jobs: int | None) -> int:
    """How many runs go at once: ``jobs`` (default: one per core, at most 2) on a CPU, one on a GPU. Small models
    are bound by per-call overhead on a CPU, so two one-thread processes beat one two-thread process (on 2 cores,
    1.27x the DARD step's images/s and 1.17x PGD-20's: ``benchmarks/bench_processes.py``)."""
    from dard.runtime import resolve_device

    if resolve_device(device).type != "cpu":
        return 1
    return jobs or min(2, os.cpu_count() or 1)


def threads_for(jobs: int) -> int | None:
    """Each run's CPU threads when ``jobs`` go at once: one each beside others, else all (None)."""
    return 1 if jobs > 1 else None


def with_threads(cfg: RunConfig, threads: int | None) -> RunConfig:
    """``cfg`` with ``speed.threads`` set (validated; None: the run's default), the rest unchanged."""
    out = cfg.model_copy(deep=True)
    out.speed.threads = threads
    return out


def pool_map(
    fn: Callable[[T], str], tasks: Sequence[T], jobs: int, on_done: Callable[[str], None] | None = None
) -> list[str]:
    """``fn`` over ``tasks`` (``jobs`` spawned processes at a time; ``fn`` and the tasks must pickle), results in
    task order; ``on_done`` gets each result as its task ends. A failure in the user's own code in a worker reaches
    the caller as the one-line :class:`dard.errors.DardError` it is in this process (:func:`_in_worker`)."""
    if jobs > 1 and len(tasks) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, context, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_in_worker, fn, t) for t in tasks]
            for future in as_completed(futures):
                if on_done is not None:
                    on_done(future.result())
            return [f.result() for f in futures]
    results = []
    for t in tasks:
        results.append(fn(t))
        if on_done is not None:
            on_done(results[-1])
    return results


def _in_worker(fn: Callable[[T], str], task: T) -> str:
    # The parent gets a worker's exception pickled, its traceback as text only (concurrent.futures'
    # _RemoteTraceback), so whose code raised it can only be told here, from the live traceback.
    try:
        with warnings_held():  # as in the parent's command (dard.cli.app): a user's model's warnings wait for its load
            return fn(task)
    except Exception as exc:
        error = as_user_error(exc)
        if error is None:
            raise
        raise error from None
