"""The method contract: one loss object per training method.

``method(student, teacher, x, y) -> LossOutput(loss, logits, x_adv)``. The student arrives in train mode and is
in train mode for the forward that produces the loss; any attack runs with the attacked network in eval mode
(BatchNorm frozen) and restores its mode, unless the method was built with ``attack_mode="train"`` (offered by the
methods whose official code crafts its attack with the student in train mode: SAT and ARD; see
:data:`ATTACK_MODES`). The teacher, when ``needs_teacher`` is true, must already be in eval
mode and is only ever called under ``torch.no_grad()`` (or, when a method crafts its attack against the teacher,
through the attack, which takes gradients with respect to the input only), so it never receives gradients.

A method's training attack is a registered attack (:mod:`dard.attacks`) built from the user's spec merged with the
method's default (:func:`make_attack`); :data:`PGD10_TRAINING` and :data:`KL_PGD10_TRAINING` are the shared ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dard.attacks import ATTACKS, Attack
from dard.attacks.steps import merge_step, resolve_step
from dard.errors import DardError, shown
from dard.models import check_logits
from dard.validate import check_choice

#: Madry et al.'s PGD-10 as the field trains with it: Linf eps 8/255, step eps/4 (2/255), uniform random start, CE.
#: The step follows eps (:mod:`dard.attacks.steps`); an absolute ``step_size`` in a user spec overrides the ratio.
PGD10_TRAINING: Mapping[str, Any] = MappingProxyType(
    {"name": "pgd", "eps": 8 / 255, "step_ratio": 0.25, "steps": 10, "random_start": True}
)
#: The TRADES / RSLAD / AdaAD inner maximisation: 10 sign steps of eps/4 (2/255) on the KL in the Linf ball of 8/255,
#: from ``x + 0.001 * N(0, 1)`` (the attack's defaults for norm and init).
KL_PGD10_TRAINING: Mapping[str, Any] = MappingProxyType(
    {"name": "kl_pgd", "eps": 8 / 255, "step_ratio": 0.25, "steps": 10}
)
#: How a method's training attack treats the student. ``"eval"`` (the default): eval mode, BatchNorm normalises with
#: its running statistics and does not update them. ``"train"``: the student stays in train mode, as the official
#: SAT and ARD code attacks: BatchNorm normalises each attack iterate with its own batch statistics (so one image's
#: gradient depends on the batch) and every forward of the attack updates the running statistics (10 per step for
#: PGD-10, before the loss forwards' own updates).
ATTACK_MODES = ("eval", "train")


@dataclass
class LossOutput:
    """What a method returns for one batch.

    ``loss``: the scalar to back-propagate. ``logits``: the student's logits (detached), for training accuracy, on
    the input its method's :attr:`Method.logits_input` names. ``x_adv``: the adversarial batch used (detached), or
    None.
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


# ------------------------------------------------------------------------------------------------ attacks


