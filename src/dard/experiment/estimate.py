"""Estimates of what a run still costs on this device, for `dard experiment --time-budget`
(:mod:`dard.experiment.budget`): the cost model of :mod:`dard.training.cost` at a rate taken, in this order, from

1. the run's own measured throughput (a run resumed from a snapshot),
2. an earlier run in the same runs folder on the same device, measured on the same CPU kind (model and native bf16,
   as run.json records them; a run recorded without them is of unknown kind) before any other: an emulated bf16 step
   runs 35 times slower than a native one, and every CPU has one device name; then the same architecture and
   method first, then the same architecture, then any (scaled by their multiply-accumulates per image, and raised
   to the default when below it: MACs undercount a wide network's efficiency against a narrow one's); of several
   that match equally well, the run at their (lower) median rate,
3. the conservative default for the device type (:data:`dard.training.cost.DEFAULT_MACS_PER_S`).

On a CPU a rate measured on more threads than a run has now (two runs at a time, one thread each) is scaled down
in proportion; one measured on fewer threads is not scaled up. Both err long: one of two one-thread processes side
by side ran a DARD step at 0.64 times the rate of one process on both threads, not 0.5
(``benchmarks/bench_processes.py``), so a budget starts no run it cannot finish.

The test evaluation's rate comes from recorded evaluations the same way (their attack times: the run's own, else
the best-matching earlier runs', a run with its own training rate too), else from the training rate
(:data:`dard.training.cost.EVAL_SPEED_FACTOR`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dard.config import RunConfig
from dard.errors import DardError
from dard.run_dir import RunDir, RunInfo
from dard.training.cost import (
    EVAL_SPEED_FACTOR,
    DataSizes,
    arch_macs,
    compile_seconds,
    default_rate,
    measured_eval_rate,
    measured_rate,
    run_cost,
    startup_seconds,
    teacher_arch,
    train_passes,
)


@dataclass
class Estimate:
    """Seconds a run still needs, the rate's basis, and the MiB its weights and resume state take."""

    train_s: float
    eval_s: float
    startup_s: float
    basis: str
    weights_mib: float
    eval_rate: float = 1.0  # MACs/s the evaluation is estimated at

    @property
    def total(self) -> float:
        return self.startup_s + self.train_s + self.eval_s

    def text(self) -> str:
        return (
            f"~{self.total:.0f} s (start {self.startup_s:.0f} + train {self.train_s:.0f} + "
            f"test evaluation {self.eval_s:.0f}; rate from {self.basis})"
        )


# an earlier run measured on this device: (match rank, name, training MACs/s, images/s, evaluation MACs/s or None,
# measured on this CPU kind)
_Found = tuple[int, str, float, float, float | None, bool]
#: a CPU's kind as run.json records it: (its model, whether it computes bf16 natively)
CpuKind = tuple[str, bool]


