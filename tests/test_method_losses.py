"""Loss values of the training methods, checked against formulas written out here.

The "models" are tiny linear maps whose logits are known and the training attack is a stub returning a fixed
perturbation, so every term of every loss can be recomputed by hand (tests/test_methods.py runs the real attacks).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import dard.methods.base as methods_base
from dard.errors import DardError
from dard.methods import LossOutput, create_method, kl_batchmean, soft_targets
from dard.module_utils import eval_mode

TEACHER_METHODS = ["adaad", "ard", "dard", "pgdard", "rslad"]


# ------------------------------------------------------------------------------------------ reference formulas
# Written independently of dard.methods.losses: explicit softmax, explicit sums.


def ref_softmax(z: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    z = z.double() / tau
    e = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def ref_kl(p: torch.Tensor, student_logits: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """sum_i sum_c p_ic log(p_ic / q_ic) / N with q = softmax(student_logits / tau)."""
    p = p.double()
    q = ref_softmax(student_logits, tau)
    n = p.shape[0]
    total = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        for c in range(p.shape[1]):
            if p[i, c] > 0:
                total = total + p[i, c] * torch.log(p[i, c] / q[i, c])
    return total / n


def ref_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean_i -log softmax(logits_i)[y_i]."""
    q = ref_softmax(logits)
    return -torch.log(q[torch.arange(len(y)), y]).mean()


# --------------------------------------------------------------------------------------------- tiny models