def resolve_attack_spec(method_name: str, spec: Any, default: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a user attack spec (``{"name": ..., **params}``) with a method's default.

    A spec without ``name``, or naming the default attack, overrides the default's parameters key by key
    (``{"steps": 5}`` keeps eps and step size). A spec naming another attack is taken as given, the attack's
    own defaults filling the rest; it must take the same kind of target as the default (labels or probabilities).
    """
    if spec is None:
        return dict(default)
    if not isinstance(spec, Mapping):
        raise DardError(
            f"method '{method_name}': attack must be a mapping like {{'name': 'pgd', ...}}, got {shown(spec)}"
        )
    spec = dict(spec)
    name = spec.get("name", default["name"])
    if not isinstance(name, str):
        raise DardError(f"method '{method_name}': attack name must be a string, got {shown(name)}")
    if name == default["name"]:
        return merge_step(default, spec)
    why = getattr(_attack_class(method_name, name), "not_for_training", None)
    if why:  # AutoAttack and its parts: built and run, they trained on clean points for hours per epoch
        kind = _target_kind(method_name, default["name"])
        takes = [n for n in ATTACKS.names() if n != default["name"] and _trains(n) and _target_kind("", n) == kind]
        raise DardError(
            f"method '{method_name}': attack '{name}' is for evaluation, not training: {why}; train with "
            f"'{default['name']}' (the default){' or ' + ', '.join(takes) if takes else ''}"
        )
    _check_kind(method_name, name, _target_kind(method_name, name), default)
    return {"name": name, **{k: v for k, v in spec.items() if k != "name"}}


# Attack.target_kind, in words
_KINDS = {"labels": "labels", "probs": "target probabilities", "targets": "target classes"}


def _check_kind(method_name: str, name: str, kind: str, default: Mapping[str, Any]) -> None:
    default_kind = _target_kind(method_name, default["name"])
    if kind != default_kind:
        raise DardError(
            f"method '{method_name}': attack '{name}' takes {_KINDS[kind]}, but this method attacks with "
            f"{_KINDS[default_kind]} (like its default '{default['name']}')"
        )


def _attack_class(method_name: str, attack_name: str) -> Any:
    try:
        return ATTACKS.get(attack_name)
    except DardError as exc:
        raise DardError(f"method '{method_name}': attack: {exc}") from None


def _trains(attack_name: str) -> bool:
    return not getattr(ATTACKS.get(attack_name), "not_for_training", None)


def _target_kind(method_name: str, attack_name: str) -> str:
    return getattr(_attack_class(method_name, attack_name), "target_kind", "labels")


def build_attack(method_name: str, spec: Mapping[str, Any]) -> Attack:
    """Create the training attack described by ``spec`` (``{"name": ..., **params}``).

    Training attacks draw from the global torch RNG (seeded by the training loop): ``seed`` is None, and another
    is refused (the same random start at every batch). Errors are re-raised as one-line DardErrors prefixed with
    the method name.
    """
    params = {k: v for k, v in spec.items() if k != "name"}
    if params.setdefault("seed", None) is not None:
        # a seeded attack reseeds a private stream at every call: every batch's random start (and a train-mode
        # attack's dropout) was the same draw, for the whole run
        raise DardError(
            f"method '{method_name}': attack: seed {shown(params['seed'])} would give every batch the same random "
            "start (a seeded attack draws the same numbers at each call); a training attack draws from the run's "
            "seeded stream: drop attack.seed (the run's seed fixes the draws)"
        )
    try:
        return ATTACKS.create(spec["name"], **params)
    except (DardError, TypeError, ValueError) as exc:
        raise DardError(f"method '{method_name}': attack: {exc}") from None


def make_attack(
    method_name: str, spec: Any, default: Mapping[str, Any], *, mode: str = "eval"
) -> tuple[Attack, dict[str, Any]]:
    """Resolve ``spec`` against ``default`` (its step as a ratio of eps, :func:`dard.attacks.steps.resolve_step`),
    build the attack, and return it with its full config.

    The returned config is the attack's own ``config()`` (every parameter, ``name`` first, the resolved absolute
    ``step_size`` included) plus ``step_ratio`` (the ratio of eps it came from; None for an absolute step) for
    attacks that take a step, so a method's ``config()`` records the attack completely and
    ``create_method(name, **params)`` rebuilds it. ``mode`` is the method's ``attack_mode``
    (:data:`ATTACK_MODES`): ``"train"`` makes the attack keep the student's train mode.
    """
    mode = check_choice("attack_mode", mode, ATTACK_MODES, owner=f"method '{method_name}'")
    resolved = resolve_attack_spec(method_name, spec, default)
    try:
        params, ratio = resolve_step(resolved)
    except DardError as exc:
        raise DardError(f"method '{method_name}': attack: {exc}") from None
    attack = build_attack(method_name, params)
    if hasattr(attack, "target_kind"):  # an instance may take another kind than its class (tpgd, target="given")
        _check_kind(method_name, resolved["name"], attack.target_kind, default)
    attack.keep_model_mode = mode == "train"
    cfg = dict(attack.config() if hasattr(attack, "config") else params)
    if "step_size" in cfg:
        cfg["step_ratio"] = ratio
    return attack, cfg


# ------------------------------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class StepPasses:
    """What one training image costs a method, in passes (one forward of a network over one image; a gradient step
    of an attack is 2, a training forward and backward through the weights 3): through the student and through the
    teacher."""

    student: float
    teacher: float = 0.0

    def macs(self, student_macs: float, teacher_macs: float) -> float:
        """Multiply-accumulates per training image, given each network's per image."""
        return self.student * student_macs + self.teacher * teacher_macs


def training_attack_passes(config: Mapping[str, Any]) -> float:
    """Passes per image of the training attack of a resolved method config (:meth:`Method.config`; 0 without one),
    as its attack class states them (:meth:`dard.attacks.Attack.passes`)."""
    spec = config.get("attack")
    if not spec:
        return 0.0
    return ATTACKS.get(str(spec["name"])).passes(spec)


# ------------------------------------------------------------------------------------------------- Method


class Method:
    """Base class of the training losses.

    Subclasses set ``name`` and ``needs_teacher`` (and ``logits_input = "x"`` when the logits they return are on the
    clean batch), take their parameters as keyword arguments in ``__init__``
    (validated there with :mod:`dard.validate`, ``owner=self.owner``), implement :meth:`compute` and
    :meth:`params`. ``attack`` is the attack object used in training (None for methods without one); tests and
    users may replace it with any callable of the same signature.
    """

    name: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = False
    # False for a method that never trains on attacked inputs (natural): its robust accuracy is about 0 at every
    # epoch, so its best checkpoint is chosen by clean accuracy (dard.config.schema, dard.training.preflight)
    robust: ClassVar[bool] = True
    # the input of LossOutput.logits, so that the training accuracy a run logs says what it measures: "x_adv" (the
    # adversarial batch) or "x" (the clean one: natural; TRADES and AdaAD, whose official code reports it there)
    logits_input: ClassVar[str] = "x_adv"
    attack: Callable[..., Tensor] | None = None

    @property
    def owner(self) -> str:
        """How error messages name this method: ``method 'name'``."""
        return f"method '{self.name}'"

    def __call__(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        if self.needs_teacher:
            check_teacher(self.name, teacher)
        return self.compute(student, teacher, x, y)

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """Every parameter, as accepted by ``create_method(self.name, **params)``."""
        return {}

    @classmethod
    def passes(cls, config: Mapping[str, Any]) -> StepPasses:
        """What one training image costs with the resolved config ``config`` (:meth:`config`, as run.json records
        it; its training attack's cost from :func:`training_attack_passes`). The cost model
        (:mod:`dard.training.cost`) relies on it, so every method states its own: the base raises."""
        raise NotImplementedError(f"method class {cls.__name__} does not state its cost (Method.passes)")

    def config(self) -> dict[str, Any]:
        """``{"name": ..., **params}`` for configs and JSON records (attack specs included, fully resolved)."""
        return {"name": self.name, **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: Tensor) -> Tensor:
    """The frozen teacher's logits (no graph), checked to be logits (:func:`dard.models.check_logits`)."""
    return check_logits(teacher(x), x.shape[0])
