"""No host syncs in the training step: DPGD's masked sets equal its selected rows, the loop's device-side sums equal
per-step .item() sums, and the speed switches that go with it (compile mode, the onecycle schedule)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dard.attacks.dpgd import dice_loss, dpgd_loss, masked_dice_loss
from dard.config import parse_config
from dard.training.setup import lr_lambda
from dard.training.step_sums import StepSums


def _logits_with_split(n_correct: int, n: int = 12, classes: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, classes, generator=g, dtype=torch.float64)
    pred = logits.argmax(1)
    y = torch.where(torch.arange(n) < n_correct, pred, (pred + 1) % classes)  # first n_correct right, rest wrong
    return logits.requires_grad_(True), y


@pytest.mark.parametrize("reduction", ["set", "sample"])
@pytest.mark.parametrize("smooth", [1e-5, 0.0])
@pytest.mark.parametrize("n_correct", [0, 5, 12])  # W empty, both, C empty
def test_masked_dice_equals_dice_of_the_selected_rows(reduction, smooth, n_correct):
    logits, y = _logits_with_split(n_correct)
    for t in (0, 3, 9):
        a = dpgd_loss(logits, y, t, 10, smooth, reduction, masked=True)
        b = dpgd_loss(logits, y, t, 10, smooth, reduction, masked=False)
        (ga,) = torch.autograd.grad(a, logits)
        (gb,) = torch.autograd.grad(b, logits)
        # float32 inside dpgd_loss: the two forms differ only in the order of summation
        assert math.isclose(a.item(), b.item(), rel_tol=1e-6, abs_tol=1e-7)
        assert torch.isfinite(ga).all() and torch.allclose(ga, gb, rtol=1e-5, atol=1e-7)
    probs = logits.detach().softmax(1)
    onehot = F.one_hot(y, 5).to(probs.dtype)
    empty = torch.zeros(12, dtype=torch.bool)
    assert masked_dice_loss(probs, onehot, empty, smooth, reduction).item() == 0.0 == dice_loss(probs[:0], onehot[:0])


def test_dpgd_loss_selects_rows_on_the_cpu():
    logits, y = _logits_with_split(7)
    plain = dpgd_loss(logits.float(), y, 4, 10)  # the form the committed CPU results were made with
    assert torch.equal(plain, dpgd_loss(logits.float(), y, 4, 10, masked=False))


def test_step_sums_equal_per_step_item_sums_and_name_the_first_bad_step():
    g = torch.Generator().manual_seed(1)
    losses = [torch.rand((), generator=g) * 3 for _ in range(7)]
    logits = [torch.randn(5, 4, generator=g) for _ in range(7)]
    ys = [torch.randint(0, 4, (5,), generator=g) for _ in range(7)]
    expected = {"loss": 0.25, "correct": 3.0, "seen": 5}  # a resumed epoch's partial sums
    sums = StepSums(dict(expected), first_step=2)
    for i, (loss, lg, y) in enumerate(zip(losses, logits, ys)):
        sums.add(loss, lg, y)
        expected["loss"] += loss.item() * 5
        expected["correct"] += (lg.argmax(1) == y).sum().item()
        expected["seen"] += 5
        if i in (2, 6):
            assert sums.read_back() is None and sums.pending == 0
    assert sums.host == expected  # bit for bit: same values, same order, same precision
    sums.add(torch.tensor(1.0), logits[0], ys[0])
    sums.add(torch.tensor(float("inf")), logits[0], ys[0])
    sums.add(torch.tensor(float("nan")), logits[0], ys[0])
    bad = sums.read_back()
    assert bad is not None and bad.step == 2 + 7 + 1 and bad.value == float("inf")
    assert sums.host["seen"] == expected["seen"] + 5  # the finite step before it counts, nothing after


def test_a_non_finite_first_loss_is_not_blamed_on_the_learning_rate(tmp_path):
    """The first step's loss comes before any update (a method weight of 1e300, a model's output): it said 'lower
    optim.lr?'; a later step's still does."""
    from dard.errors import DardError
    from dard.run_dir import RunDir
    from dard.training.distributed import DistInfo
    from dard.training.step_sums import read_back

    said = []
    for epoch, first_step in ((0, 0), (0, 1), (1, 0)):
        sums = StepSums(first_step=first_step)
        sums.add(torch.tensor(float("inf")), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
        with pytest.raises(DardError) as exc:
            read_back(sums, RunDir(tmp_path / "run"), epoch, first_step + 1, DistInfo(), torch.device("cpu"))
        said.append(str(exc.value))
    assert said[0] == (
        "loss is inf at epoch 1 step 1; stopping (no checkpoint was written yet); the first step, before any "
        "update, so not the learning rate: look at method.params, the model, the data"
    )
    assert said[1].startswith("loss is inf at epoch 1 step 2;") and said[1].endswith("lower optim.lr?")
    assert said[2].startswith("loss is inf at epoch 2 step 1;") and said[2].endswith("lower optim.lr?")


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compile_mode_reaches_torch_compile(monkeypatch, mode):
    from dard.models import create_model
    from dard.training.distributed import DistInfo
    from dard.training.setup import prepare_models

    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(kw) or model)
    cfg = parse_config({"speed": {"compile": True, "compile_mode": mode, "channels_last": False}})
    net = create_model("small_cnn", num_classes=10, in_channels=1)
    prepare_models(cfg, net, create_model("small_cnn", num_classes=10, in_channels=1), torch.device("cpu"), DistInfo())
    want = {"backend": "inductor"} | ({} if mode == "default" else {"mode": mode})
    assert calls == [want, want]  # student and teacher


def test_onecycle_rises_over_the_warmup_then_falls_linearly_to_zero():
    cfg = parse_config({"optim": {"epochs": 5, "schedule": "onecycle", "warmup_epochs": 2}})
    f = lr_lambda(cfg, steps_per_epoch=10)
    assert [f(s) for s in (0, 9, 19)] == pytest.approx([0.05, 0.5, 1.0])
    assert [f(s) for s in (20, 35, 49, 50)] == pytest.approx([1.0, 0.5, 1 / 30, 0.0])
    plain = lr_lambda(parse_config({"optim": {"epochs": 2, "schedule": "onecycle"}}), steps_per_epoch=4)
    assert [plain(s) for s in range(9)] == pytest.approx([1 - s / 8 for s in range(9)])
