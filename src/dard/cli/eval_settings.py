"""What `dard eval` evaluates with: a run's own dataset, eps, norm and normalisation unless flags say otherwise.

Given a run folder (or one of its checkpoints), the defaults come from the run's recorded config (``config.yaml``,
read through :class:`dard.run_dir.RunDir`); an explicit flag still wins, with a note when it differs from the run.
Without a run (a standalone checkpoint or external weights) the defaults are CIFAR-10 at Linf 8/255, and external
weights must say how their inputs were normalised.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from dard.attacks.threat import budget_text
from dard.checkpoint import check_not_training, checkpoint_meta
from dard.cli.eval_request import EvalRequest
from dard.config import RunConfig
from dard.errors import DardError
from dard.evaluation.suite import parse_eps
from dard.run_dir import CHECKPOINTS, RunDir

__all__ = ["NORMALIZATION_HELP", "EvalSettings", "eval_settings"]

DEFAULT_DATA = "cifar10"
DEFAULT_EPS = 8 / 255
DEFAULT_NORM = "linf"
NORMALIZATION_HELP = (
    "'dataset' if the model was trained on inputs normalised with the dataset's mean/std (dard then normalises "
    "inside the model), 'none' if it was trained on raw [0, 1] pixels"
)


@dataclass
class EvalSettings:
    """The dataset, eps and model source of one `dard eval`, and the notes to print about them."""

    data: str
    data_dir: str | None
    eps: float
    norm: str = "linf"
    run: Path | None = None  # the run folder the checkpoint belongs to
    checkpoint: str | None = None  # "best" / "last" when a run's checkpoint is evaluated
    data_defaulted: bool = False  # no flag and no run config named the dataset: DEFAULT_DATA was taken
    notes: list[str] = field(default_factory=list)


def eval_settings(request: EvalRequest) -> EvalSettings:
    """Resolve `dard eval`'s dataset, eps and normalisation from its flags and, for a run, the run's config."""
    if request.weights and not request.normalization:
        raise DardError(f"--weights needs --normalization dataset|none: {NORMALIZATION_HELP}")
    cfg, run, which = None, None, None
    if request.weights:  # a run's checkpoint given as external weights: the same files, replaced the same way
        check_not_training(request.weights, Path(request.weights), "weights")
    if request.checkpoint:
        weights, meta = checkpoint_meta(request.checkpoint, request.model)
        # a run another process holds (a training) replaces its checkpoints: its `last` is half-trained, its `best`
        # may be replaced while read; refused as a teacher there is
        check_not_training(request.checkpoint, weights, "checkpoint")
        _check_normalization(request.normalization, meta["model"])
        if RunDir(weights.parent).is_run():
            run, cfg = weights.parent, _run_config(weights.parent)
            which = weights.stem if weights.stem in CHECKPOINTS else None
        elif not request.data:
            _check_not_a_run_without_config(RunDir(weights.parent))
    notes: list[str] = []
    data = request.data or (cfg.data.name if cfg else DEFAULT_DATA)
    if cfg is not None and request.data and request.data != cfg.data.name:
        notes.append(f"--data {request.data} differs from the run's dataset {cfg.data.name}")
    data_dir = request.data_dir or (cfg.data.dir if cfg is not None and data == cfg.data.name else None)
    eps = parse_eps(request.eps) if request.eps is not None else (cfg.eps if cfg else DEFAULT_EPS)
    if cfg is not None and request.eps is not None and not math.isclose(eps, cfg.eps, rel_tol=1e-9, abs_tol=1e-12):
        levels = "" if cfg.norm == "l2" else f" ({budget_text(cfg.eps, cfg.norm, levels='.2f')})"
        notes.append(f"--eps {request.eps} differs from the run's eps {cfg.eps:.6g}{levels}")
    norm = request.norm or (cfg.norm if cfg else DEFAULT_NORM)
    if norm != "linf" and request.eps is None and (cfg is None or cfg.norm == "linf"):
        # an L2 evaluation at an Linf budget (8/255: a radius of 0.03) measured next to no perturbation, in silence
        budget = f"the run's eps {cfg.eps:.6g} is its Linf budget" if cfg else "the default 8/255 is an Linf budget"
        raise DardError(f"--norm {norm} needs --eps: {budget} (L2 evaluations take e.g. 0.5)")
    if cfg is not None and request.norm and request.norm != cfg.norm:
        notes.append(f"--norm {request.norm} differs from the run's norm {cfg.norm}")
    return EvalSettings(
        data, data_dir, eps, norm, run=run, checkpoint=which, notes=notes, data_defaulted=not (request.data or cfg)
    )


def _check_not_a_run_without_config(folder: RunDir) -> None:
    """A DardError if ``folder`` holds a run's records but no config.yaml, whose dataset, eps and norm dard eval
    would take: the checkpoint was evaluated as one on its own, on CIFAR-10, and the error said the channels
    differed."""
    records = [p.name for p in (folder.run_info, folder.metrics, folder.pointer) if os.path.lexists(p)]
    if records:
        raise DardError(
            f"{folder.path} holds a run's {', '.join(records)} but no {folder.config.name}, the run's config that "
            "dard eval takes the dataset, eps and norm from: restore it, or give --data (with --eps and --norm) to "
            "evaluate the checkpoint on its own"
        )


def _run_config(folder: Path) -> RunConfig:
    return RunDir(folder).read_run_config()


def _check_normalization(flag: str | None, spec: dict) -> None:
    """A dard checkpoint records its normalisation; a contradicting --normalization is an error, not ignored."""
    recorded = "none" if spec.get("mean") is None else "dataset"
    if flag and flag != recorded:
        raise DardError(
            f"--normalization {flag} contradicts the checkpoint, which records its own ({recorded}); "
            "--normalization is for --weights"
        )
