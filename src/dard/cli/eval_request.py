"""`dard eval`'s request: what to evaluate, on which data, with which attacks, and where the record goes."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from dard.errors import DardError

__all__ = ["EvalRequest"]


@dataclass(frozen=True)
class EvalRequest:
    """One `dard eval`, as its options give it (None: the option was not given; defaults are resolved later)."""

    checkpoint: str | None = None  # a dard checkpoint or a run folder
    model: str | None = None  # the architecture of --weights (or of user code), or robustbench:NAME
    weights: str | None = None  # an external weights file
    model_args: tuple[str, ...] = ()  # KEY=VALUE keyword arguments of the --model factory, for --weights
    model_dir: str | None = None  # RobustBench's model folder
    normalization: str | None = None  # "dataset" or "none", for --weights
    data: str | None = None
    data_dir: str | None = None
    download: bool = False
    n: int | None = None  # the first N test images (None: all)
    attacks: str | None = None  # comma-separated suite labels or attack names
    eps: str | None = None  # a number or fraction, as given
    norm: str | None = None
    batch_size: int = 256
    seed: int = 0
    device: str = "auto"
    out: str | None = None  # where the JSON record goes
    progress: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvalRequest:
        """The request of parsed `dard eval` options."""
        return cls(
            checkpoint=args.checkpoint,
            model=args.model,
            weights=args.weights,
            model_args=tuple(args.model_arg),
            model_dir=args.model_dir,
            normalization=args.normalization,
            data=args.data,
            data_dir=args.data_dir,
            download=args.download,
            n=args.n,
            attacks=args.attacks,
            eps=args.eps,
            norm=args.norm,
            batch_size=args.batch_size,
            seed=args.seed,
            device=args.device,
            out=args.out,
            progress=not args.no_progress,
        )

    def model_kwargs(self) -> dict[str, Any]:
        """The ``--model-arg KEY=VALUE`` keyword arguments of the --weights' factory, each value read as YAML (as a
        config's ``model.kwargs``); a DardError names a malformed, repeated, reserved or non-plain one."""
        from dard.config import read_assignments
        from dard.models import check_model_kwargs
        from dard.validate import check_plain_data

        if self.model_args and not self.weights:
            raise DardError("--model-arg is for --model ARCH --weights FILE (a dard checkpoint records its own)")
        kwargs = read_assignments(self.model_args, "--model-arg", dotted=False)
        check_plain_data(kwargs, "--model-arg")
        return dict(check_model_kwargs(kwargs, self.model))
