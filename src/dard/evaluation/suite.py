"""The robustness evaluation suite: clean accuracy and accuracy under each named attack, with sanity checks."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

import torch
from torch import nn

from dard.attacks import ATTACKS, Attack, create_attack, perturbation_norms
from dard.attacks.base import attack_norms
from dard.attacks.steps import merge_step, resolve_step
from dard.attacks.threat import apply_norm
from dard.errors import SHOWN_CHARS, DardError, one_line, shown
from dard.evaluation.labels import DEFAULT_SUITE, QUICK_SUITE
from dard.evaluation.outcomes import encode_outcomes
from dard.evaluation.record import LEGACY_LABELS, SANITY, AttackResult, Count, canonical_label
from dard.evaluation.record import EvalRecord as EvalRecord  # re-exported: other modules import it from here
from dard.evaluation.resume import EvalResume, EvaluationStopped, reusable
from dard.evaluation.sanity import model_flags, sanity_flags
from dard.models import check_logits
from dard.module_utils import eval_mode
from dard.progress import progress_bar
from dard.registry import did_you_mean


def parse_eps(text: str | float) -> float:
    """Parse an eps given as a float or a fraction such as ``8/255``; must lie in [0, 1]."""
    try:
        value = float(Fraction(str(text).strip())) if not isinstance(text, float) else text
    except (ValueError, ZeroDivisionError):
        raise DardError(f"eps {one_line(text, SHOWN_CHARS)} is not a number or fraction such as 8/255") from None
    if not 0.0 <= value <= 1.0:
        hint = f"; did you mean {text}/255?" if 1.0 < value <= 255.0 else ""  # a budget given in pixel levels
        raise DardError(f"eps {one_line(text, SHOWN_CHARS)} is outside [0, 1] (inputs live in [0, 1]{hint})")
    return value


def build_suite(
    names: Iterable[str],
    eps: float,
    seed: int | None = 0,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    norm: str = "linf",
) -> dict[str, Attack]:
    """Instantiate named attacks (keys of DEFAULT_SUITE, or any registered attack name) at one eps and ``norm``; the
    old labels ``tpgd`` and ``cw`` (:data:`~dard.evaluation.record.LEGACY_LABELS`) give ``pgd-ll`` and ``cw-linf``.
    Every threat-model attack runs in ``norm`` (an attack that cannot is a one-line DardError naming its label); the
    sanity attacks keep their own (``pgd-large``: Linf at 0.5, whatever the threat model). A label given twice
    (or under its old name beside its new one) is a one-line DardError.
    """
    attacks: dict[str, Attack] = {}
    for given in names:
        label = canonical_label(given)
        if label not in DEFAULT_SUITE and label not in ATTACKS:
            raise DardError(f"unknown attack {shown(label)}{attack_names(str(label))}")
        if label in attacks:  # `--attacks pgd20,pgd20` ran one in silence, as a config's list refuses
            alias = f" ({given} is its old name)" if given != label else ""
            raise DardError(f"attack {label} is listed twice{alias}: each attack runs once")
        spec = merge_step(DEFAULT_SUITE.get(label, {"name": label}), (overrides or {}).get(label, {}))
        try:
            attacks[label] = attack_from_spec(spec, eps, seed, None if label in SANITY else norm)
        except DardError as e:
            raise DardError(f"{label}: {e}" if not str(e).startswith(f"{label}:") else str(e)) from None
    return attacks


def quick_suite(norm: str = "linf") -> list[str]:
    """The default suite of a threat model's norm: :data:`QUICK_SUITE` less the attacks fixed to another norm."""
    return [label for label in QUICK_SUITE if label in SANITY or norm in attack_norms(_attack_class(label))]


def _attack_class(label: str) -> type[Attack]:
    return ATTACKS.get(DEFAULT_SUITE.get(label, {"name": label})["name"])


def attack_names(given: str) -> str:
    """What an attack may be called, the nearest to ``given`` first: the suite labels and the attack classes."""
    aliases = ", ".join(f"{o} = {n}" for o, n in LEGACY_LABELS.items())
    near = did_you_mean([given], [*DEFAULT_SUITE, *ATTACKS.names()])
    return f"{near}; suite labels: {', '.join(DEFAULT_SUITE)} ({aliases}); attack classes: {', '.join(ATTACKS.names())}"


