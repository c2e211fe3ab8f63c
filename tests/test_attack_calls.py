"""How attacks are called: torchattacks-style calls told the right one, model outputs that are not logits told
what is wrong (attacks, methods, evaluation), and targeted PGD towards classes the caller chooses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dard.attacks import ATTACKS, TargetedPGD, create_attack, list_attacks
from dard.errors import DardError
from dard.evaluation.suite import attack_from_spec, build_suite, evaluate
from dard.methods import METHODS, create_method, list_methods

N, C = 8, 5


def linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, C))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(N, 3, 4, 4, generator=g), torch.randint(0, C, (N,), generator=g)


class Returns(nn.Module):
    """A linear model whose forward returns ``wrap(logits)``: a tuple, a dict, a wrong shape or dtype."""

    def __init__(self, wrap):
        super().__init__()
        self.net, self.wrap = linear(), wrap

    def forward(self, x):
        return self.wrap(self.net(x))


BAD_OUTPUTS = {
    "tuple": (lambda z: (z, z.detach()), "a tuple of 2"),
    "dict": (lambda z: {"logits": z, "aux": z}, "a dict with keys 'logits', 'aux'"),
    "3-d tensor": (lambda z: z[:, :, None], f", {C}, 1);"),
    "integer tensor": (lambda z: z.long(), "torch.int64 tensor"),
}


# -- torchattacks-style calls --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_attacks())
def test_model_given_to_the_constructor_is_a_type_error_showing_the_right_call(name):
    cls = ATTACKS.get(name)
    with pytest.raises(TypeError) as info:
        cls(linear(), eps=0.1)
    message = str(info.value)
    assert "\n" not in message
    assert f"{cls.__name__}(eps=0.1)(model, x, y)" in message
    assert f"create_attack('{name}', eps=0.1)(model, x, y)" in message


@pytest.mark.parametrize("name", list_attacks())
def test_call_without_the_model_is_a_type_error_showing_the_right_call(name):
    x, y = batch()
    attack = create_attack(name, eps=0.1)
    with pytest.raises(TypeError, match=r"the model comes first: call it as attack\(model, x, "):
        attack(x, y)
    with pytest.raises(TypeError, match=r"no (labels|target probabilities) given; call it as attack\(model, x, "):
        attack(linear(), x)
    with pytest.raises(TypeError, match="the model must be an nn.Module, got function"):
        attack(lambda z: z, x, y)


def test_right_calls_still_work_and_an_explicit_none_target_is_the_one_line_error():
    x, y = batch()
    assert create_attack("pgd", eps=0.1, steps=2, seed=0)(linear(), x, y).shape == x.shape
    with pytest.raises(DardError, match="labels must be an int64 tensor"):
        create_attack("pgd", eps=0.1)(linear(), x, None)


# -- model outputs that are not logits -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BAD_OUTPUTS))
@pytest.mark.parametrize("name", ["fgsm", "pgd", "cw", "tpgd", "dpgd", "autoattack"])
def test_attacks_say_what_the_model_returned(name, kind):
    wrap, fragment = BAD_OUTPUTS[kind]
    x, y = batch()
    with pytest.raises(DardError) as info:
        create_attack(name, eps=0.1, seed=0)(Returns(wrap), x, y)
    assert fragment in str(info.value) and "dard needs its logits alone, a float tensor of shape (" in str(info.value)


def test_kl_pgd_checks_both_networks():
    x, _ = batch()
    attack = create_attack("kl_pgd", eps=0.1, steps=2, seed=0)
    with pytest.raises(DardError, match="a tuple of 2"):
        attack(linear(), x, Returns(lambda z: (z, z)))  # the reference network returns a tuple
    with pytest.raises(DardError, match="a tuple of 2"):
        attack(Returns(lambda z: (z, z)), x, torch.full((N, C), 1 / C))


@pytest.mark.parametrize(
    "method, role",
    [(m, "student") for m in list_methods()] + [(m, "teacher") for m in list_methods() if METHODS.get(m).needs_teacher],
)
def test_methods_say_what_the_student_or_teacher_returned(method, role):
    x, y = batch()
    loss = create_method(method) if method == "natural" else create_method(method, attack={"steps": 1})
    bad = Returns(BAD_OUTPUTS["tuple"][0])
    student, teacher = (bad.train(), linear().eval()) if role == "student" else (linear().train(), bad.eval())
    with pytest.raises(DardError, match="the model returned a tuple of 2"):
        loss(student, teacher, x, y)


def test_evaluation_says_what_the_model_returned():
    x, y = batch()
    with pytest.raises(DardError, match="the model returned a dict"):
        evaluate(Returns(BAD_OUTPUTS["dict"][0]), x, y, build_suite(["fgsm"], eps=0.1), progress=False)


# -- targeted PGD towards the caller's classes ---------------------------------------------------------------------


def test_tpgd_given_targets_are_reached_and_recorded():
    model, (x, y) = linear(), batch()
    targets = (y + 1) % C
    attack = create_attack("tpgd", target="given", eps=1.0, step_size=0.1, steps=30, seed=0)
    assert attack.target_kind == "targets"
    x_adv = attack(model, x, targets)
    assert torch.equal(attack.last_targets, targets)
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1), targets)  # eps 1 is the whole image box: every target reachable
    assert create_attack(**attack.config()).target == "given"


def test_tpgd_fixed_class_takes_true_labels_and_pushes_everything_there():
    model, (x, y) = linear(), batch()
    attack = create_attack("tpgd", target=2, eps=1.0, step_size=0.1, steps=30, seed=0)
    assert attack.target_kind == "labels" and attack.config()["target"] == 2
    x_adv = attack(model, x, y)
    with torch.no_grad():
        assert bool((model(x_adv).argmax(1) == 2).all())
    assert torch.equal(attack.last_targets, torch.full_like(y, 2))


@pytest.mark.parametrize(
    "params, targets, fragment",
    [
        ({"target": "given"}, torch.full((N,), C), f"target class {C}..{C} outside the model's classes 0..{C - 1}"),
        ({"target": C + 2}, None, f"target class {C + 2} outside"),
        ({"target": "given"}, torch.zeros(N), "target classes must be an int64 tensor"),
    ],
)
def test_tpgd_target_classes_are_checked(params, targets, fragment):
    x, y = batch()
    with pytest.raises(DardError, match=fragment):
        TargetedPGD(eps=0.1, **params)(linear(), x, y if targets is None else targets)


@pytest.mark.parametrize("target", [-1, True, "most_likely", 1.5])
def test_tpgd_bad_target_parameter(target):
    with pytest.raises(DardError, match="target"):
        TargetedPGD(target=target)


def test_given_targets_are_refused_where_true_labels_are_passed():
    with pytest.raises(DardError, match="takes target classes, not the true labels"):
        attack_from_spec({"name": "tpgd", "target": "given"}, eps=0.1, seed=0)
    with pytest.raises(DardError, match="attack 'tpgd' takes target classes, but this method attacks with labels"):
        create_method("sat", attack={"name": "tpgd", "target": "given"})
