"""The suite's labels and their attack settings, as plain data: what the `dard` parser's help and `dard list` name
without importing PyTorch (the suite itself, :mod:`dard.evaluation.suite`, builds the attacks from them)."""

from __future__ import annotations

from typing import Any

__all__ = ["AUTOATTACK_SUBSET_SUITE", "DEFAULT_SUITE", "QUICK_SUITE"]

# Named evaluation attacks with the parameters the field reports (docs/evaluation.md, "The suite").
# eps comes from the threat model at build time; `step_ratio` sets step_size = step_ratio * eps, which is the
# usual 2/255 at eps = 8/255 and keeps iterative attacks able to reach the boundary at any other eps.
DEFAULT_SUITE: dict[str, dict[str, Any]] = {
    "fgsm": {"name": "fgsm"},
    "pgd20": {"name": "pgd", "steps": 20, "step_ratio": 0.25, "random_start": True, "restarts": 1},
    # targeted PGD towards the least-likely class of the clean prediction (called T-PGD in some papers)
    "pgd-ll": {"name": "tpgd", "steps": 10, "step_ratio": 0.25, "random_start": True, "target": "least_likely"},
    # torchattacks' TPGD: TRADES' KL-PGD against the model's own clean prediction, untargeted
    "tpgd-kl": {"name": "trades_pgd", "steps": 10, "step_ratio": 0.25},
    "bim": {"name": "bim", "steps": 10, "step_ratio": 0.25},
    # Linf PGD on the Carlini-Wagner margin (CW-inf), not the CW-L2 optimisation attack
    "cw-linf": {"name": "cw", "steps": 20, "step_ratio": 0.25},
    "dpgd": {"name": "dpgd", "steps": 20, "step_ratio": 0.25},
    "autoattack": {"name": "autoattack", "version": "standard"},
    # A sanity check outside the threat model: at eps = 0.5 (fixed, whatever the threat model) PGD must take
    # accuracy to about 0; points that survive point to gradient masking or a broken attack (docs/evaluation.md).
    "pgd-large": {"name": "pgd", "eps": 0.5, "steps": 20, "step_ratio": 0.1, "random_start": True},
}
#: The suite of a run's AutoAttack subset (``eval.autoattack_subset``): PGD-20 beside AutoAttack on the same images.
AUTOATTACK_SUBSET_SUITE = ["pgd20", "autoattack"]
# The default suite of `dard eval` and of a run's final test evaluation (AutoAttack is opt-in: it is slow).
QUICK_SUITE = ["fgsm", "pgd20", "pgd-ll", "bim", "cw-linf", "dpgd", "pgd-large"]
