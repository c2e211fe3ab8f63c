"""TRADES's and RSLAD's whole training step against transcriptions of their authors' code (docs/baselines.md).

``official_*_step`` restate, line by line and independently of dard, one step of the official code: the inner
maximisation (eval mode, ``x + 0.001 * N(0, 1)`` start, sign steps on the summed KL, the ball, then [0, 1]) and the
train-mode forwards of the loss, in their order. On a tiny float32 BatchNorm network (float32 so that the start draws
the same numbers as the official ``torch.randn(shape)``) dard's method must give the same adversarial batch, loss,
parameter gradients and BatchNorm running statistics. The budget is this project's (8/255, step 2/255: TRADES's
script passes 0.031 and 0.007 to the same function, a listed deviation).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from tests.test_baselines import SHAPE, mlp, official_rslad

from dard.methods import create_method

EPS, STEP = 8 / 255, 2 / 255
BATCH = 8
REL = 1e-5  # float32: the same operations, rounded in a different order at most


def official_trades_step(model, x_natural, y, beta, steps, one_clean_forward=False):
    """yaodongyu/TRADES ``trades.py`` ``trades_loss`` (l_inf branch; on the CPU). ``one_clean_forward``: take the
    KL's target from the CE term's forward, as dard does (its listed deviation), instead of a second forward."""
    criterion_kl = nn.KLDivLoss(reduction="sum")
    model.eval()
    batch_size = len(x_natural)
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape).detach()
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = criterion_kl(F.log_softmax(model(x_adv), dim=1), F.softmax(model(x_natural), dim=1))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - EPS), x_natural + EPS)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    logits = model(x_natural)
    loss_natural = F.cross_entropy(logits, y)
    adv_log_probs = F.log_softmax(model(x_adv), dim=1)  # the argument evaluated first
    target = F.softmax(logits if one_clean_forward else model(x_natural), dim=1)
    loss_robust = (1.0 / batch_size) * criterion_kl(adv_log_probs, target)
    return loss_natural + beta * loss_robust, x_adv


def official_rslad_step(student, teacher, x, classes, steps):
    """zibojia/RSLAD ``resnet18_rslad_cifar10.py`` (``_cifar100.py`` for 100 classes) training loop with
    ``rslad_loss.py`` ``rslad_inner_loss``; the literal ``kl_loss`` with its ``log(p + 1e-5)``."""
    with torch.no_grad():
        teacher_logits = teacher(x)
    criterion_kl = nn.KLDivLoss(reduction="none")
    student.eval()
    x_adv = x.detach() + 0.001 * torch.randn(x.shape).detach()
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss_kl = torch.sum(criterion_kl(F.log_softmax(student(x_adv), dim=1), F.softmax(teacher_logits, dim=1)))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + STEP * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x - EPS), x + EPS)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    student.train()
    x_adv = torch.clamp(x_adv, 0.0, 1.0).detach()
    adv_logits = student(x_adv)
    nat_logits = student(x)
    return official_rslad(adv_logits, nat_logits, teacher_logits, classes), x_adv


def bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


def make_case(classes: int):
    """A train-mode float32 BatchNorm student with non-trivial running statistics, an eval-mode teacher, a batch
    inside (0, 1) by more than the start's noise (the official start is not clamped, dard's is: the same here)."""
    student, teacher = mlp(classes, 1), mlp(classes, 2).eval()
    with torch.no_grad():
        for _ in range(3):
            student(torch.rand(16, *SHAPE))
    gen = torch.Generator().manual_seed(classes)
    x = 0.2 + 0.6 * torch.rand(BATCH, *SHAPE, generator=gen)
    y = torch.randint(0, classes, (BATCH,), generator=gen)
    return student.train(), teacher, x, y


def assert_same_step(ours, official, ours_net, official_net, same_statistics=True):
    (loss, x_adv), (ref, ref_adv) = ours, official
    assert ours_net.training and official_net.training
    assert torch.allclose(x_adv, ref_adv, rtol=0, atol=1e-6)
    assert abs(loss.item() - ref.item()) <= REL * abs(ref.item()), (loss.item(), ref.item())
    # all parameters as one vector: the first layer's bias has a gradient of 0 up to rounding (BatchNorm follows)
    g = torch.cat([v.flatten() for v in torch.autograd.grad(loss, list(ours_net.parameters()), retain_graph=True)])
    r = torch.cat([v.flatten() for v in torch.autograd.grad(ref, list(official_net.parameters()))])
    assert (g - r).norm() <= REL * r.norm(), ((g - r).norm().item(), r.norm().item())
    ours_bn, official_bn = bn_state(ours_net), bn_state(official_net)
    same = all(torch.allclose(v, official_bn[k], rtol=REL, atol=1e-7) for k, v in ours_bn.items())
    assert same == same_statistics, (ours_bn, official_bn)


# 10: the official count; 3 steps (6/255) stay inside the ball, so the result keeps the random start's draw
@pytest.mark.parametrize("classes,steps", [(10, 10), (100, 3)])
def test_trades_step_equals_the_official_one(classes, steps):
    student, _, x, y = make_case(classes)
    ours_net, official_net, one_forward_net = (copy.deepcopy(student) for _ in range(3))
    torch.manual_seed(3)
    out = create_method("trades", attack={"steps": steps})(ours_net, None, x, y)
    torch.manual_seed(3)
    official = official_trades_step(official_net, x, y, 6.0, steps)
    # the same attack and loss; the running statistics saw the clean batch once, not twice (the listed deviation)
    assert_same_step((out.loss, out.x_adv), official, ours_net, official_net, same_statistics=False)
    assert bn_state(official_net)["2.num_batches_tracked"] == bn_state(ours_net)["2.num_batches_tracked"] + 1
    torch.manual_seed(3)
    official = official_trades_step(one_forward_net, x, y, 6.0, steps, one_clean_forward=True)
    assert_same_step((out.loss, out.x_adv), official, ours_net, one_forward_net)


@pytest.mark.parametrize("classes,steps", [(10, 10), (100, 3), (10, 3)])
def test_rslad_step_equals_the_official_one(classes, steps):
    student, teacher, x, y = make_case(classes)
    ours_net, official_net = copy.deepcopy(student), copy.deepcopy(student)
    torch.manual_seed(3)
    out = create_method("rslad", attack={"steps": steps})(ours_net, teacher, x, y)
    torch.manual_seed(3)
    ref, ref_adv = official_rslad_step(official_net, teacher, x, classes, steps)
    # the official log(p + 1e-5) adds a constant of the teacher alone (below 1e-5 x 0.1 x classes): the same gradients
    shift = ref.item() - out.loss.item()
    assert -1e-7 <= shift < 1e-5 * 0.1 * classes
    assert_same_step((out.loss + shift, out.x_adv), (ref, ref_adv), ours_net, official_net)
    assert bn_state(ours_net)["2.num_batches_tracked"] == 3 + 2  # S(x_adv), then S(x): the attack froze them
