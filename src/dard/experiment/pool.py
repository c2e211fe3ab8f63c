"""Running an experiment's tasks (trainings, extras) a few processes at a time on a CPU."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

from dard.config import RunConfig
from dard.crash import as_user_error
from dard.runtime import die_with_parent
from dard.user_code import warnings_held

T = TypeVar("T")


def jobs_for(device: str, jobs: int | None) -> int:
    """How many runs go at once: ``jobs`` (default: one per core the process may use, at most 2) on a CPU, one on a
    GPU (:func:`dard.runtime.usable_cores`: two workers on one allowed core took turns on it). Small models
    are bound by per-call overhead on a CPU, so two one-thread processes beat one two-thread process (on 2 cores,
    1.27x the DARD step's images/s and 1.17x PGD-20's: ``benchmarks/bench_processes.py``)."""
    from dard.runtime import resolve_device, usable_cores

    if resolve_device(device).type != "cpu":
        return 1
    return jobs or min(2, usable_cores())


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
    the caller as the one-line :class:`dard.errors.DardError` it is in this process (:func:`_in_worker`).

    The first failure ends the map: no further task starts, and the tasks under way stop at their next training
    step (or before their next attack) with a resume snapshot (:func:`dard.training.deadline.watch_stop_event`);
    then it is raised. Without this the command would say its error only after every other task had run, hours on.
    """
    if jobs > 1 and len(tasks) > 1:
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        with ProcessPoolExecutor(jobs, context, initializer=_start_worker, initargs=(os.getpid(), stop)) as pool:
            futures = [pool.submit(_in_worker, fn, t) for t in tasks]
            try:
                for future in as_completed(futures):
                    result = future.result()  # raises the task's error here, as it ends, not after the others
                    if on_done is not None:
                        on_done(result)
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()  # those not queued yet; queued ones see the event and return at once
                raise
            return [f.result() for f in futures]
    results = []
    for t in tasks:
        results.append(fn(t))
        if on_done is not None:
            on_done(results[-1])
    return results


def _start_worker(parent: int, stop: Any) -> None:
    from dard.training.deadline import watch_stop_event

    die_with_parent(parent)
    watch_stop_event(stop)


def _in_worker(fn: Callable[[T], str], task: T) -> str:
    # The parent gets a worker's exception pickled, its traceback as text only (concurrent.futures'
    # _RemoteTraceback), so whose code raised it can only be told here, from the live traceback.
    from dard.training.deadline import request_stop, stop_requested

    if stop_requested():  # another task failed after this one was queued: the caller raises that, not this
        raise RuntimeError("not started: another task failed")
    try:
        with warnings_held():  # as in the parent's command (dard.cli.app): a user's model's warnings wait for its load
            return fn(task)
    except BaseException as exc:
        # at once, from here: this worker's next queued task must not start before the parent hears of it
        request_stop()
        if not isinstance(exc, Exception):
            raise
        error = as_user_error(exc)
        if error is None:
            raise
        raise error from None
