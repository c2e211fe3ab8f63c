"""AutoAttack (Croce & Hein 2020) through the official code, packaged on PyPI as ``pyautoattack``.

The headline robustness number: version ``"standard"`` runs APGD-CE, APGD-T, FAB-T and Square as a cascade on
the points still classified correctly and returns, per point, the first successful adversarial example (else the
clean point), exactly as the official ``run_standard_evaluation``. Version ``"custom"`` runs the cascade of a
chosen list (``attacks=["apgd-ce", "square"]``), with the official code's per-attack defaults for a custom list;
``"rand"`` is the official setting for randomised defences (APGD-CE and APGD-DLR, each averaging 20 gradients,
EOT).

Each part is also an attack of its own (:mod:`dard.attacks.autoattack_parts`: ``apgd-ce``, ``apgd-dlr``, ``apgd-t``,
``fab-t``, ``square``): the official code run as a one-stage cascade with the standard version's settings.

What the wrapper adds:

* the model is seen by AutoAttack through a thin module that returns float32 logits; the :class:`Attack`
  wrapper has already put it in eval mode and restores it afterwards;
* AutoAttack reseeds the global torch RNG (``torch.random.manual_seed``) inside every sub-attack, so it always
  runs under a forked RNG: the caller's stream is untouched;
* its info/debug log lines are silenced; records of level >= WARNING from the ``auto-attack`` logger (its
  self-checks: randomised or dynamic defence, probabilities instead of logits, zero gradients, Square beating
  the white-box attacks) and Python warnings raised during the run are collected in ``last_warnings``;
  warnings still propagate to the caller's logging configuration;
* ``last_robust_by_attack`` holds the official per-stage robust accuracies (``{"clean": ..., "apgd-ce": ...}``),
  ``last_stage_correct`` the points still correct after each stage of the cascade (``{"apgd-ce": 41, "apgd-t": 39,
  "fab-t": 39, "square": 39}``; stages the cascade skipped, because no point was left, count 0), which the suite
  records per attack, and ``last_y_adv`` the predicted labels on the returned points.
"""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from dard.attacks.base import NO_TARGET, Attack
from dard.errors import DardError
from dard.models import check_logits
from dard.registry import register_attack
from dard.validate import check_choice, check_int

__all__ = ["STAGES", "AutoAttackWrapper"]

_LOGGER_NAME = "auto-attack"
_NORMS = {"linf": "Linf", "l2": "L2"}
#: the official attacks a custom cascade may list, in the order ``version="plus"`` runs them
STAGES = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")


class _Logits(nn.Module):
    """What AutoAttack calls: the wrapped model's logits as float32 (its checks and losses assume float)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return check_logits(self.model(x), x.shape[0]).float()


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters with ``requires_grad`` off for the run: FAB calls ``backward`` on the logits, which would
    otherwise write the parameters' ``.grad`` (the contract promises input-only gradients)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


@contextmanager
def _captured_autoattack_log() -> Iterator[_Capture]:
    """Drop the logger's info/debug lines and record its warnings, restoring the logger afterwards."""
    logger = logging.getLogger(_LOGGER_NAME)
    handler = _Capture()
    old_level = logger.level
    logger.setLevel(logging.WARNING)  # also skips formatting the per-stage debug lines
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@contextmanager
def _capture_robust_by_attack() -> Iterator[dict[str, Any]]:
    """Catch the per-stage robust-accuracy dict that AutoAttack hands to its final Square self-check.

    ``run_standard_evaluation`` only logs these numbers (rounded); the dict passed to
    ``checks.check_square_sr`` has them exactly. The original check still runs. Not thread-safe (module
    attribute swap), like AutoAttack's own tracing-based checks.
    """
    box: dict[str, Any] = {}
    try:
        from pyautoattack import checks
    except ImportError:  # pragma: no cover - the import of AutoAttack itself fails first
        yield box
        return
    original = getattr(checks, "check_square_sr", None)
    if original is None:  # a future version without the hook: no per-stage numbers
        yield box
        return

    def spy(acc_dict: dict[str, float], *args: Any, **kwargs: Any) -> Any:
        box["robust"] = {str(k): float(v) for k, v in acc_dict.items()}
        return original(acc_dict, *args, **kwargs)

    checks.check_square_sr = spy
    # The dynamic-defence check counts calls in a module-global dict that is never reset, so one flagged model
    # would flag every later one; reset it so each evaluation is judged on its own model.
    counters = getattr(checks, "funcs", None)
    if isinstance(counters, dict):
        for key in counters:
            counters[key] = 0
    # ... and it ends with sys.settrace(None), which would silently switch off a debugger or coverage.
    previous_trace = sys.gettrace()
    try:
        yield box
    finally:
        checks.check_square_sr = original
        if sys.gettrace() is not previous_trace:
            sys.settrace(previous_trace)


