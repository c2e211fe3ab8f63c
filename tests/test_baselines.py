"""Each baseline's loss against a transcription of its authors' official code (docs/baselines.md).

The ``official_*`` functions below restate, independently of ``dard.methods.losses``, what each official script
computes (file named in each docstring). On fixed float64 tensors the project's loss value and its gradients with
respect to the student's logits (a table model whose parameters are its logits) and parameters (a linear model)
must equal the official ones to 1e-6 relative, for 10 and 100 classes: first with the training attack replaced by
a fixed ``x_adv``, then with the real attack at eps 0 (``x_adv = x``).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dard.errors import DardError
from dard.methods import create_method

REL = 1e-6
N = 6  # batch size
SHAPE = (3, 2, 2)  # input images, 12 features

# --------------------------------------------------------------------------------- official transcriptions


def kldiv_elementwise(log_q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``nn.KLDivLoss(reduction='none')``: ``p * (log p - log q)`` per sample and class."""
    return p * (p.log() - log_q)


def kldiv_default(log_q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``nn.KLDivLoss()`` as the official scripts ran it (PyTorch 1.x default ``'mean'``): mean over batch x classes."""
    return kldiv_elementwise(log_q, p).mean()


def official_ard(s_adv, s_nat, t_nat, y, alpha, temp):
    """goldblum/AdversariallyRobustDistillation main.py, train(): ``outputs`` are S(x_adv), ``basic_outputs`` S(x)."""
    kl = kldiv_default(F.log_softmax(s_adv / temp, dim=1), F.softmax(t_nat / temp, dim=1))
    return alpha * temp * temp * kl + (1.0 - alpha) * F.cross_entropy(s_nat, y)


def rslad_kl_loss(a, b, smooth):
    """zibojia/RSLAD resnet18_rslad_cifar10.py / _cifar100.py ``kl_loss(a, b)`` (``smooth`` = 1e-5 there)."""
    return -a * b + torch.log(b + smooth) * b


def official_rslad(s_adv, s_nat, t_nat, classes, smooth=1e-5):
    """zibojia/RSLAD: the CIFAR-10 script's torch.mean; the CIFAR-100 script's 10 x mean of log(softmax)."""
    p = F.softmax(t_nat, dim=1)
    if classes == 10:
        k1 = torch.mean(rslad_kl_loss(F.log_softmax(s_adv, dim=1), p, smooth))
        k2 = torch.mean(rslad_kl_loss(F.log_softmax(s_nat, dim=1), p, smooth))
    else:
        k1 = 10 * torch.mean(rslad_kl_loss(torch.log(F.softmax(s_adv, dim=1)), p, smooth))
        k2 = 10 * torch.mean(rslad_kl_loss(torch.log(F.softmax(s_nat, dim=1)), p, smooth))
    return 5 / 6.0 * k1 + 1 / 6.0 * k2


def official_trades(s_nat, s_adv, y, beta):
    """yaodongyu/TRADES trades.py, trades_loss(): CE on clean + beta / N * summed KL(f(x) || f(x_adv))."""
    loss_robust = (1.0 / len(s_nat)) * nn.KLDivLoss(reduction="sum")(
        F.log_softmax(s_adv, dim=1), F.softmax(s_nat, dim=1)
    )
    return F.cross_entropy(s_nat, y) + beta * loss_robust


def official_sat(s_adv, y):
    """MadryLab/cifar10_challenge model.py ``mean_xent``: mean softmax cross-entropy on the PGD batch."""
    return -F.log_softmax(s_adv, dim=1)[torch.arange(len(y)), y].mean()


def official_adaad(s_adv, s_nat, t_adv, t_nat, alpha, classes):
    """boyellow/AdaAD main.py, method AdaAD: nn.KLDivLoss() on CIFAR-10, summed / batch on CIFAR-100."""
    if classes == 10:
        kl1 = kldiv_default(F.log_softmax(s_adv, dim=1), F.softmax(t_adv, dim=1))
        kl2 = kldiv_default(F.log_softmax(s_nat, dim=1), F.softmax(t_nat, dim=1))
    else:
        kl1 = (1 / len(s_adv)) * torch.sum(kldiv_elementwise(F.log_softmax(s_adv, dim=1), F.softmax(t_adv, dim=1)))
        kl2 = (1 / len(s_adv)) * torch.sum(kldiv_elementwise(F.log_softmax(s_nat, dim=1), F.softmax(t_nat, dim=1)))
    return alpha * kl1 + (1 - alpha) * kl2


# ------------------------------------------------------------------------------------------------ models


class TableNet(nn.Module):
    """Returns a parameter table of logits per known input batch: its gradients are those w.r.t. the logits."""

    def __init__(self, inputs: list[torch.Tensor], classes: int, gen: torch.Generator) -> None:
        super().__init__()
        self.inputs = inputs
        self.tables = nn.ParameterList(
            [nn.Parameter(3.0 * torch.randn(N, classes, generator=gen, dtype=torch.float64)) for _ in inputs]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for known, table in zip(self.inputs, self.tables):
            if torch.equal(x, known):
                return table
        raise AssertionError("TableNet: unknown input batch")


def linear_net(classes: int, gen: torch.Generator) -> nn.Module:
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, classes, dtype=torch.float64))
    with torch.no_grad():
        net[1].weight.copy_(2.0 * torch.randn(classes, 12, generator=gen, dtype=torch.float64))
        net[1].bias.copy_(torch.randn(classes, generator=gen, dtype=torch.float64))
    return net


def make_case(classes: int, kind: str, eps0: bool = False):
    """``(student, teacher, x, x_adv, y)``; ``x_adv = x`` when ``eps0``."""
    gen = torch.Generator().manual_seed(classes + (7 if kind == "table" else 0))
    x = torch.rand(N, *SHAPE, generator=gen, dtype=torch.float64)
    x_adv = x if eps0 else (x + 0.03 * torch.randn(x.shape, generator=gen, dtype=torch.float64).sign()).clamp(0, 1)
    y = torch.randint(0, classes, (N,), generator=gen)
    if kind == "table":
        student, teacher = TableNet([x, x_adv], classes, gen), TableNet([x, x_adv], classes, gen)
    else:
        student, teacher = linear_net(classes, gen), linear_net(classes, gen)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return student.train(), teacher.eval(), x, x_adv, y


# ---------------------------------------------------------------------------------------------- checking


def assert_same(loss: torch.Tensor, ref: torch.Tensor, student: nn.Module) -> None:
    """Equal values and equal gradients w.r.t. every student parameter, to ``REL`` relative."""
    assert loss.dtype == torch.float64
    assert abs(loss.item() - ref.item()) <= REL * abs(ref.item()), (loss.item(), ref.item())
    params = list(student.parameters())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    refs = torch.autograd.grad(ref, params, allow_unused=True)
    for g, r, p in zip(grads, refs, params):
        g = torch.zeros_like(p) if g is None else g  # a weight-0 term run without a graph
        r = torch.zeros_like(p) if r is None else r
        assert (g - r).norm() <= REL * max(r.norm().item(), 1e-12), ((g - r).norm().item(), r.norm().item())


def project_loss(method, student, teacher, x, x_adv, y, stub: bool = True) -> torch.Tensor:
    if stub:
        method.attack = lambda *args: x_adv.clone()  # the attack contract: (model, x, labels | probs | network)
    return method(student, teacher, x, y).loss


KINDS = ["table", "linear"]
CLASSES = [10, 100]


def test_kldivloss_default_is_the_elementwise_mean():
    # the transcriptions' reading of nn.KLDivLoss(): the elementwise KL averaged over batch x classes
    gen = torch.Generator().manual_seed(0)
    log_q = torch.randn(4, 10, generator=gen, dtype=torch.float64).log_softmax(1)
    p = torch.randn(4, 10, generator=gen, dtype=torch.float64).softmax(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch warns that 'mean' divides by batch x classes
        torch_default = nn.KLDivLoss()(log_q, p)
    assert torch.allclose(torch_default, kldiv_default(log_q, p), rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("classes", CLASSES)
@pytest.mark.parametrize("alpha,tau", [(1.0, 30.0), (0.5, 4.0)])
def test_ard_equals_official(classes, kind, alpha, tau):
    student, teacher, x, x_adv, y = make_case(classes, kind)
    loss = project_loss(create_method("ard", alpha=alpha, tau=tau), student, teacher, x, x_adv, y)
    assert_same(loss, official_ard(student(x_adv), student(x), teacher(x), y, alpha, tau), student)


@pytest.mark.parametrize("classes", CLASSES)
def test_ard_batchmean_is_classes_times_official(classes):
    student, teacher, x, x_adv, y = make_case(classes, "linear")
    loss = project_loss(create_method("ard", kl_reduction="batchmean"), student, teacher, x, x_adv, y)
    assert_same(loss, classes * official_ard(student(x_adv), student(x), teacher(x), y, 1.0, 30.0), student)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("classes", CLASSES)
def test_rslad_equals_official(classes, kind):
    student, teacher, x, x_adv, y = make_case(classes, kind)
    loss = project_loss(create_method("rslad"), student, teacher, x, x_adv, y)
    s_adv, s_nat, t_nat = student(x_adv), student(x), teacher(x)
    # the official log(p + 1e-5) shifts the value by a teacher-only constant and leaves the gradients alone
    assert_same(loss, official_rslad(s_adv, s_nat, t_nat, classes, smooth=0.0), student)
    literal = official_rslad(student(x_adv), student(x), t_nat, classes)
    assert 0 < literal.item() - loss.item() < 1e-5 * classes * 0.1
    loss = project_loss(create_method("rslad"), student, teacher, x, x_adv, y)
    assert_same(loss - loss.detach() + literal.detach(), literal, student)  # gradients vs the literal code


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("classes", CLASSES)
@pytest.mark.parametrize("beta", [6.0, 1.5])
def test_trades_equals_official(classes, kind, beta):
    student, teacher, x, x_adv, y = make_case(classes, kind)
    loss = project_loss(create_method("trades", beta=beta), student, None, x, x_adv, y)
    assert_same(loss, official_trades(student(x), student(x_adv), y, beta), student)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("classes", CLASSES)
def test_sat_equals_official(classes, kind):
    student, _, x, x_adv, y = make_case(classes, kind)
    loss = project_loss(create_method("sat"), student, None, x, x_adv, y)
    assert_same(loss, official_sat(student(x_adv), y), student)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("classes", CLASSES)
@pytest.mark.parametrize("alpha", [1.0, 0.7])
def test_adaad_equals_official(classes, kind, alpha):
    student, teacher, x, x_adv, y = make_case(classes, kind)
    reduction = "mean" if classes == 10 else "batchmean"  # the official branches for CIFAR-10 and CIFAR-100
    method = create_method("adaad", adv_weight=alpha, kl_reduction=reduction)
    loss = project_loss(method, student, teacher, x, x_adv, y)
    ref = official_adaad(student(x_adv), student(x), teacher(x_adv), teacher(x), alpha, classes)
    assert_same(loss, ref, student)


# ------------------------------------------------------------------------ the real attack at eps 0: x_adv = x


@pytest.mark.parametrize("classes", CLASSES)
def test_full_methods_at_eps0_equal_official(classes):
    student, teacher, x, _, y = make_case(classes, "linear", eps0=True)
    cases = [  # (method, params, teacher, official loss from S(x), T(x))
        ("ard", {}, teacher, lambda s, t: official_ard(s, s, t, y, 1.0, 30.0)),
        ("ard", {"alpha": 0.5, "tau": 2.0}, teacher, lambda s, t: official_ard(s, s, t, y, 0.5, 2.0)),
        ("rslad", {}, teacher, lambda s, t: official_rslad(s, s, t, classes, smooth=0.0)),
        ("adaad", {"adv_weight": 0.7}, teacher, lambda s, t: official_adaad(s, s, t, t, 0.7, 10)),
        ("trades", {}, None, lambda s, t: official_trades(s, s, y, 6.0)),
        ("sat", {}, None, lambda s, t: official_sat(s, y)),
    ]
    for name, params, tch, official in cases:
        method = create_method(name, **params, attack={"eps": 0.0})
        loss = project_loss(method, student, tch, x, x, y, stub=False)
        assert_same(loss, official(student(x), teacher(x)), student)


# --------------------------------------------------------------------------- AdaAD's inner maximisation


def official_adaad_inner(model, teacher_model, x_natural, step_size, steps, epsilon, detach_teacher=False):
    """boyellow/AdaAD AT_helper.py adaad_inner_loss (BN_eval, random_init; on the CPU)."""
    model.eval()
    teacher_model.eval()
    x_adv = x_natural.detach() + 0.001 * torch.randn(x_natural.shape).detach()
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            t = teacher_model(x_adv)
            t = t.detach() if detach_teacher else t
            loss_kl = torch.sum(nn.KLDivLoss(reduction="none")(F.log_softmax(model(x_adv), dim=1), F.softmax(t, dim=1)))
        grad = torch.autograd.grad(loss_kl, [x_adv])[0]
        x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
        x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
        x_adv = torch.clamp(x_adv, 0.0, 1.0)
    model.train()
    return x_adv


def mlp(classes: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 32), nn.BatchNorm1d(32), nn.Tanh(), nn.Linear(32, classes))


@pytest.mark.parametrize("classes", CLASSES)
def test_adaad_inner_maximisation_equals_official(classes):
    student, teacher = mlp(classes, 1), mlp(classes, 2)
    with torch.no_grad():
        for _ in range(3):
            student(torch.rand(16, *SHAPE))  # non-trivial running statistics
    teacher.eval()
    x = 0.2 + 0.6 * torch.rand(N, *SHAPE)  # interior: the official unclamped start equals the clamped one
    running = student[2].running_mean.clone()
    torch.manual_seed(11)
    ours = create_method("adaad").attack(student, x, teacher)  # kl_pgd, the teacher network as its target
    assert student.training and torch.equal(student[2].running_mean, running)  # ran in eval mode, mode restored
    assert all(p.grad is None for p in [*student.parameters(), *teacher.parameters()])
    torch.manual_seed(11)
    official = official_adaad_inner(student, teacher, x, 2 / 255, 10, 8 / 255)
    assert torch.allclose(ours, official, rtol=0, atol=1e-6)
    assert (ours - x).abs().max() <= 8 / 255 + 1e-6
    # the teacher's gradient path matters here: dropping it moves the result
    torch.manual_seed(11)
    detached = official_adaad_inner(student, teacher, x, 2 / 255, 10, 8 / 255, detach_teacher=True)
    assert not torch.allclose(ours, detached, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------- parameters and config


def test_defaults_follow_the_official_scale_and_are_recorded():
    assert create_method("ard").config()["kl_reduction"] == "mean"
    assert create_method("rslad").config()["kl_scale"] == 0.1
    cfg = create_method("adaad").config()
    assert (cfg["adv_weight"], cfg["kl_reduction"]) == (1.0, "mean")
    assert cfg["attack"] == {
        "name": "kl_pgd",
        "eps": 8 / 255,
        "step_size": 2 / 255,
        "steps": 10,
        "norm": "linf",
        "init": "normal",
        "seed": None,
        "step_ratio": 0.25,
    }
    assert create_method("adaad", attack={"steps": 3}).config()["attack"]["steps"] == 3
    assert create_method("adaad", **{k: v for k, v in cfg.items() if k != "name"}).config() == cfg


@pytest.mark.parametrize(
    "name,params,needle",
    [
        ("ard", {"kl_reduction": "sum"}, "kl_reduction"),
        ("rslad", {"kl_scale": 0}, "kl_scale"),
        ("rslad", {"kl_scale": "0.1"}, "kl_scale"),
        ("adaad", {"adv_weight": 1.5}, "adv_weight"),
        ("adaad", {"kl_reduction": "batch"}, "kl_reduction"),
        ("adaad", {"attack": "pgd"}, "attack"),
        ("adaad", {"attack": {"name": "pgd"}}, "takes labels"),
        ("adaad", {"attack": {"stepz": 3}}, "stepz"),
        ("adaad", {"attack": {"steps": 2.5}}, "steps"),
        ("adaad", {"attack": {"eps": -1}}, "eps"),
        ("adaad", {"attack": {"init": "gauss"}}, "init"),
    ],
)
def test_bad_values_raise_one_line_dard_error(name, params, needle):
    with pytest.raises(DardError) as exc:
        create_method(name, **params)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
