"""The one attack contract every registered attack follows.

An :class:`Attack` is a configured, reusable callable ``attack(model, x, y) -> x_adv``:

* ``x`` is a float tensor in [0, 1] (normalisation lives inside the model), ``y`` int64 labels;
* the model is put in eval mode for the attack (BatchNorm frozen, no running-stat updates) and every
  submodule's mode is restored afterwards, even when the attack raises;
* gradients are taken with ``torch.autograd.grad`` on the input only, so parameters' ``.grad`` are untouched;
* with a ``seed`` the attack is deterministic and runs under a forked RNG, so the caller's random stream is
  neither consumed nor changed;
* the result is detached, has the input's shape and dtype, lies in [0, 1] and in the eps-ball (checked).

Subclasses set ``name`` (and ``norm`` if not Linf), add their keyword-only parameters to ``__init__``
(validated there with the ``check_*`` helpers) and implement :meth:`Attack.perturb`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any, ClassVar

import torch
from torch import nn

from dard.errors import DardError

__all__ = [
    "Attack",
    "IterativeAttack",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_seed",
    "perturbation_norms",
]


# ---------------------------------------------------------------------------------------------------------------
# parameter validation: every message is one line and names the attack parameter
# ---------------------------------------------------------------------------------------------------------------


def check_float(
    name: str, value: Any, *, lo: float | None = None, hi: float | None = None, owner: str = "attack"
) -> float:
    """Return ``value`` as a float, or raise a one-line DardError if it is not a finite number in [lo, hi]."""
    # bool is an int subclass; `eps=True` is a config mistake, not 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DardError(f"{owner}: {name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise DardError(f"{owner}: {name} must be finite, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise DardError(f"{owner}: {name} must be in [{lo_s}, {hi_s}], got {value:g}")
    return value


def check_int(name: str, value: Any, *, lo: int | None = None, owner: str = "attack") -> int:
    """Return ``value`` as an int, or raise a one-line DardError if it is not an integer >= ``lo``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DardError(f"{owner}: {name} must be an integer, got {value!r}")
    if lo is not None and value < lo:
        raise DardError(f"{owner}: {name} must be >= {lo}, got {value}")
    return int(value)


