"""Sanity flags: what a reviewer checks in a robustness record for signs of gradient masking or a broken attack
(docs/evaluation.md, "Sanity checks")."""

from __future__ import annotations

import torch
from torch import nn

from dard.evaluation.record import SANITY, AttackResult, EvalRecord
from dard.models import check_logits

# Attacks that may legitimately move a misclassified point to its true class: targeted PGD (pushing towards its
# target can land there) and the KL attack (it moves away from the model's own prediction, not from the label).
MAY_REPAIR = {"pgd-ll", "tpgd-kl"}
#: how many images more than expected an attack may leave correct before it is flagged (docs/evaluation.md)
TOLERANCE_POINTS = 1
#: accuracy above which a sanity attack is flagged (and above one test point)
SANITY_MAX_ACCURACY = 0.01


def sanity_flags(record: EvalRecord) -> list[str]:
    """Warnings a reviewer would raise: signs of gradient masking or of a broken attack.

    Every comparison is between counts of the same images, with a tolerance of exactly one image
    (:data:`TOLERANCE_POINTS`): 90/360 against 89/360 is not flagged, 91/360 is.
    """
    flags: list[str] = []
    clean = record.clean
    for label, res in record.attacks.items():
        eps = float(res.config.get("eps", 0.0))
        # Robust accuracy cannot exceed clean accuracy; what an untargeted attack must not do is leave more images
        # correct than the clean model: counted before the clean-correct requirement (robust plus corrected).
        raw = res.correct + (res.corrected or 0)
        if raw > clean.correct + TOLERANCE_POINTS and not _may_repair(label, res):
            flags.append(
                f"{label}: the attack leaves {_share(raw, res.total)}, of points correct, more than clean accuracy "
                f"{_share(clean.correct, clean.total)}, by more than one image (points misclassified clean became "
                "correct): a broken attack"
            )
        if res.max_perturbation > eps + 1e-5:
            flags.append(f"{label}: perturbation {res.max_perturbation:.6f} exceeds eps {eps:.6f}")
        for w in res.warnings:
            flags.append(f"{label}: {w}")
    for label in SANITY & set(record.attacks):
        res = record.attacks[label]
        if res.correct > max(SANITY_MAX_ACCURACY * res.total, TOLERANCE_POINTS):
            eps = float(res.config.get("eps", 0.0))
            flags.append(
                f"{label}: {_share(res.correct, res.total)}, of points survive PGD at eps {eps:g} (should be about 0): "
                "possible gradient masking or a broken attack"
            )
    fgsm = record.attacks.get("fgsm")
    if fgsm is not None:
        for label in ("pgd20", "pgd", "bim"):
            other = record.attacks.get(label)
            if other is not None and other.correct > fgsm.correct + TOLERANCE_POINTS:
                flags.append(
                    f"{label} ({_share(other.correct, other.total)}) is weaker than FGSM "
                    f"({_share(fgsm.correct, fgsm.total)}) by more than one image: possible gradient masking"
                )
    return flags


def model_flags(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Warnings about the model itself, from a probe of the images ``x`` (the first batch of an evaluation, on the
    model's device; ``model`` in eval mode): a randomised model, whose two passes over the same images differ, and
    images whose logits have no gradient with respect to the input (a detached output, rounding). Both leave
    gradient attacks measuring an upper bound, not a robust accuracy, with no other sign in the record: an attack
    that finds no gradient leaves the image where it was. The caller's random stream is left as it was."""
    cuda = x.device.type == "cuda"
    devices = [x.device.index if x.device.index is not None else torch.cuda.current_device()] if cuda else []
    flags: list[str] = []
    n = x.shape[0]
    with torch.random.fork_rng(devices=devices):
        with torch.no_grad():
            first, again = (check_logits(model(x), n).float() for _ in range(2))
        scale = 1.0 + float(first.abs().max())  # kernels of one batch differ by far less than a random draw
        if not torch.allclose(first, again, rtol=1e-3, atol=1e-3 * scale, equal_nan=True):
            flags.append(
                "the model is randomised (two passes over the same images gave different logits): gradient attacks "
                "without an expectation over its randomness overestimate its robustness; its accuracies are one draw"
            )
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = check_logits(model(xg), n).float()
            # a random mix of every logit: zero only where no logit depends on the image
            w = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0)).to(logits.device)
            grad = torch.autograd.grad((logits * w).sum(), xg, allow_unused=True)[0] if logits.requires_grad else None
    none = n if grad is None else int((grad.flatten(1).abs().amax(dim=1) == 0).sum())
    if none:
        flags.append(
            f"the model's logits have no gradient with respect to the input for {none} of the first {n} images "
            "(a detached output, rounding or another step without a gradient): gradient attacks cannot move them, "
            "so their robust accuracies are upper bounds (gradient masking); a gradient-free attack (square) "
            "measures them"
        )
    return flags


def _may_repair(label: str, result: AttackResult) -> bool:
    """Whether the attack may legitimately move a misclassified image to its true class (:data:`MAY_REPAIR`)."""
    return label in MAY_REPAIR or result.config.get("name") in ("tpgd", "trades_pgd")


def _share(correct: int, total: int) -> str:
    """``correct`` of ``total`` as a percentage with the count: ``25.00%, 90/360``."""
    return f"{correct / max(total, 1):.2%}, {correct}/{total}"