class LinearNet(nn.Module):
    """logits = flatten(x) @ W.T, recording the mode and batch size of every forward."""

    def __init__(self, weight: list[list[float]]) -> None:
        super().__init__()
        w = torch.tensor(weight)
        self.fc = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(w)
        self.modes: list[bool] = []
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        self.batch_sizes.append(x.shape[0])
        return self.fc(x.flatten(1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits without recording (for the expected values)."""
        with torch.no_grad():
            return self.fc(x.flatten(1))


W_STUDENT = [[1.0, -2.0], [0.5, 1.5], [-1.0, 0.3]]
W_TEACHER = [[2.0, 0.5], [-1.0, 1.0], [0.2, -2.5]]
X = torch.tensor([[0.2, 0.7], [0.9, 0.1]])
Y = torch.tensor([0, 2])
DELTA = torch.tensor([[0.03, -0.03], [-0.03, 0.03]])
X_ADV = (X + DELTA).clamp(0, 1)


class StubAttack:
    """Stands in for a training attack: returns ``X_ADV``, records the model and its mode."""

    def __init__(self, spec: dict | None = None) -> None:
        self.spec = dict(spec or {})
        self.calls: list[tuple[nn.Module, bool, tuple]] = []

    def __call__(self, model, x, third):
        self.calls.append((model, model.training, (x.clone(), third.clone())))
        return X_ADV.clone()

    def config(self) -> dict:
        return dict(self.spec)


@pytest.fixture
def stub_attacks(monkeypatch):
    """Make create_method build StubAttacks instead of dard.attacks ones (pure loss tests)."""
    monkeypatch.setattr(methods_base, "build_attack", lambda method_name, spec: StubAttack(spec))


def make_models():
    student = LinearNet(W_STUDENT).train()
    teacher = LinearNet(W_TEACHER).eval()
    return student, teacher


def run(method, student=None, teacher=None, stub=True):
    if student is None:
        student, teacher = make_models()
    if stub:
        method.attack = StubAttack()
    out = method(student, teacher, X.clone(), Y.clone())
    return out, student, teacher


def close(a, b, tol=1e-5):
    a, b = (v.detach() if isinstance(v, torch.Tensor) else v for v in (a, b))
    return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)


# ------------------------------------------------------------------------------------------------- losses


def test_kl_batchmean_closed_form_2x3():
    p = torch.tensor([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]])
    q = torch.tensor([[0.25, 0.25, 0.5], [0.4, 0.4, 0.2]])
    logits = q.log()  # softmax(log q) = q
    # row 1: 0.2 ln(0.2/0.25) + 0.3 ln(0.3/0.25) + 0.5 ln(1)  = 0.0100677568
    # row 2: 0.1 ln(0.1/0.4) * 2 + 0.8 ln(0.8/0.2)              = 0.8317766167
    expected = (0.0100677568 + 0.8317766167) / 2  # batchmean: divide by N = 2 -> 0.4209221867
    assert close(kl_batchmean(p, logits), expected, 1e-6)
    assert close(kl_batchmean(p, logits), 0.42092218672, 1e-6)
    # not the elementwise 'mean' (which divides by N * C = 6 -> 0.1403)
    assert not close(kl_batchmean(p, logits), (0.0100677568 + 0.8317766167) / 6, 1e-3)
    # temperature: softmax((tau * log q) / tau) = q
    assert close(kl_batchmean(p, 3.0 * logits, tau=3.0), expected, 1e-6)
    assert close(kl_batchmean(p, p.log()), 0.0, 1e-7)


def test_kl_batchmean_matches_reference_and_handles_zero_targets():
    torch.manual_seed(0)
    logits_t = torch.randn(5, 4)
    logits_s = torch.randn(5, 4)
    for tau in (1.0, 2.5):
        p = soft_targets(logits_t, tau)
        assert close(kl_batchmean(p, logits_s, tau), ref_kl(p, logits_s, tau))
    p = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(5, 1)  # 0 log 0 = 0
    assert torch.isfinite(kl_batchmean(p, logits_s))
    assert close(kl_batchmean(p, logits_s), ref_kl(p, logits_s))


def test_soft_targets():
    z = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.allclose(soft_targets(z, 2.0), ref_softmax(z, 2.0).float())
    assert torch.allclose(soft_targets(z, 2.0).sum(1), torch.ones(1))


def test_eval_mode_restores_every_module():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    net.train()
    net[1].eval()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert net.training and net[0].training and not net[1].training


# --------------------------------------------------------------------------------- loss values (stub attack)


def dard_expected(student, teacher, lam, alpha, tau, clean_branch=False):
    t_nat, t_adv = teacher.logits(X), teacher.logits(X_ADV)
    q = lam * ref_softmax(t_nat, tau) + (1 - lam) * ref_softmax(t_adv, tau)
    s_adv = student.logits(X_ADV)
    loss = alpha * ref_ce(s_adv, Y) + (1 - alpha) * tau**2 * ref_kl(q, s_adv, tau)
    if clean_branch:
        s_nat = student.logits(X)
        loss = loss + alpha * ref_ce(s_nat, Y) + (1 - alpha) * tau**2 * ref_kl(q, s_nat, tau)
    return loss


@pytest.mark.parametrize("name", ["dard", "pgdard"])
@pytest.mark.parametrize(
    "lam,alpha,tau",
    [(0.5, 0.3, 1.0), (1.0, 0.3, 1.0), (0.0, 0.3, 1.0), (0.25, 0.0, 4.0), (0.7, 0.6, 2.0)],
)
def test_dard_loss_formula(stub_attacks, name, lam, alpha, tau):
    method = create_method(name, lam=lam, alpha=alpha, tau=tau)
    out, student, teacher = run(method)
    assert isinstance(out, LossOutput)
    assert close(out.loss, dard_expected(student, teacher, lam, alpha, tau))
    assert torch.equal(out.x_adv, X_ADV)
    assert torch.allclose(out.logits, student.logits(X_ADV))
    assert not out.logits.requires_grad


def test_dard_special_cases(stub_attacks):
    student, teacher = make_models()
    s_adv = student.logits(X_ADV)
    # alpha = 1: pure cross-entropy on x_adv
    out, _, _ = run(create_method("dard", alpha=1.0, lam=0.3))
    assert close(out.loss, ref_ce(s_adv, Y))
    # alpha = 0, lam = 1: tau^2 KL(softmax(T(x)/tau) || softmax(S(x_adv)/tau))
    for tau in (1.0, 3.0):
        out, _, _ = run(create_method("dard", alpha=0.0, lam=1.0, tau=tau))
        expected = tau**2 * ref_kl(ref_softmax(teacher.logits(X), tau), s_adv, tau)
        assert close(out.loss, expected)
    # alpha = 0, lam = 0: adversarial soft labels only
    out, _, _ = run(create_method("dard", alpha=0.0, lam=0.0, tau=2.0))
    assert close(out.loss, 4.0 * ref_kl(ref_softmax(teacher.logits(X_ADV), 2.0), s_adv, 2.0))


def test_dard_tau_squared_scaling(stub_attacks):
    # At alpha = 0 the loss is tau^2 * KL at temperature tau: check the factor explicitly.
    student, teacher = make_models()
    for tau in (0.5, 2.0, 5.0):
        out, _, _ = run(create_method("dard", alpha=0.0, lam=0.5, tau=tau))
        q = 0.5 * ref_softmax(teacher.logits(X), tau) + 0.5 * ref_softmax(teacher.logits(X_ADV), tau)
        kl = ref_kl(q, student.logits(X_ADV), tau)
        assert close(out.loss / kl, tau**2, 1e-4)


def test_dard_clean_branch_adds_clean_terms(stub_attacks):
    lam, alpha, tau = 0.5, 0.3, 2.0
    base, _, _ = run(create_method("dard", lam=lam, alpha=alpha, tau=tau))
    out, student, teacher = run(create_method("dard", lam=lam, alpha=alpha, tau=tau, clean_branch=True))
    assert close(out.loss, dard_expected(student, teacher, lam, alpha, tau, clean_branch=True))
    q = lam * ref_softmax(teacher.logits(X), tau) + (1 - lam) * ref_softmax(teacher.logits(X_ADV), tau)
    s_nat = student.logits(X)
    clean_terms = alpha * ref_ce(s_nat, Y) + (1 - alpha) * tau**2 * ref_kl(q, s_nat, tau)
    assert close(out.loss - base.loss, clean_terms)
    # two separate student forwards (x_adv, then x), both in train mode
    assert student.batch_sizes == [2, 2] and student.modes == [True, True]


def test_dard_teacher_one_concatenated_call_and_no_grad(stub_attacks):
    out, student, teacher = run(create_method("dard"))
    assert teacher.batch_sizes == [4]  # T(cat([x, x_adv]))
    assert student.modes == [True]  # the loss forward in train mode
    out.loss.backward()
    assert teacher.fc.weight.grad is None
    assert student.fc.weight.grad is not None and torch.isfinite(student.fc.weight.grad).all()
    assert not teacher.training and student.training


def test_dard_gradient_matches_formula(stub_attacks):
    lam, alpha, tau = 0.5, 0.3, 2.0
    out, student, teacher = run(create_method("dard", lam=lam, alpha=alpha, tau=tau))
    (g,) = torch.autograd.grad(out.loss, student.fc.weight)
    w = student.fc.weight.detach().double().clone().requires_grad_(True)
    q = lam * ref_softmax(teacher.logits(X), tau) + (1 - lam) * ref_softmax(teacher.logits(X_ADV), tau)
    s_adv = X_ADV.double() @ w.T
    ref = alpha * ref_ce(s_adv, Y) + (1 - alpha) * tau**2 * ref_kl(q, s_adv, tau)
    (g_ref,) = torch.autograd.grad(ref, w)
    assert torch.allclose(g.double(), g_ref, atol=1e-5)


def test_dard_attack_target(stub_attacks):
    method = create_method("dard")
    out, student, teacher = run(method)
    assert method.attack.calls[0][0] is student
    method = create_method("dard", attack_target="teacher")
    out, student, teacher = run(method)
    assert method.attack.calls[0][0] is teacher
    assert torch.equal(method.attack.calls[0][2][1], Y)


def test_ard_loss_formula(stub_attacks):
    # paper defaults alpha = 1, tau = 30: tau^2 KL(T(x)/tau || S(x_adv)/tau), divided by the 3 classes (official 'mean')
    out, student, teacher = run(create_method("ard"))
    expected = 900.0 * ref_kl(ref_softmax(teacher.logits(X), 30.0), student.logits(X_ADV), 30.0) / 3
    # at tau = 30 p and q nearly coincide: float32 rounding of log p - log q limits the value to ~1e-4 relative
    assert close(out.loss, expected, 1e-3)
    assert student.modes == [True, True]  # S(x_adv), then S(x) (BatchNorm statistics, as ARD's code)
    assert teacher.batch_sizes == [2]
    # alpha < 1 adds (1 - alpha) CE(S(x), y) on the clean input; batchmean: the per-sample KL
    out, student, teacher = run(create_method("ard", alpha=0.4, tau=2.0, kl_reduction="batchmean"))
    expected = 0.4 * 4.0 * ref_kl(ref_softmax(teacher.logits(X), 2.0), student.logits(X_ADV), 2.0) + 0.6 * ref_ce(
        student.logits(X), Y
    )
    assert close(out.loss, expected)
    assert torch.allclose(out.logits, student.logits(X_ADV))
    out.loss.backward()
    assert teacher.fc.weight.grad is None


def test_rslad_loss_formula(stub_attacks):
    method = create_method("rslad")
    out, student, teacher = run(method)
    p = ref_softmax(teacher.logits(X))
    expected = 5 / 6 * ref_kl(p, student.logits(X_ADV)) + 1 / 6 * ref_kl(p, student.logits(X))
    assert close(out.loss, 0.1 * expected)  # the official scripts' scale: per-sample KL / 10
    # the inner maximisation targets the teacher's clean probabilities, on the student
    model, _, (_, target) = method.attack.calls[0]
    assert model is student and torch.allclose(target.double(), p, atol=1e-6)
    assert student.modes == [True, True]
    out, student, teacher = run(create_method("rslad", adv_weight=0.5, kl_scale=1.0))
    p = ref_softmax(teacher.logits(X))
    assert close(out.loss, 0.5 * ref_kl(p, student.logits(X_ADV)) + 0.5 * ref_kl(p, student.logits(X)))
    out.loss.backward()
    assert teacher.fc.weight.grad is None


def test_trades_loss_formula_and_gradient(stub_attacks):
    method = create_method("trades")
    out, student, _ = run(method, teacher=None)
    s_nat, s_adv = student.logits(X), student.logits(X_ADV)
    expected = ref_ce(s_nat, Y) + 6.0 * ref_kl(ref_softmax(s_nat), s_adv)
    assert close(out.loss, expected)
    assert torch.allclose(out.logits, s_nat)
    # attack target f(x) computed in eval mode; loss forwards in train mode
    assert student.modes == [False, True, True]
    _, _, (_, target) = method.attack.calls[0]
    assert torch.allclose(target.double(), ref_softmax(s_nat), atol=1e-6)
    assert student.training
    # the gradient flows through both sides of the KL (as in TRADES)
    (g,) = torch.autograd.grad(out.loss, student.fc.weight)
    w = student.fc.weight.detach().double().clone().requires_grad_(True)
    zn, za = X.double() @ w.T, X_ADV.double() @ w.T
    ref = ref_ce(zn, Y) + 6.0 * ref_kl(ref_softmax(zn), za)
    (g_ref,) = torch.autograd.grad(ref, w)
    assert torch.allclose(g.double(), g_ref, atol=1e-5)
    out, student, _ = run(create_method("trades", beta=1.5))
    s_nat, s_adv = student.logits(X), student.logits(X_ADV)
    assert close(out.loss, ref_ce(s_nat, Y) + 1.5 * ref_kl(ref_softmax(s_nat), s_adv))


def test_sat_and_natural_loss_formula(stub_attacks):
    out, student, _ = run(create_method("sat"))
    assert close(out.loss, ref_ce(student.logits(X_ADV), Y))
    assert student.modes == [True]
    out, student, _ = run(create_method("natural"), stub=False)
    assert out.x_adv is None
    assert close(out.loss, ref_ce(student.logits(X), Y))
    assert torch.allclose(out.logits, student.logits(X))
    assert create_method("natural").attack is None


@pytest.mark.parametrize("name", TEACHER_METHODS)
def test_teacher_in_train_mode_or_missing_raises(stub_attacks, name):
    student, teacher = make_models()
    teacher.train()
    method = create_method(name)
    method.attack = StubAttack()
    with pytest.raises(DardError, match="eval mode"):
        method(student, teacher, X, Y)
    with pytest.raises(DardError, match="needs a teacher"):
        method(student, None, X, Y)
    # a submodule left in train mode counts too
    wrapped = nn.Sequential(LinearNet(W_TEACHER))
    wrapped.eval()
    wrapped[0].train()
    with pytest.raises(DardError, match="eval mode"):
        method(student, wrapped, X, Y)
