"""AutoAttack's parts as attacks of their own: ``apgd-ce``, ``apgd-dlr``, ``apgd-t``, ``fab-t``, ``square``.

Each is the official code (``pyautoattack``) run by :class:`~dard.attacks.autoattack.AutoAttackWrapper` as a
one-stage custom cascade, so it shares that wrapper's contract work: the official clean check (only points
classified correctly are attacked; a point whose attack fails comes back clean), a forked RNG, the official seed
(``seed=None``: drawn from the global torch stream), silenced logs with the self-checks' warnings kept in
``last_warnings``, and target classes capped below the class count. The defaults are the settings of AutoAttack's
``standard`` version, so ``apgd-ce`` here is the first stage of ``autoattack`` there, point for point.

Papers: APGD (APGD-CE, APGD-DLR, APGD-T): Croce & Hein, ICML 2020; FAB: Croce & Hein, ICML 2020 ("Minimally
distorted adversarial examples with a fast adaptive boundary attack"); Square: Andriushchenko et al., ECCV 2020.
Threat model for all: the ``norm`` (Linf or L2) ball of radius ``eps`` around ``x``, intersected with [0, 1].
Shapes: ``x`` (N, C, H, W) float in [0, 1], ``y`` int64 (N,) -> ``x_adv`` of ``x``'s shape and dtype.

Example::

    x_adv = create_attack("apgd-ce", eps=8 / 255, steps=100, restarts=1, seed=0)(model, x, y)
    x_adv = create_attack("square", eps=0.5, norm="L2", queries=1000, seed=0)(model, x, y)
    # a randomised defence: average each gradient over 20 draws (EOT), as AutoAttack's "rand" version does
    x_adv = create_attack("apgd-ce", eps=8 / 255, eot_iter=20, seed=0)(model, x, y)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from dard.attacks.autoattack import AutoAttackWrapper
from dard.attacks.base import setting
from dard.registry import register_attack
from dard.validate import MAX_ITERATIONS, check_float, check_int

__all__ = ["APGDCE", "APGDDLR", "APGDT", "FABT", "PARTS", "Square"]


class _Part(AutoAttackWrapper):
    """One official AutoAttack stage (``stage``) as an attack; subclasses fix their parameters."""

    stage: ClassVar[str] = ""

    def __init__(self, *, eps: float, norm: str, batch_size: int, seed: int | None) -> None:
        super().__init__(eps=eps, norm=norm, version="custom", attacks=[self.stage], batch_size=batch_size, seed=seed)


class _APGD(_Part):
    """APGD on one loss: ``steps`` iterations with the official step-size schedule, ``restarts`` random starts."""

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        norm: str = "Linf",
        steps: int = 100,
        restarts: int = 1,
        eot_iter: int = 1,
        batch_size: int = 250,
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, batch_size=batch_size, seed=seed)
        self.steps = check_int("steps", steps, lo=1, hi=MAX_ITERATIONS, owner=self.name)
        self.restarts = check_int("restarts", restarts, lo=1, hi=MAX_ITERATIONS, owner=self.name)
        self.eot_iter = check_int("eot_iter", eot_iter, lo=1, hi=MAX_ITERATIONS, owner=self.name)

    @classmethod
    def passes(cls, params: Mapping[str, Any]) -> float:
        """Every point attacked: ``steps`` gradient steps of 2 passes per restart and EOT draw."""
        return 2.0 * setting(cls, params, "steps") * setting(cls, params, "restarts") * setting(cls, params, "eot_iter")

    def _configure(self, adversary: Any) -> None:
        from pyautoattack.autopgd_base import APGDAttack

        adversary.apgd = self._build(APGDAttack, adversary)

    def _build(self, cls: type, adversary: Any, **extra: Any) -> Any:
        # Rebuilt rather than edited: APGD derives its checkpoint schedule from n_iter in its constructor.
        return cls(
            adversary.model,
            n_iter=self.steps,
            norm=self.norm,
            n_restarts=self.restarts,
            eps=self.eps,
            seed=adversary.seed,
            eot_iter=self.eot_iter,
            rho=0.75,
            device=adversary.device,
            logger=adversary.logger,
            **extra,
        )


@register_attack("apgd-ce")
class APGDCE(_APGD):
    """APGD on the cross-entropy loss (AutoAttack's first stage).

    Args: ``eps`` (8/255), ``norm`` (``"Linf"`` or ``"L2"``), ``steps`` (100), ``restarts`` (1), ``eot_iter`` (1;
    20 for randomised models), ``batch_size`` (250), ``seed`` (None: from the global stream).
    """

    name = "apgd-ce"
    stage = "apgd-ce"


@register_attack("apgd-dlr")
class APGDDLR(_APGD):
    """APGD on the DLR loss (untargeted; a stage of AutoAttack's ``plus`` and ``rand`` versions).

    Args: as :class:`APGDCE`.
    """

    name = "apgd-dlr"
    stage = "apgd-dlr"


@register_attack("apgd-t")
class APGDT(_APGD):
    """Targeted APGD on the DLR loss, one run per target class (the ``target_classes`` highest-scoring wrong ones).

    Args: ``eps`` (8/255), ``norm`` (``"Linf"``/``"L2"``), ``steps`` (100), ``restarts`` (1, per target class),
    ``target_classes`` (9; capped at the class count - 1), ``eot_iter`` (1), ``batch_size`` (250), ``seed``.
    """

    name = "apgd-t"
    stage = "apgd-t"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        norm: str = "Linf",
        steps: int = 100,
        restarts: int = 1,
        target_classes: int = 9,
        eot_iter: int = 1,
        batch_size: int = 250,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            eps=eps, norm=norm, steps=steps, restarts=restarts, eot_iter=eot_iter, batch_size=batch_size, seed=seed
        )
        self.target_classes = check_int("target_classes", target_classes, lo=1, owner=self.name)

    @classmethod
    def passes(cls, params: Mapping[str, Any]) -> float:
        """APGD's cost once per target class."""
        return super().passes(params) * setting(cls, params, "target_classes")

    def _configure(self, adversary: Any) -> None:
        from pyautoattack.autopgd_base import APGDAttack_targeted

        adversary.apgd_targeted = self._build(APGDAttack_targeted, adversary, n_target_classes=self.target_classes)


@register_attack("fab-t")
class FABT(_Part):
    """Targeted FAB: the minimal-distortion boundary attack towards each of ``target_classes`` classes.

    Args: ``eps`` (8/255), ``norm`` (``"Linf"``/``"L2"``), ``steps`` (100), ``target_classes`` (9; capped at the
    class count - 1), ``batch_size`` (250), ``seed``. The official cascade always runs FAB-T with one restart per
    target class, so there is no ``restarts``.
    """

    name = "fab-t"
    stage = "fab-t"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        norm: str = "Linf",
        steps: int = 100,
        target_classes: int = 9,
        batch_size: int = 250,
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, batch_size=batch_size, seed=seed)
        self.steps = check_int("steps", steps, lo=1, hi=MAX_ITERATIONS, owner=self.name)
        self.target_classes = check_int("target_classes", target_classes, lo=1, owner=self.name)

    @classmethod
    def passes(cls, params: Mapping[str, Any]) -> float:
        """``steps`` iterations of about 3 passes (a forward and the gradients it linearises) per target class."""
        return 3.0 * setting(cls, params, "steps") * setting(cls, params, "target_classes")

    def _configure(self, adversary: Any) -> None:
        adversary.fab.n_iter = self.steps  # FAB reads n_iter at each run
        adversary.fab.n_target_classes = self.target_classes


@register_attack("square")
class Square(_Part):
    """Square Attack: score-based random search (no gradients), so it also sees through gradient masking.

    Args: ``eps`` (8/255), ``norm`` (``"Linf"``/``"L2"``), ``queries`` (5000 model calls per point),
    ``p_init`` (0.8: the initial fraction of pixels a square changes), ``restarts`` (1), ``batch_size`` (250),
    ``seed``.
    """

    name = "square"
    stage = "square"

    def __init__(
        self,
        *,
        eps: float = 8 / 255,
        norm: str = "Linf",
        queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        batch_size: int = 250,
        seed: int | None = None,
    ) -> None:
        super().__init__(eps=eps, norm=norm, batch_size=batch_size, seed=seed)
        self.queries = check_int("queries", queries, lo=1, hi=MAX_ITERATIONS, owner=self.name)
        self.p_init = check_float("p_init", p_init, lo=0.0, hi=1.0, lo_open=True, owner=self.name)
        self.restarts = check_int("restarts", restarts, lo=1, hi=MAX_ITERATIONS, owner=self.name)

    @classmethod
    def passes(cls, params: Mapping[str, Any]) -> float:
        """One forward per query (no gradients), ``queries`` per restart."""
        return float(setting(cls, params, "queries") * setting(cls, params, "restarts"))

    def _configure(self, adversary: Any) -> None:
        adversary.square.n_queries = self.queries
        adversary.square.p_init = self.p_init
        adversary.square.n_restarts = self.restarts


#: every part (each registered under its ``name``)
PARTS: tuple[type[_Part], ...] = (APGDCE, APGDDLR, APGDT, FABT, Square)