def check_bool(name: str, value: Any, *, owner: str = "attack") -> bool:
    """Return ``value`` if it is a bool, else raise a one-line DardError."""
    if not isinstance(value, bool):
        raise DardError(f"{owner}: {name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[str], *, owner: str = "attack") -> str:
    """Return ``value`` if it is one of ``choices``, else raise a one-line DardError listing them."""
    if value not in choices:
        raise DardError(f"{owner}: {name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_seed(value: Any, *, owner: str = "attack") -> int | None:
    """A seed is None (use the global RNG stream) or a non-negative integer."""
    if value is None:
        return None
    return check_int("seed", value, lo=0, owner=owner)


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample size of ``x_adv - x`` in the given norm ("linf" or "l2"), shape (N,)."""
    delta = (x_adv - x).flatten(1).float()
    if norm == "linf":
        return delta.abs().amax(dim=1) if delta.shape[1] else delta.new_zeros(delta.shape[0])
    if norm == "l2":
        return delta.norm(p=2, dim=1)
    raise ValueError(f"unknown norm {norm!r}")


# ---------------------------------------------------------------------------------------------------------------
# RNG and mode handling
# ---------------------------------------------------------------------------------------------------------------


@contextmanager
def _forked_rng(device: torch.device, seed: int | None) -> Iterator[None]:
    """Run the block on a private copy of the global RNG state of the CPU and ``device``.

    With a seed the copy is reseeded, so randomness drawn by anything inside (the model, a library) is
    deterministic too; either way the caller's stream is restored on exit.
    """
    devices: list[int] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.random.default_generator.manual_seed(seed)
            for idx in devices:  # only the forked device; torch.manual_seed would touch every GPU
                torch.cuda.default_generators[idx].manual_seed(seed)
        yield


def local_module(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (else ``model`` itself).

    Attacks take gradients with respect to the input only; going through DDP would arm its gradient
    all-reduce for a backward pass that never reaches the parameters.
    """
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore every submodule's own previous mode.

    Per-module flags, not just ``model.training``: a caller may keep some submodules (frozen BN) in eval.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, was_training in modes:
            module.training = was_training


class Attack:
    """Base class: validation, eval-mode/RNG bookkeeping and output checks around :meth:`perturb`."""

    #: registry name, also the first entry of :meth:`config`
    name: ClassVar[str] = "attack"
    #: threat-model norm used by the output check ("linf" or "l2"); attacks with a norm parameter override
    norm: str = "linf"
    #: attacks whose dependencies reseed the global RNG (AutoAttack) always run under a forked RNG
    _always_fork_rng: ClassVar[bool] = False

    def __init__(self, *, eps: float = 8 / 255, seed: int | None = None) -> None:
        self.eps = check_float("eps", eps, lo=0.0, hi=1.0, owner=self.name)
        self.seed = check_seed(seed, owner=self.name)
        self._generator: torch.Generator | None = None

    # -- public API -------------------------------------------------------------------------------------------

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return adversarial examples for ``(x, y)`` against ``model`` (detached, same shape/dtype as ``x``)."""
        x, y = self._check_inputs(x, y)
        model = local_module(model)
        try:
            fork = self.seed is not None or self._always_fork_rng
            with eval_mode(model), _forked_rng(x.device, self.seed) if fork else nullcontext():
                self._generator = self._make_generator(x.device)
                x_adv = self.perturb(model, x, y)
        finally:
            self._generator = None
        x_adv = x_adv.detach()
        self._check_output(x, x_adv)
        return x_adv

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Attack-specific search; ``model`` is already in eval mode and ``x`` detached and validated."""
        raise NotImplementedError

    @classmethod
    def param_names(cls) -> list[str]:
        """The keyword parameters accepted by this attack's constructor, in signature order."""
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]

    def config(self) -> dict[str, Any]:
        """``{"name": ..., <every constructor parameter>: value}``, JSON-serialisable, for the run record.

        ``create_attack(**config)`` rebuilds an identical attack.
        """
        return {"name": self.name, **{p: getattr(self, p) for p in self.param_names()}}

    @property
    def generator(self) -> torch.Generator | None:
        """The private generator of the running call (seeded), or None: draw from the global stream."""
        return self._generator

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({params})"

    # -- internals ------------------------------------------------------------------------------------------------

    def _make_generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        gen = torch.Generator(device=device)
        gen.manual_seed(self.seed)
        return gen

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise DardError(f"{self.name}: inputs must be a float tensor in [0, 1], got {got}")
        if x.dim() < 2:
            raise DardError(f"{self.name}: inputs must be batched (N, ...), got shape {tuple(x.shape)}")
        if x.numel() and (bool(torch.isnan(x).any()) or x.min().item() < 0.0 or x.max().item() > 1.0):
            raise DardError(
                f"{self.name}: inputs must lie in [0, 1] (normalise inside the model), "
                f"got range [{x.min().item():.4g}, {x.max().item():.4g}]"
            )
        if not isinstance(y, torch.Tensor) or y.dtype != torch.long or tuple(y.shape) != (x.shape[0],):
            got = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, torch.Tensor) else type(y).__name__
            raise DardError(f"{self.name}: labels must be an int64 tensor of shape ({x.shape[0]},), got {got}")
        if y.device != x.device:
            raise DardError(f"{self.name}: inputs on {x.device} but labels on {y.device}")
        return x.detach(), y.detach()

    def _check_output(self, x: torch.Tensor, x_adv: torch.Tensor) -> None:
        # A broken projection is a programming error, not user input: AssertionError, not DardError.
        if x_adv.shape != x.shape or x_adv.dtype != x.dtype:
            raise AssertionError(
                f"{self.name}: result has shape {tuple(x_adv.shape)} {x_adv.dtype}, expected {tuple(x.shape)} {x.dtype}"
            )
        if not x.numel():
            return
        tol = max(1e-6, 2 * torch.finfo(x.dtype).eps)  # rounding of x +- eps in the input's precision
        if x_adv.min().item() < -tol or x_adv.max().item() > 1 + tol:
            raise AssertionError(f"{self.name}: result leaves [0, 1]")
        size = perturbation_norms(x_adv, x, self.norm.lower()).max().item()
        if size > self.eps + tol * max(1.0, self.eps):
            raise AssertionError(f"{self.name}: {self.norm} perturbation {size:.6g} exceeds eps {self.eps:.6g}")


class IterativeAttack(Attack):
    """Base of the step-based attacks: validates the parameters they share (a one-line DardError otherwise).

    Subclasses keep their own keyword signature (it defines :meth:`config`) and pass these parameters up; one that
    has no random start or restarts leaves the defaults.
    """

    def __init__(
        self,
        *,
        eps: float,
        step_size: float,
        steps: int,
        random_start: bool = False,
        restarts: int = 1,
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, seed=seed)
        self.step_size = check_float("step_size", step_size, lo=0.0, owner=self.name)
        self.steps = check_int("steps", steps, lo=1, owner=self.name)
        self.random_start = check_bool("random_start", random_start, owner=self.name)
        self.restarts = check_int("restarts", restarts, lo=1, owner=self.name)
        if self.restarts > 1 and not self.random_start:
            raise DardError(f"{self.name}: restarts > 1 needs random_start=true (restarts would be identical)")