class Estimator:
    """Estimates for the runs of one runs folder on one device (``label``: its name as run.json records it; None
    when planning for a device type this machine does not have), each run on ``threads`` CPU threads (None: as
    many as this process has now); ``cpu``: this machine's CPU kind (:func:`cpu_kind`; None: unknown)."""

    def __init__(
        self,
        runs_root: Path,
        device_type: str,
        label: str | None,
        threads: int | None = None,
        cpu: CpuKind | None = None,
    ) -> None:
        self.runs_root, self.device_type, self.label, self.threads = runs_root, device_type, label, threads
        self.cpu = cpu
        self._sizes: dict[tuple, DataSizes] = {}

    def sizes(self, cfg: RunConfig) -> DataSizes:
        """The run's split sizes (its dataset loaded once per experiment)."""
        from dard.training.setup import prepare_data

        key = (cfg.data.model_dump_json(), cfg.seed)
        if key not in self._sizes:
            bundle = dataset_bundle(cfg.data.name, cfg.data.dir, cfg.data.download)
            self._sizes[key] = DataSizes.of(prepare_data(cfg, bundle))
        return self._sizes[key]

    def estimate(self, name: str, cfg: RunConfig, teacher: str | None) -> Estimate:
        folder = RunDir(self.runs_root / name)
        sizes = self.sizes(cfg)
        cost = run_cost(cfg, sizes, teacher_arch(cfg, folder if folder.is_run() else None) or teacher, folder)
        rate, eval_rate, basis = self._rates(folder, cfg, cost.train_macs, sizes)
        progress = folder.read_progress() if folder.is_run() else None
        epoch, batch = (progress.epoch, progress.batch) if progress else (0, 0)
        trained = epoch >= cfg.optim.epochs
        train_s = 0.0 if trained else cost.train_seconds(rate, epoch, batch * cfg.optim.batch_size)
        train_s += compile_seconds(cfg) if train_s else 0.0
        # what an unfinished run carries: best, the snapshot's weights and its momentum, 4 float32 bytes each
        mib = 12 * parameter_count(cfg, sizes) / 2**20
        eval_rate = eval_rate or cost.eval_rate(rate)
        return Estimate(train_s, cost.eval_macs / eval_rate, startup_seconds(self.device_type), basis, mib, eval_rate)

    def _rates(
        self, folder: RunDir, cfg: RunConfig, train_macs: float, sizes: DataSizes
    ) -> tuple[float, float | None, str]:
        """(training MACs/s, evaluation MACs/s or None, where they come from): the run's own measurements, else
        the best-matching earlier run on this device, else the default. A rate carried over from another
        architecture is scaled by MACs per image, which undercounts wide networks' efficiency, so it is raised to
        the default when below it."""
        own = measured_rate(folder, train_macs) if folder.is_run() and self._same_device(folder) else None
        if own:
            scale, note = self._thread_scale(folder.read_info())
            own_eval = measured_eval_rate(folder, sizes)
            own_eval = own_eval * scale if own_eval else None
            note += self._kind_note(folder.read_info())
            # a run not evaluated yet takes an earlier run's measured evaluation: the training rate's factor put
            # a ResNet-8's suite and AutoAttack at twice what the campaign's evaluations took
            own_eval = own_eval or _eval_rate(self._earlier_runs(folder, cfg, sizes), own[0] * scale)
            return own[0] * scale, own_eval, f"its own throughput so far ({own[1]:.0f} images/s{note})"
        found = self._earlier_runs(folder, cfg, sizes)
        default = default_rate(cfg, self.device_type)
        if not found:
            return (
                default,
                None,
                f"the default for {self.device_type} ({default / 1e12:.3g} TMAC/s; nothing measured here yet)",
            )
        # The median run of the best-matching group, not the first by name: one slow or fast neighbour (AdaAD's
        # rate for a natural run) would otherwise decide every estimate of a method not measured yet.
        best = _best_matches(found)
        rank, other, rate, ips, _, _ = _median_of(best, key=lambda f: f[2])
        how = ["same architecture and method", "same architecture", "another architecture, scaled by MACs"][rank]
        how += f"; the median of {len(best)} such runs" if len(best) > 1 else ""
        measured = RunDir(self.runs_root / other).read_info()
        how += self._thread_scale(measured)[1] + self._kind_note(measured)
        on = measured.latest_environment().get("device_name") or self.label  # its threads, not ours
        if rank == 2 and rate < default:
            how, rate = f"{how}; raised to the default {default / 1e12:.3g} TMAC/s", default
        return rate, _eval_rate(found, rate), f"earlier run {other} on {on} ({ips:.0f} images/s; {how})"

    def _earlier_runs(self, folder: RunDir, cfg: RunConfig, sizes: DataSizes) -> list[_Found]:
        """The measured runs on this device (:data:`_Found`; rank 0 same architecture and method, 1 same
        architecture, 2 another)."""
        found = []
        for other in sorted(p for p in self.runs_root.glob("*") if p.is_dir() and p != folder.path):
            run = RunDir(other)
            if not (run.run_info.is_file() and self._same_device(run)):
                continue
            info = run.read_info()
            student = info.student or {}
            if int(student.get("num_classes", -1)) != sizes.classes or not student.get("arch"):
                continue  # another dataset: its MACs per image are not comparable
            try:
                passes = train_passes(info.method)
            except DardError:  # a method or attack this version does not know: its cost is unknown
                continue
            t_arch, t_kwargs = (info.teacher or {}).get("arch"), (info.teacher or {}).get("kwargs")
            macs = passes.macs(
                arch_macs(student["arch"], sizes.classes, sizes.shape, student.get("kwargs")),
                arch_macs(t_arch, sizes.classes, sizes.shape, t_kwargs) if t_arch else 0,
            )
            got = measured_rate(run, macs)
            if got:
                same_arch = student["arch"] == cfg.model.arch
                rank = 0 if same_arch and info.method.get("name") == cfg.method.name else 1 if same_arch else 2
                scale, evals = self._thread_scale(info)[0], measured_eval_rate(run, sizes)
                same_kind = not self._kind_note(info)
                found.append((rank, other.name, got[0] * scale, got[1], evals * scale if evals else None, same_kind))
        return found

    def _thread_scale(self, info: RunInfo) -> tuple[float, str]:
        """(the factor a rate the run of ``info`` measured takes for a run on this estimator's threads, a note for
        the basis): fewer threads now than it had scale its rate down in proportion, more leave it (module
        docstring)."""
        then = info.latest_environment().get("cpu_threads")  # its last metrics were measured then
        now = self.threads or torch_threads()
        if self.device_type != "cpu" or not isinstance(then, int) or then <= now:
            return 1.0, ""
        return now / then, f"; x{now}/{then} for {now} thread{'s' if now > 1 else ''} of its {then}"

    def _kind_note(self, info: RunInfo) -> str:
        """For the basis, where the run of ``info`` measured its latest rates on a CPU of another kind than this one
        (or of a kind unknown, there or here); empty on the same kind, and on other devices."""
        if self.device_type != "cpu":
            return ""
        then = cpu_kind(info.latest_environment())
        if then is not None and then == self.cpu:
            return ""
        if then is None:
            return "; measured on a CPU of unknown kind (its run.json names no CPU model)"
        here = f"this one {_kind_text(self.cpu)}" if self.cpu else "this one's unknown"
        return f"; measured on another CPU kind, {_kind_text(then)} ({here})"

    def _same_device(self, run: RunDir) -> bool:
        recorded = run.read_info().latest_environment().get("device_name")  # where its last rates were measured
        return self.label is not None and _device_key(str(recorded)) == _device_key(self.label)


