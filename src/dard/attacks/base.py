"""The one attack contract every registered attack follows.

An :class:`Attack` is a configured, reusable callable ``attack(model, x, target) -> x_adv``:

* ``x`` is a float tensor in [0, 1] (normalisation lives inside the model);
* ``target`` is what the attack moves away from (or towards), of the kind its ``target_kind`` declares:
  ``"labels"`` (the true labels, int64 class indices, shape (N,): every evaluation attack), ``"probs"`` (target
  probabilities, float (N, classes) with rows summing to 1: the KL maximisation of TRADES / RSLAD) or ``"targets"``
  (the classes to move towards, int64 (N,): targeted PGD with ``target="given"``); it is checked before the attack
  runs, and a call in the torchattacks style (the model given to the constructor, or left out of the call) is a
  TypeError that shows the right one;
* the model is put in eval mode for the attack (BatchNorm frozen, no running-stat updates) and every
  submodule's mode is restored afterwards, even when the attack raises; a training attack whose
  :attr:`Attack.keep_model_mode` is set (a method's ``attack_mode: train``) leaves the model in the mode it comes in,
  so a train-mode student's BatchNorm uses each iterate's batch statistics and folds them into its running
  statistics, as the official SAT and ARD code does;
* gradients are taken with ``torch.autograd.grad`` on the input only, so parameters' ``.grad`` are untouched;
* with a ``seed`` the attack is deterministic and runs under a forked RNG, so the caller's random stream is
  neither consumed nor changed; with ``seed=None`` (training attacks) it draws from the global stream;
* the result is detached, has the input's shape and dtype, lies in [0, 1] and in the eps-ball (checked).

Subclasses set ``name`` (and ``norm`` if not Linf, ``target_kind`` if not labels), add their keyword-only
parameters to ``__init__`` (validated there with :mod:`dard.validate`) and implement :meth:`Attack.perturb`.
:func:`preset` makes a variant of an attack with some parameters fixed (``cw`` is PGD on the margin loss); every
attack class, preset or not, registers with ``@register_attack("name")`` (:mod:`dard.registry`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from dard.attacks.steps import check_step
from dard.errors import DardError
from dard.module_utils import eval_mode, local_module
from dard.registry import param_names
from dard.registry import signature as cached_signature
from dard.validate import MAX_ITERATIONS, check_bool, check_budget, check_choice, check_int, check_seed

__all__ = ["NORMS", "Attack", "IterativeAttack", "attack_norms", "check_norm", "perturbation_norms", "preset"]

A = TypeVar("A", bound="Attack")
TARGET_KINDS = ("labels", "probs", "targets")
NO_TARGET: Any = object()  # the default of a call's target: a call without one is told the right form
#: the threat-model norms, as configs and records write them
NORMS = ("linf", "l2")


def check_norm(norm: Any, owner: str) -> str:
    """``norm`` as one of :data:`NORMS` (any case: AutoAttack writes ``Linf``), else a one-line DardError."""
    return check_choice("norm", norm.lower() if isinstance(norm, str) else norm, NORMS, owner=owner)


def attack_norms(cls: type[Attack]) -> tuple[str, ...]:
    """The norms an attack class can run in: every one of :data:`NORMS` for a class with a ``norm`` parameter,
    else its fixed :attr:`Attack.norm` (``cw``, whose preset fixes Linf)."""
    if "norm" in param_names(cls):
        return NORMS
    return (str(cls.norm).lower(),)


def perturbation_norms(x_adv: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample size of ``x_adv - x`` in the given norm ("linf" or "l2"), shape (N,)."""
    delta = (x_adv - x).flatten(1).float()
    if norm == "linf":
        return delta.abs().amax(dim=1) if delta.shape[1] else delta.new_zeros(delta.shape[0])
    if norm == "l2":
        return delta.norm(p=2, dim=1)
    raise ValueError(f"unknown norm {norm!r}")


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
            torch.default_generator.manual_seed(seed)
            for idx in devices:  # only the forked device; torch.manual_seed would touch every GPU
                torch.cuda.default_generators[idx].manual_seed(seed)
        yield