def attack_from_spec(spec: Mapping[str, Any], eps: float, seed: int | None, norm: str | None = None) -> Attack:
    """Build an attack from ``{"name": ..., params}``; eps defaults to the threat model's, and the step is
    ``step_ratio`` (default 0.25) times eps unless an absolute ``step_size`` is given
    (:func:`dard.attacks.steps.resolve_step`). ``norm``: the threat model's (:func:`dard.attacks.threat.apply_norm`:
    an attack of another norm is refused); None leaves the spec's own. ``seed`` is the default of the spec's own
    (``val.attack: {name: pgd, seed: 3}``, which was passed twice: a TypeError); an evaluation attack is seeded."""
    if not spec.get("name"):
        raise DardError(f"attack spec {dict(spec)} has no 'name'")
    if spec.get("seed", seed) is None and seed is not None:
        # null draws from the global stream: a validation would consume the training's, a record not reproduce
        raise DardError(f"{spec['name']}: seed must be an integer (an evaluation attack is seeded), got null")
    if norm is not None:
        spec = apply_norm(spec, norm)
    params, _ = resolve_step({"eps": eps, "seed": seed, **spec})
    name = params.pop("name")
    attack = create_attack(name, **params)
    if attack.target_kind != "labels":
        what = "target probabilities" if attack.target_kind == "probs" else "target classes"
        raise DardError(f"attack '{name}' takes {what}, not the true labels: the suite cannot evaluate with it")
    return attack


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's classes for ``x`` and which of its images had only finite logits (bool): argmax of a NaN row
    picks a class (often 0), which must not count as an answer."""
    logits = check_logits(model(x), x.shape[0])
    return logits.argmax(dim=1), torch.isfinite(logits).all(dim=1)


def _clean_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, which: str) -> torch.Tensor:
    """Which clean images ``model`` classifies correctly; a DardError naming ``which`` images if a logit is NaN
    or infinite (before any attack: such a model's accuracy is not a measurement)."""
    pred, finite = _predict(model, x)
    if not bool(finite.all()):
        raise DardError(
            f"the model returned NaN or infinite logits for {int((~finite).sum())} of {x.shape[0]} {which}; its "
            "accuracy would count a class picked from them, so dard measures only models whose logits are finite"
        )
    return pred == y


def _clean_pass(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batches: list[tuple[int, int]], device: torch.device
) -> torch.Tensor:
    """Which images ``model`` classifies correctly clean, batch by batch (bool, CPU)."""
    clean_ok = torch.zeros(x.shape[0], dtype=torch.bool)
    for a, b in batches:
        clean_ok[a:b] = _clean_correct(model, x[a:b].to(device), y[a:b].to(device), f"clean images ({a}-{b - 1})").cpu()
    return clean_ok


def _run_attack(
    model: nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    batches: list[tuple[int, int]],
    clean_ok: torch.Tensor,
    device: torch.device,
    label: str,
    progress: bool,
) -> tuple[AttackResult, torch.Tensor]:
    """One attack over every batch: its result, and which points are robust (clean and attacked; bool, CPU)."""
    t0 = time.time()
    ok = torch.zeros(x.shape[0], dtype=torch.bool)
    max_pert = 0.0
    warnings: list[str] = []
    non_finite = 0
    stages: dict[str, int] | None = {}
    norm = str(attack.config().get("norm", "linf")).lower()
    for a, b in progress_bar(batches, desc=label, enabled=progress):
        xb, yb = x[a:b].to(device), y[a:b].to(device)
        x_adv = attack(model, xb, yb)
        pred, finite = _predict(model, x_adv)
        ok[a:b] = ((pred == yb) & finite).cpu()  # a non-finite answer is a wrong one: the attack broke the model
        non_finite += int((~finite).sum())
        max_pert = max(max_pert, perturbation_norms(x_adv, xb, norm).max().item())
        warnings.extend(getattr(attack, "last_warnings", None) or [])
        stages = _add_stages(stages, getattr(attack, "last_stage_correct", None))
    robust = ok & clean_ok
    if non_finite:
        warnings.append(
            f"the model returned NaN or infinite logits for {non_finite} attacked image(s): counted as misclassified"
        )
    result = AttackResult(
        config=attack.config(),
        correct=int(robust.sum()),
        total=x.shape[0],
        max_perturbation=max_pert,
        seconds=round(time.time() - t0, 3),
        warnings=sorted(set(warnings)),
        fooled=int((clean_ok & ~ok).sum()),
        clean_correct=int(clean_ok.sum()),
        corrected=int((ok & ~clean_ok).sum()),
        stages=stages or None,
        outcomes=encode_outcomes(robust),
    )
    return result, robust


def _add_stages(total: dict[str, int] | None, batch: dict[str, int] | None) -> dict[str, int] | None:
    """Per-stage counts summed over batches; None as soon as one batch has none (an attack without stages)."""
    if total is None or batch is None:
        return None
    return {k: total.get(k, 0) + int(v) for k, v in batch.items()}


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Mapping[str, Attack],
    *,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
    model_info: Mapping[str, Any] | None = None,
    data_info: Mapping[str, Any] | None = None,
    seed: int | None = None,
    environment: Mapping[str, Any] | None = None,
    resume: EvalResume | None = None,
    clean_outcomes: torch.Tensor | None = None,
    threat_model: tuple[str, float] | None = None,
    probe_model: bool = True,
) -> EvalRecord:
    """Clean and robust accuracy of ``model`` on ``(x, y)`` (x float in [0,1]) under every attack.

    Robust accuracy counts the points the model classifies correctly both clean and after the attack (for every
    attack, targeted ones included). ``worst_case`` counts points that survive every threat-model attack (and are
    correct clean). The model is evaluated in eval mode and its mode is restored afterwards. ``resume``: continue
    an evaluation of the same model and images that stopped part-way, and report each attack as it finishes
    (:class:`EvalResume`); every attack is seeded, so a continued evaluation equals an uninterrupted one.
    ``clean_outcomes`` (bool, one per image): which images ``model`` classified correctly clean in an earlier pass
    over the same images, taken instead of a new clean pass, so that two records of one image set agree on clean
    (a run's AutoAttack subset takes its first images' outcomes from the main pass: on a GPU the subset's last
    batch, of another shape, may run other kernels and flip an image on the boundary). ``threat_model`` (norm, eps):
    the run's, recorded where no threat-model attack states it (sanity checks alone, or no attack: it said Linf 0).
    ``probe_model``: flag a randomised model and images without an input gradient (:func:`~.sanity.model_flags`,
    on the first batch; off for training's validation, whose record no one reads).
    """
    if x.numel() == 0:
        raise DardError("no images to evaluate")
    start = time.time()
    device = torch.device(device)
    n = x.shape[0]
    batches = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    with eval_mode(model):
        clean_ok = _clean_pass(model, x, y, batches, device) if clean_outcomes is None else clean_outcomes.cpu()
        if clean_ok.shape != (n,) or clean_ok.dtype != torch.bool:
            raise ValueError(f"clean_outcomes must be {n} bools, got {clean_ok.dtype} of shape {tuple(clean_ok.shape)}")
        survive = clean_ok.clone()
        clean = Count.of(clean_ok)
        results: dict[str, AttackResult] = {}
        threat = {k: a for k, a in attacks.items() if k not in SANITY}
        plan = resume or EvalResume()
        earlier = plan.done if plan.clean == clean else {}  # other clean outcomes: another model or other images
        reused_s = 0.0
        for label, attack in attacks.items():
            result = reusable(earlier.get(label), attack, n)
            if result is not None:
                ok, reused_s = torch.from_numpy(result.count.outcome_array()), reused_s + result.seconds
            else:
                if plan.stop_before is not None and plan.stop_before(attack, n):
                    raise EvaluationStopped(label)
                result, ok = _run_attack(model, attack, x, y, batches, clean_ok, device, label, progress)
                if plan.on_attack is not None:
                    plan.on_attack(clean, {**results, label: result})
            results[label] = result
            if label in threat:
                survive &= ok
        worst = Count.of(survive) if threat else None
        record = EvalRecord(
            model=dict(model_info or {}),
            data=dict(data_info or {}),
            threat_model=_recorded_threat_model(threat, threat_model),
            clean=clean,
            attacks=results,
            worst_case=worst,
            flags=[],
            seed=seed,
            environment=dict(environment or {}),
            seconds=round(time.time() - start + reused_s, 3),
        )
        end = batches[0][1]  # the model's own flags, on its first batch: a threat-model attack's upper bounds
        probed = model_flags(model, x[:end].to(device)) if threat and probe_model else []
        record.flags = [*probed, *sanity_flags(record)]
        return record


def _recorded_threat_model(threat: Mapping[str, Attack], given: tuple[str, float] | None) -> dict[str, Any]:
    """The threat model a record states: that of its threat-model attacks (norms joined, the largest eps), else
    ``given`` (the run's), else Linf at 0 (no attack of the threat model and none given)."""
    norm, eps = given or ("linf", 0.0)
    norms = {str(a.config().get("norm", "linf")).lower() for a in threat.values()}
    return {"norm": "/".join(sorted(norms)) or norm, "eps": max((a.eps for a in threat.values()), default=eps)}