@register_attack("autoattack")
class AutoAttackWrapper(Attack):
    """The official AutoAttack as an :class:`Attack`.

    Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
    attacks", ICML 2020. Threat model: ``norm`` (Linf or L2) ball of radius ``eps`` around ``x``, in [0, 1].

    Args:
        eps: the budget (default 8/255).
        norm: ``"Linf"`` (default) or ``"L2"``.
        version: ``"standard"`` (default; APGD-CE, APGD-T, FAB-T, Square), ``"plus"``, ``"rand"`` (randomised
            defences: APGD-CE and APGD-DLR with EOT over 20 draws) or ``"custom"`` (the ``attacks`` listed).
        attacks: with ``version="custom"`` only, the cascade to run: a list of ``apgd-ce``, ``apgd-dlr``, ``fab``,
            ``square``, ``apgd-t``, ``fab-t`` (the official code's defaults for a custom list: 5 restarts for APGD
            and FAB).
        batch_size: images per official call (default 250).
        seed: the official code's seed; ``None`` draws it from the global torch stream (reproducible under
            ``torch.manual_seed``) instead of the official wall-clock default.

    Shapes: ``x`` (N, C, H, W) in [0, 1], ``y`` int64 (N,) -> ``x_adv`` like ``x``.

    Example::

        attack = AutoAttackWrapper(eps=8 / 255, version="custom", attacks=["apgd-ce", "square"], seed=0)
        x_adv = attack(model, x, y)
    """

    name = "autoattack"
    _always_fork_rng = True
    # the official code returns the points the model misclassifies clean, runs the model in eval mode whatever a
    # method's attack_mode, and its standard cascade costs ~4,500 passes per image (so do its parts, in part)
    not_for_training: ClassVar[str | None] = (
        "the official AutoAttack code attacks only the points the model classifies correctly (the others come back "
        "clean), always in eval mode"
    )
    #: Passes per image of the standard cascade on a robust model, its scoring forward included: APGD-CE 100 steps,
    #: APGD-T 9 x 100, FAB-T 9 x 100 x ~3 and Square 5000 queries, each over the points still robust (about half):
    #: ~4,500 (docs/gpu.md).
    STANDARD_PASSES: ClassVar[float] = 4500.0

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        norm: str = "Linf",
        version: str = "standard",
        attacks: list[str] | None = None,
        batch_size: int = 250,
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, seed=seed)
        key = norm.lower() if isinstance(norm, str) else norm
        self.norm = _NORMS[check_choice("norm", key, tuple(_NORMS), owner=self.name)]
        self.version = check_choice("version", version, ("standard", "plus", "rand", "custom"), owner=self.name)
        self.attacks = _check_stages(attacks, self.version, self.name)
        self.batch_size = check_int("batch_size", batch_size, lo=1, owner=self.name)
        self.last_warnings: list[str] = []
        self.last_robust_by_attack: dict[str, float] | None = None
        self.last_stage_correct: dict[str, int] | None = None
        self.last_y_adv: torch.Tensor | None = None
        self._seed_for_call: int | None = None

    @classmethod
    def passes(cls, params: Mapping[str, Any]) -> float:
        """:data:`STANDARD_PASSES` less the scoring forward (counted by whoever scores it), whatever the version."""
        return cls.STANDARD_PASSES - 1.0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor = NO_TARGET) -> torch.Tensor:
        # Decided before the RNG fork so that seed=None follows (and advances) the caller's stream.
        self._seed_for_call = self.seed if self.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        try:
            return super().__call__(model, x, y)
        finally:
            self._seed_for_call = None

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        try:
            from pyautoattack import AutoAttack
        except ImportError as exc:  # pragma: no cover - declared dependency
            raise DardError(f"autoattack needs the 'pyautoattack' package ({exc})") from None

        self.last_warnings = []
        self.last_robust_by_attack = None
        self.last_stage_correct = None
        self.last_y_adv = None
        if self.eps == 0.0 or x.shape[0] == 0:  # nothing to search; skip the (costly) cascade
            return x.clone()

        logits_model = _Logits(model).eval()
        with torch.no_grad():
            num_classes = int(logits_model(x[:1]).shape[1])
        notes: list[str] = []
        with (
            _frozen_parameters(model),
            _captured_autoattack_log() as log,
            _capture_robust_by_attack() as box,
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            adversary = AutoAttack(
                logits_model,
                attacks=list(self.attacks) if self.attacks is not None else None,
                eps=self.eps,
                norm=self.norm,
                version=self.version,
                seed=self._seed_for_call,
                device=x.device,
            )
            self._configure(adversary)
            # The official targeted stages use 9 target classes and index past the logits with fewer than
            # 10 classes; cap them (identical to the official setting for >= 10 classes).
            cap = max(num_classes - 1, 1)
            for sub in (adversary.apgd_targeted, adversary.fab):
                if getattr(sub, "n_target_classes", 0) > cap:
                    sub.n_target_classes = cap
                    notes.append(f"autoattack: {type(sub).__name__} target classes capped at {cap}")
            x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=self.batch_size)

        for w in caught:  # hand Python warnings back to the caller's filters, after recording them
            self.last_warnings.append(str(w.message))
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.last_warnings = log.messages + self.last_warnings + notes
        self.last_robust_by_attack = box.get("robust")
        self.last_stage_correct = _stage_counts(self.last_robust_by_attack, adversary.attacks_to_run, x.shape[0])
        self.last_y_adv = y_adv.detach().clone()
        return x_adv.to(dtype=x.dtype)

    def _configure(self, adversary: Any) -> None:
        """Set the official sub-attacks' parameters before the run; the cascade versions keep the official ones."""


def _check_stages(attacks: Any, version: str, owner: str) -> list[str] | None:
    """The custom cascade as a list of official stage names (None for the fixed versions), or a DardError."""
    if version != "custom":
        if attacks is not None:
            raise DardError(f"{owner}: attacks is only for version 'custom' (version '{version}' fixes its own)")
        return None
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]  # "apgd-ce,square" from the command line
    if not isinstance(attacks, (list, tuple)) or not attacks:
        raise DardError(f"{owner}: version 'custom' needs attacks, a list of {', '.join(STAGES)}")
    for stage in attacks:
        check_choice("attacks", stage, STAGES, owner=owner)
    if len(set(attacks)) != len(attacks):
        raise DardError(f"{owner}: attacks lists a stage twice: {', '.join(attacks)}")
    return list(attacks)


def _stage_counts(robust: dict[str, float] | None, stages: list[str], n: int) -> dict[str, int] | None:
    """Points still correct after each stage, from AutoAttack's robust fractions (each an exact count / n); a stage
    the cascade skipped because no point was left counts 0. None when the fractions were not caught."""
    if robust is None:
        return None
    return {stage: round(robust[stage] * n) if stage in robust else 0 for stage in stages}
