"""SAT: standard adversarial training (PGD-AT).

Source: Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018; official code github.com/MadryLab/cifar10_challenge (TensorFlow; commit f15682d):
``config.json``, ``train.py``, ``pgd_attack.py``, ``model.py``, see docs/baselines.md. ``L = CE(S(x_adv), y)``
(mean over the batch) with ``x_adv`` = PGD-10 (Linf eps 8/255, step 2/255, uniform random start clipped to the
valid range) maximising the cross-entropy of the model being trained.

Deviations from the official code:
- BatchNorm during the attack: eval mode by default (running statistics, not updated), the convention of this
  project's attack contract; ``attack_mode="train"`` reproduces the official code. There one graph, built with
  ``Model(mode='train')`` (``train.py``), serves the attack and the training step, and its BatchNorm
  (``model.py``: ``is_training=True``, ``decay=.9``, ``updates_collections=None``) normalises with batch
  statistics and updates its moving averages on every run of the graph: each of the 10 gradient evaluations of
  ``pgd_attack.py`` (one per iterate, the first at the random start), then the training step on ``x_adv`` -- 11
  updates per step, the momentum-0.1 updates of PyTorch's BatchNorm. In train mode here the attack's forwards and
  the loss forward do the same, in the same order. Not reproduced: the logging runs of ``train.py`` every 100
  steps (clean and adversarial accuracy, summaries), which also update the moving averages.
- Weight decay: the official loss adds ``2e-4 * sum(w^2) / 2`` over the convolution and fully connected weights
  only; here it is the optimiser's weight decay of the run config, applied to every parameter.
- Schedule, model and budget are the run config's, not the official ones (80,000 steps of batch 128, about 205
  epochs; lr 0.1, x0.1 at steps 40,000 and 60,000; momentum 0.9; a WRN-34-10 with leaky ReLU 0.1 and per-image
  standardisation).
- Augmentation: the dataset's random crop after 4 pixels of padding (official ``cifar10_input.py``: pad to 36x36,
  2 pixels a side, random 32x32 crop and flip).
- The steps are those of the released config (10 of 2/255); the paper's CIFAR-10 table reports 7 steps. The
  attack is configurable through ``attack``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from dard.methods.base import PGD10_TRAINING, LossOutput, Method, StepPasses, make_attack, training_attack_passes
from dard.methods.losses import cross_entropy
from dard.registry import register_method


@register_method("sat")
class SAT(Method):
    """``L = CE(S(x_adv), y)``, ``x_adv = attack(S, x, y)`` (default PGD-10, random start; ``attack_mode``: the
    student's mode during the attack, ``"eval"`` or the official ``"train"``)."""

    name = "sat"
    needs_teacher = False
    attack: Callable[..., Tensor]  # set in __init__ (never None here)

    def __init__(self, *, attack: dict[str, Any] | None = None, attack_mode: str = "eval") -> None:
        self.attack, self.attack_spec = make_attack(self.name, attack, PGD10_TRAINING, mode=attack_mode)
        self.attack_mode = attack_mode

    def compute(self, student: nn.Module, teacher: nn.Module | None, x: Tensor, y: Tensor) -> LossOutput:
        x_adv = self.attack(student, x, y).detach()  # eval mode inside (attack_mode "eval"), mode restored
        logits = student(x_adv)
        return LossOutput(loss=cross_entropy(logits, y), logits=logits.detach(), x_adv=x_adv)

    @classmethod
    def passes(cls, config: Mapping[str, Any]) -> StepPasses:
        """The attack, then a training forward and backward on ``x_adv``."""
        return StepPasses(training_attack_passes(config) + 3.0)

    def params(self) -> dict[str, Any]:
        return {"attack": dict(self.attack_spec), "attack_mode": self.attack_mode}
