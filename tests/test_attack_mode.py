"""``attack_mode``: SAT and ARD attack in eval mode by default, or in train mode as their official code does.

The ``official_*_step`` functions transcribe one training step of the official code (docs/baselines.md names the
files and lines) on a tiny float64 BatchNorm network: the attack iterates run in train mode, each updating the
BatchNorm running statistics, then the training forwards. ``attack_mode="train"`` must give the same adversarial
batch, loss, parameter gradients and running statistics to 1e-6; the default must leave the running statistics
untouched by the attack (and so differ from the official step).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tests.test_baselines import SHAPE, mlp, official_ard, official_sat

from dard.attacks import create_attack
from dard.errors import DardError
from dard.methods import create_method, list_methods

REL = 1e-6
EPS, STEP, STEPS = 8 / 255, 2 / 255, 4
BATCH = 8


def official_pgd_train_mode(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The PGD of both official codes, run on a train-mode model: goldblum/AdversariallyRobustDistillation
    ``main.py`` ``AttackPGD.forward`` (MadryLab ``pgd_attack.py`` ``perturb`` is the same in numpy, its gradient run
    on the ``Model(mode='train')`` graph): start ``x + U(-eps, eps)``, summed CE, sign steps, ball, [0, 1]."""
    x_adv = x.detach() + torch.zeros_like(x).uniform_(-EPS, EPS)
    for _ in range(STEPS):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        grad = torch.autograd.grad(loss, [x_adv])[0]
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    return x_adv


def official_sat_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MadryLab/cifar10_challenge ``train.py``: the attack, then ``train_step`` on ``x_adv`` (``mean_xent``)."""
    x_adv = official_pgd_train_mode(model, x, y)
    return official_sat(model(x_adv), y), x_adv


def official_ard_step(student, teacher, x, y) -> tuple[torch.Tensor, torch.Tensor]:
    """goldblum/AdversariallyRobustDistillation ``main.py`` ``train()``: ``net(inputs, targets)`` (the attack, then
    the train-mode forward on ``x_adv``), ``teacher_net(inputs)``, ``basic_net(inputs)``; alpha 1, temperature 30."""
    x_adv = official_pgd_train_mode(student, x, y)
    outputs = student(x_adv)
    teacher_outputs = teacher(x)
    basic_outputs = student(x)
    return official_ard(outputs, basic_outputs, teacher_outputs, y, 1.0, 30.0), x_adv


def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.fixture
def case():
    """A train-mode BatchNorm student with non-trivial running statistics, an eval-mode teacher, a batch."""
    student, teacher = mlp(10, 1).double(), mlp(10, 2).double().eval()
    with torch.no_grad():
        for _ in range(3):
            student(torch.rand(16, *SHAPE, dtype=torch.float64))
    gen = torch.Generator().manual_seed(5)
    x = 0.2 + 0.6 * torch.rand(BATCH, *SHAPE, generator=gen, dtype=torch.float64)  # interior: no clamp at the start
    y = torch.randint(0, 10, (BATCH,), generator=gen)
    return student.train(), teacher, x, y


def run_ours(name, mode, student, teacher, x, y):
    method = create_method(name, attack={"steps": STEPS}, attack_mode=mode)
    torch.manual_seed(3)
    out = method(student, teacher, x, y)
    return out.loss, out.x_adv


def assert_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert (a - b).norm() <= REL * max(b.norm().item(), 1.0), ((a - b).norm().item(), b.norm().item())


@pytest.mark.parametrize("name", ["sat", "ard"])
def test_train_mode_reproduces_the_official_step(case, name):
    student, teacher, x, y = case
    ours_net, official_net, eval_net = (copy.deepcopy(student) for _ in range(3))
    loss, x_adv = run_ours(name, "train", ours_net, teacher, x, y)
    torch.manual_seed(3)
    if name == "sat":
        ref, ref_adv = official_sat_step(official_net, x, y)
    else:
        ref, ref_adv = official_ard_step(official_net, teacher, x, y)
    assert ours_net.training
    assert torch.allclose(x_adv, ref_adv, rtol=0, atol=1e-6)
    assert abs(loss.item() - ref.item()) <= REL * abs(ref.item())
    grads = torch.autograd.grad(loss, list(ours_net.parameters()))
    for g, r in zip(grads, torch.autograd.grad(ref, list(official_net.parameters()))):
        assert_close(g, r)
    ours, official = bn_state(ours_net), bn_state(official_net)
    forwards = STEPS + (1 if name == "sat" else 2)  # the attack iterates, then the loss forward(s)
    assert ours["2.num_batches_tracked"].item() == official["2.num_batches_tracked"].item() == 3 + forwards
    for key in ("2.running_mean", "2.running_var"):
        assert_close(ours[key], official[key])
    # the default (eval-mode attack) is a different step: fewer updates, other statistics and examples
    _, eval_adv = run_ours(name, "eval", eval_net, teacher, x, y)
    assert bn_state(eval_net)["2.num_batches_tracked"].item() == 3 + forwards - STEPS
    assert not torch.allclose(bn_state(eval_net)["2.running_mean"], official["2.running_mean"], rtol=0, atol=1e-6)
    assert not torch.allclose(eval_adv, ref_adv, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["sat", "ard"])
def test_the_attack_alone_updates_running_statistics_only_in_train_mode(case, name):
    student, _, x, y = case
    before = bn_state(student)
    create_method(name, attack={"steps": STEPS}).attack(student, x, y)  # default: eval mode
    assert student.training and all(torch.equal(v, before[k]) for k, v in bn_state(student).items())
    create_method(name, attack={"steps": STEPS}, attack_mode="train").attack(student, x, y)
    assert student.training and bn_state(student)["2.num_batches_tracked"].item() == 3 + STEPS
    assert not torch.equal(bn_state(student)["2.running_mean"], before["2.running_mean"])
    # an attack told to keep the mode keeps eval mode too: an eval-mode model is attacked in eval mode
    attack = create_attack("pgd", steps=STEPS, seed=0)
    attack.keep_model_mode = True
    student.eval()
    frozen = bn_state(student)
    attack(student, x, y)
    assert not student.training and all(torch.equal(v, frozen[k]) for k, v in bn_state(student).items())


def test_attack_mode_is_recorded_and_offered_only_where_the_official_code_attacks_in_train_mode():
    for name in ("sat", "ard"):
        default, train = create_method(name).config(), create_method(name, attack_mode="train").config()
        assert default["attack_mode"] == "eval" and train["attack_mode"] == "train"
        assert default["attack"] == train["attack"]  # the attack's own record is unchanged
        params = {k: v for k, v in train.items() if k != "name"}
        assert create_method(name, **params).attack.keep_model_mode
        assert not create_method(name).attack.keep_model_mode
    for name in set(list_methods()) - {"sat", "ard"}:
        with pytest.raises(DardError) as exc:
            create_method(name, attack_mode="train")
        msg = str(exc.value)
        assert msg.startswith(f"method '{name}' has no parameter 'attack_mode'") and "ard, sat" in msg, msg
        assert "\n" not in msg
    with pytest.raises(DardError, match=r"^method 'sat': attack_mode must be one of eval, train; got 'batch'$"):
        create_method("sat", attack_mode="batch")