class Attack:
    """Base class: validation, eval-mode/RNG bookkeeping and output checks around :meth:`perturb`."""

    #: registry name, also the first entry of :meth:`config`
    name: ClassVar[str] = "attack"
    #: threat-model norm used by the output check ("linf" or "l2"); attacks with a norm parameter override
    norm: str = "linf"
    #: what a call's ``target`` is: "labels" (int64, (N,)), "probs" (float (N, classes), rows summing to 1) or
    #: "targets" (int64, (N,)); an instance may differ from its class (targeted PGD with ``target="given"``)
    target_kind: str = "labels"
    #: attacks whose dependencies reseed the global RNG (AutoAttack) always run under a forked RNG
    _always_fork_rng: ClassVar[bool] = False
    #: attack the model in the mode it comes in instead of eval mode; set on a training method's attack by
    #: ``dard.methods.base.make_attack`` (``attack_mode: train``), never a constructor parameter, so evaluation
    #: attacks always run in eval mode and :meth:`config` is unchanged
    keep_model_mode: bool = False
    #: why no training method may craft its batches with this attack (None: any may); ``make_attack`` refuses it
    not_for_training: ClassVar[str | None] = None

    def __new__(cls, *args: Any, **params: Any) -> Attack:
        if args:  # torchattacks style, PGD(model, eps=...): say how dard's attacks are called
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "eps=..."
            raise TypeError(
                f"{cls.__name__} takes only keyword parameters, not a model: build the attack, then call it with the "
                f"model: {cls.__name__}({shown})(model, x, y), or create_attack({cls.name!r}, {shown})(model, x, y)"
            )
        return super().__new__(cls)

    def __init__(self, *, eps: float = 8 / 255, seed: int | None = None) -> None:
        self.eps = check_budget("eps", eps, owner=self.name)
        self.seed = check_seed(seed, owner=self.name)
        self._generator: torch.Generator | None = None

    # -- public API -------------------------------------------------------------------------------------------

    def __call__(self, model: nn.Module, x: torch.Tensor, target: Any = NO_TARGET) -> torch.Tensor:
        """Adversarial examples for ``x`` against ``model`` (detached, same shape/dtype as ``x``).

        ``target``: labels, target probabilities or target classes, as :attr:`target_kind` says.
        """
        self._check_call(model, target)
        x = self._check_images(x)
        target = self._check_target(x, target)
        model = local_module(model)
        try:
            fork = self.seed is not None or self._always_fork_rng
            mode = nullcontext() if self.keep_model_mode else eval_mode(model)
            with mode, _forked_rng(x.device, self.seed) if fork else nullcontext():
                self._generator = self._make_generator(x.device)
                x_adv = self.perturb(model, x, target)
        finally:
            self._generator = None
        x_adv = x_adv.detach()
        self._check_output(x, x_adv)
        return x_adv

    def perturb(self, model: nn.Module, x: torch.Tensor, target: Any) -> torch.Tensor:
        """Attack-specific search; ``model`` is already in eval mode (unless :attr:`keep_model_mode`) and ``x``,
        ``target`` detached and validated."""
        raise NotImplementedError

    @classmethod
    def passes(cls, params: Mapping[str, Any]) -> float:
        """What one run of this attack costs per image, in passes (one forward of the network over one image; a
        gradient step is a forward and an input-gradient backward, 2 passes), for ``params``: its :meth:`config`,
        or a spec, whose missing parameters take the constructor's defaults. The cost model
        (:mod:`dard.training.cost`) relies on it, so every attack class states its own: the base raises."""
        raise NotImplementedError(f"attack class {cls.__name__} does not state its cost (Attack.passes)")

    @classmethod
    def param_names(cls) -> list[str]:
        """The keyword parameters accepted by this attack's constructor, in signature order."""
        return param_names(cls)

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

    def _check_call(self, model: Any, target: Any) -> None:
        """A TypeError naming the right call for a call in another library's style (the model left out)."""
        what = {"labels": "y", "probs": "target_probs", "targets": "target_classes"}[self.target_kind]
        right = f"call it as attack(model, x, {what})"
        if isinstance(model, torch.Tensor):
            raise TypeError(f"{self.name}: the model comes first: {right}, not attack(x, {what}) (torchattacks style)")
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name}: the model must be an nn.Module, got {type(model).__name__}; {right}")
        if target is NO_TARGET:
            raise TypeError(f"{self.name}: no {_TARGET_WORDS[self.target_kind]} given; {right}")

    def _check_images(self, x: Any) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
            raise DardError(f"{self.name}: inputs must be a float tensor in [0, 1], got {got}")
        if x.dim() < 2:
            raise DardError(f"{self.name}: inputs must be batched (N, ...), got shape {tuple(x.shape)}")
        if x.numel():
            lo, hi = torch.stack([x.amin(), x.amax()]).tolist()  # one host sync; NaN propagates into both
            if math.isnan(lo) or math.isnan(hi) or lo < 0.0 or hi > 1.0:
                raise DardError(
                    f"{self.name}: inputs must lie in [0, 1] (normalise inside the model), "
                    f"got range [{lo:.4g}, {hi:.4g}]"
                )
        return x.detach()

    def _check_target(self, x: torch.Tensor, target: Any) -> Any:
        """``target`` detached, or a one-line DardError if it is not of this attack's :attr:`target_kind`."""
        if isinstance(target, torch.Tensor) and target.device != x.device:
            raise DardError(f"{self.name}: inputs on {x.device} but {self.target_kind} on {target.device}")
        if self.target_kind == "probs":
            return _check_probs(self.name, x.shape[0], target)
        if not isinstance(target, torch.Tensor) or target.dtype != torch.long or tuple(target.shape) != (x.shape[0],):
            got = f"{target.dtype} {tuple(target.shape)}" if isinstance(target, torch.Tensor) else type(target).__name__
            words = _TARGET_WORDS[self.target_kind]
            raise DardError(f"{self.name}: {words} must be an int64 tensor of shape ({x.shape[0]},), got {got}")
        return target.detach()

    def _check_output(self, x: torch.Tensor, x_adv: torch.Tensor) -> None:
        # A broken projection is a programming error, not user input: AssertionError, not DardError.
        if x_adv.shape != x.shape or x_adv.dtype != x.dtype:
            raise AssertionError(
                f"{self.name}: result has shape {tuple(x_adv.shape)} {x_adv.dtype}, expected {tuple(x.shape)} {x.dtype}"
            )
        if not x.numel():
            return
        tol = max(1e-6, 2 * torch.finfo(x.dtype).eps)  # rounding of x +- eps in the input's precision
        size = perturbation_norms(x_adv, x, self.norm.lower()).max()
        lo, hi, size = torch.stack([x_adv.amin().double(), x_adv.amax().double(), size.double()]).tolist()  # one sync
        if lo < -tol or hi > 1 + tol:
            raise AssertionError(f"{self.name}: result leaves [0, 1]")
        if size > self.eps + tol * max(1.0, self.eps):
            raise AssertionError(f"{self.name}: {self.norm} perturbation {size:.6g} exceeds eps {self.eps:.6g}")