def _eval_rate(found: list[_Found], train_rate: float) -> float | None:
    """The evaluation MACs/s of the best-matching earlier runs that were evaluated (their median), None if none was;
    one of another architecture (scaled by MACs) no lower than the training rate's factor gives."""
    evaluated = _best_matches([f for f in found if f[4]])
    if not evaluated:
        return None
    rank, _, _, _, rate, _ = _median_of(evaluated, key=lambda f: f[4] or 0.0)
    return max(rate or 0.0, train_rate * EVAL_SPEED_FACTOR) if rank == 2 else rate


def _best_matches(rows: list[_Found]) -> list[_Found]:
    """The rows of the best (lowest) match rank among ``rows`` (empty for none), of those measured on this CPU kind
    where there are any."""
    rows = [r for r in rows if r[5]] or rows
    lowest = min((r[0] for r in rows), default=None)
    return [r for r in rows if r[0] == lowest]


def cpu_kind(env: dict[str, Any]) -> CpuKind | None:
    """The CPU kind an environment (run.json's, :func:`dard.runtime.environment`) records; None where it does not
    say (records from before dard recorded it are of unknown kind, never taken for this one)."""
    model, native = env.get("cpu_model"), env.get("cpu_native_bf16")
    return (model, native) if isinstance(model, str) and isinstance(native, bool) else None


def _kind_text(kind: CpuKind) -> str:
    return f"{kind[0]} with {'native' if kind[1] else 'emulated'} bf16"


def _median_of(rows: list[_Found], key: Callable[[_Found], Any]) -> _Found:
    """The row of ``rows`` (in name order) at the lower median of ``key``: an actual run, to name as the basis."""
    ordered = sorted(sorted(rows, key=lambda f: f[1]), key=key)
    return ordered[(len(ordered) - 1) // 2]


def _device_key(name: str) -> str:
    """A device name without a CPU's thread count (runs of one machine use 1 or all threads)."""
    return re.sub(r", \d+ threads?\)$", ")", name)


@functools.lru_cache(maxsize=8)
def dataset_bundle(name: str, folder: str | None, download: bool) -> Any:
    """The dataset, loaded once per process for every run that names it (estimates, the plan's data checks)."""
    from dard.data import load_dataset

    return load_dataset(name, folder, download=download)


def parameter_count(cfg: RunConfig, sizes: DataSizes) -> int:
    """The parameters of the run's model for its data (built once per architecture, data shape and kwargs)."""
    return _params(cfg.model.arch, sizes.classes, sizes.shape[0], json.dumps(cfg.model.kwargs))


@functools.lru_cache(maxsize=32)
def _params(arch: str, classes: int, channels: int, kwargs_json: str = "{}") -> int:
    from dard.models import create_model
    from dard.models.cost import count_parameters

    kwargs = json.loads(kwargs_json)  # JSON text: the cache key of a config's model.kwargs
    return count_parameters(create_model(arch, num_classes=classes, in_channels=channels, **kwargs))


def estimator_for(runs_root: Path, device: str, threads: int | None = None) -> Estimator:
    """The estimator for ``device`` (a device string as runs get it), each run on ``threads`` CPU threads (None:
    this process's). Planning for CUDA on a machine without it (``--plan --device cuda``) takes the rates of the
    CUDA runs already in the runs folder (imported from a GPU job; the first device name found), else the CUDA
    defaults."""
    import torch

    from dard.runtime import cpu_model, cpu_native_bf16, device_name, resolve_device

    if device.startswith("cuda") and not torch.cuda.is_available():
        return Estimator(runs_root, "cuda", _recorded_cuda_device(runs_root))
    dev = resolve_device(device)
    here = cpu_kind({"cpu_model": cpu_model(), "cpu_native_bf16": cpu_native_bf16()})  # as environment() records
    return Estimator(runs_root, dev.type, device_name(dev), threads, here)


def torch_threads() -> int:
    """This process's intra-op CPU threads."""
    import torch

    return torch.get_num_threads()


def _recorded_cuda_device(runs_root: Path) -> str | None:
    for path in sorted(runs_root.glob("*/")):
        run = RunDir(path)
        if run.run_info.is_file():
            env = run.read_info().environment
            if str(env.get("device", "")).startswith("cuda") and env.get("device_name"):
                return str(env["device_name"])
    return None
