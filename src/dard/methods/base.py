"""The method contract: one loss object per training method.

``method(student, teacher, x, y) -> LossOutput(loss, logits, x_adv)``. The student arrives in train mode and is
in train mode for the forward that produces the loss; any attack runs with the attacked network in eval mode
(BatchNorm frozen) and restores its mode. The teacher, when ``needs_teacher`` is true, must already be in eval
mode and is only ever called under ``torch.no_grad()`` (or, when a method crafts its attack against the teacher,
through the attack, which takes gradients with respect to the input only), so it never receives gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dard.attacks.base import eval_mode, local_module
from dard.errors import DardError
from dard.methods.losses import kl_sum


@dataclass
class LossOutput:
    """What a method returns for one batch.

    ``loss``: the scalar to back-propagate. ``logits``: the student's logits (detached) on the input it was
    trained on, for training accuracy. ``x_adv``: the adversarial batch used (detached), or None.
    """

    loss: Tensor
    logits: Tensor
    x_adv: Tensor | None


def check_teacher(method_name: str, teacher: nn.Module | None) -> nn.Module:
    """Raise a DardError unless ``teacher`` is a module entirely in eval mode."""
    if teacher is None:
        raise DardError(f"method '{method_name}' needs a teacher model, got None")
    if any(m.training for m in teacher.modules()):
        raise DardError(
            f"method '{method_name}': the teacher must be frozen in eval mode (call teacher.eval()); "
            "it is in train mode, which would update its BatchNorm statistics"
        )
    return teacher


# --------------------------------------------------------------------------------------------- validation


def check_unit(method_name: str, param: str, value: Any) -> float:
    """``value`` as a float in [0, 1], else a DardError naming ``param``."""
    v = _as_float(method_name, param, value)
    if not 0.0 <= v <= 1.0:
        raise DardError(f"method '{method_name}': {param} must be in [0, 1], got {value!r}")
    return v


def check_positive(method_name: str, param: str, value: Any) -> float:
    """``value`` as a finite float > 0, else a DardError naming ``param``."""
    v = _as_float(method_name, param, value)
    if not v > 0.0:
        raise DardError(f"method '{method_name}': {param} must be > 0, got {value!r}")
    return v


def check_nonnegative(method_name: str, param: str, value: Any) -> float:
    """``value`` as a finite float >= 0, else a DardError naming ``param``."""
    v = _as_float(method_name, param, value)
    if not v >= 0.0:
        raise DardError(f"method '{method_name}': {param} must be >= 0, got {value!r}")
    return v


def check_bool(method_name: str, param: str, value: Any) -> bool:
    """``value`` if it is a bool, else a DardError naming ``param``."""
    if not isinstance(value, bool):
        raise DardError(f"method '{method_name}': {param} must be true or false, got {value!r}")
    return value


def check_choice(method_name: str, param: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a DardError naming ``param`` and the choices."""
    if value not in choices:
        raise DardError(f"method '{method_name}': {param} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _as_float(method_name: str, param: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DardError(f"method '{method_name}': {param} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise DardError(f"method '{method_name}': {param} must be finite, got {value!r}")
    return v


# ------------------------------------------------------------------------------------------------ attacks


def resolve_attack_spec(method_name: str, spec: Any, default: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a user attack spec (``{"name": ..., **params}``) with a method's default.

    A spec without ``name``, or naming the default attack, overrides the default's parameters key by key
    (``{"steps": 5}`` keeps eps and step size). A spec naming another attack is taken as given, the attack's
    own defaults filling the rest.
    """
    if spec is None:
        return dict(default)
    if not isinstance(spec, Mapping):
        raise DardError(f"method '{method_name}': attack must be a mapping like {{'name': 'pgd', ...}}, got {spec!r}")
    spec = dict(spec)
    name = spec.get("name", default["name"])
    if not isinstance(name, str):
        raise DardError(f"method '{method_name}': attack name must be a string, got {name!r}")
    if name == default["name"]:
        return {**default, **spec}
    return {"name": name, **{k: v for k, v in spec.items() if k != "name"}}


def build_attack(method_name: str, spec: Mapping[str, Any]) -> Any:
    """Create the training attack described by ``spec`` via ``dard.attacks.create_attack``.

    Training attacks draw from the global torch RNG (seeded by the training loop), so ``seed`` defaults to None.
    Errors are re-raised as one-line DardErrors prefixed with the method name.
    """
    from dard.attacks import create_attack  # imported lazily: dard.attacks may import from dard.methods

    params = {k: v for k, v in spec.items() if k != "name"}
    params.setdefault("seed", None)
    try:
        return create_attack(spec["name"], **params)
    except (DardError, TypeError, ValueError) as exc:
        raise DardError(f"method '{method_name}': attack: {exc}") from None


def make_attack(method_name: str, spec: Any, default: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Resolve ``spec`` against ``default``, build the attack, and return it with its full config.

    The returned config is the attack's own ``config()`` (every parameter, ``name`` first), so a method's
    ``config()`` records the attack completely and ``create_attack(**config)`` rebuilds it.
    """
    resolved = resolve_attack_spec(method_name, spec, default)
    attack = build_attack(method_name, resolved)
    cfg = attack.config() if hasattr(attack, "config") else resolved
    return attack, dict(cfg)


class KLAscent:
    """Inner maximisation of ``KL(target || softmax(f(x')))`` over the eps-ball (TRADES, RSLAD).

    ``kl_ascent(model, x, target_probs) -> x_adv``: projected sign-gradient ascent (``dard.attacks.pgd_ascent``)
    with the model in eval mode (its mode restored afterwards). Draws its start from the global torch RNG.
    """

    name = "kl_pgd"
    DEFAULTS: ClassVar[dict[str, Any]] = {
        "eps": 8 / 255,
        "step_size": 2 / 255,
        "steps": 10,
        "norm": "linf",
        "init": "normal",
    }

    def __init__(self, *, eps: float, step_size: float, steps: int, norm: str = "linf", init: str = "normal"):
        self.eps = eps
        self.step_size = step_size
        self.steps = steps
        self.norm = norm
        self.init = init

    @classmethod
    def from_spec(cls, method_name: str, spec: Any) -> KLAscent:
        """Validate a user mapping (keys of :attr:`DEFAULTS`) and build the ascent; errors are DardErrors."""
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise DardError(
                f"method '{method_name}': attack must be a mapping of {', '.join(cls.DEFAULTS)}, got {spec!r}"
            )
        spec = dict(spec)
        if spec.get("name", cls.name) != cls.name:
            raise DardError(
                f"method '{method_name}': its attack is fixed to the KL maximisation ('{cls.name}'); "
                f"got name {spec['name']!r}"
            )
        spec.pop("name", None)
        unknown = sorted(set(spec) - set(cls.DEFAULTS))
        if unknown:
            raise DardError(
                f"method '{method_name}': unknown attack parameter '{unknown[0]}'; valid: {', '.join(cls.DEFAULTS)}"
            )
        p = {**cls.DEFAULTS, **spec}
        eps = check_nonnegative(method_name, "attack.eps", p["eps"])
        step_size = check_nonnegative(method_name, "attack.step_size", p["step_size"])
        steps = p["steps"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise DardError(f"method '{method_name}': attack.steps must be an integer >= 0, got {steps!r}")
        norm = check_choice(method_name, "attack.norm", p["norm"], ("linf", "l2"))
        init = check_choice(method_name, "attack.init", p["init"], ("zero", "uniform", "normal"))
        return cls(eps=eps, step_size=step_size, steps=steps, norm=norm, init=init)

    def __call__(self, model: nn.Module, x: Tensor, target_probs: Tensor) -> Tensor:
        from dard.attacks import pgd_ascent

        target = target_probs.detach()
        model = local_module(model)

        def loss_fn(logits: Tensor, step: int) -> Tensor:
            return kl_sum(target, logits)

        with eval_mode(model):
            x_adv = pgd_ascent(
                model,
                x.detach(),
                loss_fn,
                eps=self.eps,
                step_size=self.step_size,
                steps=self.steps,
                norm=self.norm,
                init=self.init,
            )
        return x_adv.detach()

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "eps": self.eps,
            "step_size": self.step_size,
            "steps": self.steps,
            "norm": self.norm,
            "init": self.init,
        }


# ------------------------------------------------------------------------------------------------- Method


class Method:
    """Base class of the training losses.

    Subclasses set ``name`` and ``needs_teacher``, take their parameters as keyword arguments in ``__init__``
    (validated there, raising DardError), implement :meth:`compute` and :meth:`params`. ``attack`` is the attack
    object used in training (None for methods without one); tests and users may replace it with any callable of
    the same signature.
    """

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False
    attack: Callable[..., Tensor] | None = None

    def __call__(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        if self.needs_teacher:
            check_teacher(self.name, teacher)
        return self.compute(student, teacher, x, y)

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Every parameter, as accepted by ``create_method(self.name, **params)``."""
        return {}

    def config(self) -> dict[str, Any]:
        """``{"name": ..., **params}`` for configs and JSON records (attack specs included, fully resolved)."""
        return {"name": self.name, **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: Tensor) -> Tensor:
    """The frozen teacher's logits (no graph)."""
    return teacher(x)