#: each target kind in words, for messages
_TARGET_WORDS = {"labels": "labels", "probs": "target probabilities", "targets": "target classes"}


def _check_probs(owner: str, n: int, probs: Any) -> torch.Tensor:
    """``probs`` detached if it is a float (n, classes) tensor of non-negative rows summing to 1, else a DardError."""
    if not isinstance(probs, torch.Tensor) or not probs.is_floating_point() or probs.dim() != 2 or probs.shape[0] != n:
        got = f"{probs.dtype} {tuple(probs.shape)}" if isinstance(probs, torch.Tensor) else type(probs).__name__
        raise DardError(f"{owner}: target probabilities must be a float tensor of shape ({n}, classes), got {got}")
    if probs.numel():
        tol = max(1e-3, 8 * torch.finfo(probs.dtype).eps)
        ok = torch.isfinite(probs).all() & (probs.min() >= 0) & ((probs.sum(dim=1) - 1).abs().max() <= tol)
        if not bool(ok):
            raise DardError(f"{owner}: target probabilities must be finite, non-negative, with rows summing to 1")
    return probs.detach()


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
        self.step_size = check_step(step_size, self.eps, owner=self.name)
        self.steps = check_int("steps", steps, lo=1, hi=MAX_ITERATIONS, owner=self.name)
        self.random_start = check_bool("random_start", random_start, owner=self.name)
        self.restarts = check_int("restarts", restarts, lo=1, hi=MAX_ITERATIONS, owner=self.name)
        if self.restarts > 1 and not self.random_start:
            raise DardError(f"{self.name}: restarts > 1 needs random_start=true (restarts would be identical)")

    @classmethod
    def passes(cls, params: Mapping[str, Any]) -> float:
        """``steps`` gradient steps (2 passes each) per restart, every restart counted (the worst case)."""
        return 2.0 * setting(cls, params, "steps") * setting(cls, params, "restarts")


def setting(cls: type[Attack], params: Mapping[str, Any], key: str) -> int:
    """An integer parameter of ``cls`` as ``params`` give it, else its constructor's default; 1 when the class has
    no such parameter (an FGSM's single step, an attack without restarts)."""
    if key in params:
        return int(params[key])
    param = cached_signature(cls).parameters.get(key)
    return 1 if param is None or param.default is inspect.Parameter.empty else int(param.default)


def preset(
    base: type[A], name: str, doc: str, *, fixed: Mapping[str, Any], defaults: Mapping[str, Any] | None = None
) -> type[A]:
    """A subclass of ``base`` named ``name`` (register it with ``register_attack``), with ``fixed`` parameters and
    other ``defaults``.

    Fixed parameters leave the subclass's signature: it neither accepts them nor records them in :meth:`config`,
    so the preset reads like an attack of its own (``cw`` = PGD with ``loss="margin"``, ``norm="linf"``).
    """
    signature = inspect.signature(base)
    overrides = {**fixed, **(defaults or {})}
    unknown = sorted(set(overrides) - set(signature.parameters))
    if unknown:
        raise ValueError(f"{base.__name__} has no parameter(s) {', '.join(unknown)}")
    own = signature.replace(
        parameters=[
            p.replace(default=(defaults or {}).get(p.name, p.default))
            for p in signature.parameters.values()
            if p.name not in fixed
        ]
    )

    def __init__(self: Attack, **params: Any) -> None:
        bound = own.bind(**params)  # a TypeError for an unknown parameter, as for any class
        bound.apply_defaults()
        base.__init__(self, **bound.arguments, **fixed)

    cls_name = name.upper()
    namespace = {
        "name": name,
        "__init__": __init__,
        "__signature__": own,
        "__doc__": doc,
        "__module__": base.__module__,
    }
    return type(cls_name, (base,), {**namespace, "__qualname__": cls_name})
