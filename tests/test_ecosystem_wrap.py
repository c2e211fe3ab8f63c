"""Any nn.Module as a dard model (`dard.create_model(instance, mean=, std=)`) and the top-level evaluation API."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dard
from dard.errors import DardError
from dard.models import ImageClassifier, PlainClassifier, build_from_factory, create_model

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Models registered by a test here leave the registry afterwards (a copy is swapped in for the test)."""
    from dard.models import MODELS

    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))


def test_wrapped_instance_is_the_registered_factory_model() -> None:
    net = _net()
    dard.register_model("_wrap_twin")(lambda num_classes=10: nn.Sequential(nn.Flatten(), nn.Linear(192, num_classes)))
    twin = create_model("_wrap_twin", mean=MEAN, std=STD)
    twin.load_state_dict(net.state_dict())
    wrapped = dard.create_model(net, mean=MEAN, std=STD)
    assert isinstance(wrapped, PlainClassifier) and wrapped.net is net  # shared, not copied
    assert list(wrapped.state_dict()) == list(net.state_dict()) == list(twin.state_dict())
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(wrapped(x), twin(x))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(wrapped(x), net((x - mean) / std))  # normalised inside, once


def test_wrapping_an_image_classifier_does_not_normalise_twice() -> None:
    model = create_model("small_cnn", num_classes=10)
    same = create_model(model, mean=MEAN, std=STD)
    assert same is model and torch.allclose(model.mean.flatten(), torch.tensor(MEAN))
    assert create_model(model) is model and torch.allclose(model.mean.flatten(), torch.tensor(MEAN))  # kept


def test_wrapped_instance_errors_are_one_line() -> None:
    with pytest.raises(DardError, match="takes no factory arguments"):
        create_model(_net(), img_size=32)
    with pytest.raises(DardError, match="has 10 classes, not 100"):
        create_model(create_model("small_cnn"), num_classes=100)
    with pytest.raises(DardError, match="3 values but the model has 1 input channels"):
        create_model(_net(), in_channels=1, mean=MEAN, std=STD)
    wrapped = create_model(_net(), num_classes=5)
    with pytest.raises(DardError, match="returns 10 class scores"):
        wrapped(torch.rand(2, 3, 8, 8))


def test_an_instance_with_lazy_or_meta_tensors_is_refused_as_a_factorys_model_is() -> None:
    # a factory's model with nn.LazyLinear is refused (it trained, then its checkpoint could not be loaded into a
    # fresh copy); an instance passed to create_model was wrapped as it was, ImageClassifier or plain module
    lazy = nn.Sequential(nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(DardError, match=r"create_model was given a model with uninitialised lazy .*tensor '1.weight'"):
        create_model(lazy)
    classifier = create_model("small_cnn")
    classifier.fc = nn.LazyLinear(10)
    with pytest.raises(DardError, match="uninitialised lazy parameters .tensor 'fc.weight'"):
        create_model(classifier, mean=MEAN, std=STD)
    with pytest.raises(DardError, match="create_model was given a model on the meta device .tensor '1.weight'"):
        create_model(_net().to("meta"))


def test_a_model_whose_parameters_mix_dtypes_is_refused_at_build() -> None:
    # one fp64 layer among fp32 ones: torch's raw "mat1 and mat2 must have the same dtype" at the first forward
    mixed = _net()
    mixed[1].bias.data = mixed[1].bias.data.double()
    with pytest.raises(DardError, match=r"given a model whose parameters mix dtypes: float32 \('1.weight'\), float64"):
        create_model(mixed, mean=MEAN, std=STD)

    @dard.register_model("_wrap_mixed")
    def factory(num_classes: int = 10) -> nn.Module:
        net = nn.Sequential(nn.Flatten(), nn.Linear(192, num_classes))
        net[1].weight.data = net[1].weight.data.double()
        return net

    with pytest.raises(DardError, match=r"model '_wrap_mixed': the factory returned a model whose parameters mix"):
        create_model("_wrap_mixed")
    whole = create_model(_net().double(), mean=MEAN, std=STD)  # one dtype throughout runs as it did
    assert whole(torch.rand(2, 3, 8, 8)).shape == (2, 10)


def test_factory_kwargs_reach_the_factory_and_unknown_ones_are_named() -> None:
    @dard.register_model("_wrap_sized")
    def sized(num_classes: int = 10, width: int = 4) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(192, width), nn.Linear(width, num_classes))

    assert create_model("_wrap_sized", width=7).net[1].out_features == 7
    with pytest.raises(DardError, match="takes no argument 'depth'"):
        create_model("_wrap_sized", depth=3)
    with pytest.raises(DardError, match="num_classes comes from the dataset"):
        build_from_factory(sized, "_wrap_sized", 10, 3, {"num_classes": 3})


def test_top_level_evaluate_and_build_suite() -> None:
    model = dard.create_model(_net(), mean=MEAN, std=STD)
    x, y = torch.rand(6, 3, 8, 8), torch.randint(0, 10, (6,))
    record = dard.evaluate(model, x, y, dard.build_suite(["fgsm", "pgd20"], eps=8 / 255), progress=False)
    assert record.clean.total == 6 and set(record.attacks) == {"fgsm", "pgd20"}
    assert record.attacks["pgd20"].correct <= record.clean.correct
    assert isinstance(model, ImageClassifier)


def test_dard_list_shows_the_new_attacks_and_model_prefixes() -> None:
    from tests.conftest import run_cli

    out = run_cli("list").stdout
    attacks = next(line for line in out.splitlines() if line.startswith("attacks:"))
    assert all(name in attacks for name in ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square"))
    assert "timm:NAME" in out and "robustbench:NAME" in out
