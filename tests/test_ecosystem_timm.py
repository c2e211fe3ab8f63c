"""timm models as dard models (`timm:<name>`, `model.kwargs`).

timm imports torchvision, and PyPI's torchvision wheels are built against PyPI's CUDA torch, so on a machine with
the CPU-only torch 2.13.0 the tests and CI use, `import timm` fails. The adapter's behaviour is therefore checked
against a stand-in `timm` module with the three functions dard calls (`is_model`, `list_models`,
`create_model`), building a small ViT-style network. The real timm is tested in tests/test_ecosystem_real.py
(marker `ecosystem`, run by `make test-ecosystem`).
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from tests.cli_checks import config_file, fails_cleanly
from tests.conftest import tiny_run_config
from torch import nn

from dard.checkpoint import load_checkpoint
from dard.config import parse_config
from dard.errors import DardError
from dard.models import PlainClassifier, check_factory_kwargs, create_model
from dard.models.cost import macs_per_image

VIT = "vit_tiny_patch16_224"


class TinyViT(nn.Module):
    """Patch embedding, one attention block (scaled_dot_product_attention, as timm's ViTs), a linear head."""

    def __init__(self, num_classes: int, in_chans: int, img_size: int = 224, patch_size: int = 16, dim: int = 8):
        super().__init__()
        self.img_size, self.heads = img_size, 2
        self.patch = nn.Conv2d(in_chans, dim, patch_size, patch_size)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.img_size:  # as timm's PatchEmbed, which checks the image size
            raise AssertionError(f"Input width ({x.shape[-1]}) doesn't match model ({self.img_size}).")
        z = self.patch(x).flatten(2).transpose(1, 2)  # (N, tokens, dim)
        n, t, d = z.shape
        q, k, v = self.qkv(z).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        z = z + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
        return self.head(z.mean(1))


@pytest.fixture
def stand_in_timm(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """A `timm` module in sys.modules that knows one model; returns the list of create_model calls' arguments."""
    calls: list[dict[str, Any]] = []

    def create(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        calls.append({"name": name, "pretrained": pretrained, **kwargs})
        return TinyViT(**kwargs)

    module = types.ModuleType("timm")
    module.is_model = lambda name: name == VIT  # type: ignore[attr-defined]
    module.list_models = lambda: [VIT, "resnet18"]  # type: ignore[attr-defined]
    module.create_model = create  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "timm", module)
    return calls


def test_timm_name_builds_the_model_with_config_kwargs(stand_in_timm) -> None:
    model = create_model(f"timm:{VIT}", num_classes=7, in_channels=1, mean=[0.5], std=[0.25], img_size=8, patch_size=2)
    assert stand_in_timm == [
        {"name": VIT, "pretrained": False, "num_classes": 7, "in_chans": 1, "img_size": 8, "patch_size": 2}
    ]
    assert isinstance(model, PlainClassifier) and model.num_classes == 7
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(model(x), model.net((x - 0.5) / 0.25))  # the dataset's normalisation, inside, once
    # MACs: the layers plus attention's two products (16 tokens, width 8), counted for the time budget
    layers = 16 * 8 * 4 + 16 * 8 * 24 + 8 * 7
    assert macs_per_image(model, (1, 8, 8)) == layers + 2 * 16 * 16 * 8


def test_timm_errors_are_one_line(stand_in_timm, monkeypatch) -> None:
    with pytest.raises(DardError, match="timm has no model 'vit_tiny_patch16'; did you mean vit_tiny_patch16_224"):
        create_model("timm:vit_tiny_patch16")
    with pytest.raises(DardError, match="pretrained is not supported; load trained weights weights-only"):
        create_model(f"timm:{VIT}", pretrained=True)
    monkeypatch.setitem(sys.modules, "timm", None)  # not installed
    with pytest.raises(DardError, match=r"needs the timm package: pip install 'dard\[timm\]'"):
        create_model(f"timm:{VIT}")


def test_timm_import_failure_is_one_line(monkeypatch) -> None:
    # what this machine shows with PyPI's CUDA torchvision beside a CPU torch: an error while importing timm
    monkeypatch.delitem(sys.modules, "timm", raising=False)
    monkeypatch.setattr("builtins.__import__", _failing_import(__import__, "timm"))
    with pytest.raises(DardError, match="importing timm failed .RuntimeError: operator torchvision::nms"):
        create_model(f"timm:{VIT}")


def _failing_import(real: Any, name: str) -> Any:
    def fake(module: str, *args: Any, **kwargs: Any) -> Any:
        if module == name:
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(module, *args, **kwargs)

    return fake


def test_timm_kwargs_are_checked_before_the_data_loads(stand_in_timm, tmp_path, capsys) -> None:
    # timm's factory takes any keyword, so a misspelt model.kwargs key (or a value the model refuses) passed the
    # signature check and was found when the model was built, after the data had loaded; a value timm refuses with
    # another exception than TypeError was an internal error
    data = {"name": "cifar10", "dir": str(tmp_path / "no-data")}
    weights = tmp_path / "w.safetensors"
    save_file(create_model(f"timm:{VIT}", img_size=32, patch_size=4).state_dict(), str(weights))
    for kwargs, needle in [
        ({"img_sise": 32}, "unexpected keyword argument 'img_sise' (model.kwargs)"),
        ({"dim": -1}, "RuntimeError: Trying to create tensor with negative dimension"),
        ({"pretrained": True}, "pretrained is not supported"),
    ]:
        model = {"arch": f"timm:{VIT}", "kwargs": kwargs}
        cfg = config_file(tmp_path, model=model, data=data)
        fails_cleanly(
            capsys, tmp_path, ["train", "--config", cfg, "--out", str(tmp_path / "r")], "model.kwargs:", needle
        )
        teacher = {"arch": f"timm:{VIT}", "weights": str(weights), "normalize": False, "kwargs": kwargs}
        cfg = config_file(tmp_path, method={"name": "dard", "params": {}}, teacher=teacher, data=data)
        fails_cleanly(
            capsys, tmp_path, ["train", "--config", cfg, "--out", str(tmp_path / "r")], "teacher.kwargs:", needle
        )
        args = [f"--model-arg={k}={v}" for k, v in kwargs.items()]
        argv = ["eval", "--model", f"timm:{VIT}", *args, "--weights", str(weights), "--normalization", "none"]
        fails_cleanly(capsys, tmp_path, [*argv, "--data-dir", data["dir"]], needle)
    assert all(call.get("pretrained") is False for call in stand_in_timm)


class Swallowing(nn.Module):
    """As timm's SwinTransformer or StarNet: a keyword its __init__ does not name goes into **kwargs, unused."""

    def __init__(self, num_classes: int, in_chans: int, drop_rate: float = 0.0, **kwargs: Any) -> None:
        super().__init__()
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(in_chans * 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(F.adaptive_avg_pool2d(x, 8).flatten(1)))


class PassingOn(Swallowing):
    """As timm's MaxxVit or RegNet: the keywords its __init__ does not name go on to its layers."""

    def __init__(self, num_classes: int, in_chans: int, **kwargs: Any) -> None:
        super().__init__(num_classes, in_chans)
        self.head = nn.Linear(in_chans * 64, num_classes, **kwargs)


@pytest.fixture
def swallowing_timm(stand_in_timm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in timm knowing two more models, whose keywords it prunes of None values as timm.create_model does."""
    timm, classes = sys.modules["timm"], {"swallowing": Swallowing, "passing_on": PassingOn}

    def create(name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return classes[name](**kwargs) if name in classes else TinyViT(**kwargs)

    monkeypatch.setattr(timm, "is_model", lambda name: name in (VIT, *classes))
    monkeypatch.setattr(timm, "create_model", create)


def test_a_timm_keyword_the_model_drops_is_refused(swallowing_timm, tmp_path, capsys) -> None:
    # a keyword the model's class takes into **kwargs and never uses (a misspelt dropout) built the model without it,
    # and one set to null timm prunes: the user trained a model other than the one they thought they had set
    with pytest.raises(DardError, match=r"timm:swallowing': dropout=0.5 changes nothing .* Swallowing takes "):
        check_factory_kwargs("timm:swallowing", {"dropout": 0.5})
    with pytest.raises(DardError, match=r"drop_rat=0.5 changes nothing .*; did you mean drop_rate\?"):
        check_factory_kwargs("timm:swallowing", {"drop_rat": 0.5})
    with pytest.raises(DardError, match=r"drop_rate=None changes nothing .* timm drops keyword arguments set to null"):
        check_factory_kwargs("timm:swallowing", {"drop_rate": None})
    check_factory_kwargs("timm:swallowing", {"drop_rate": 0.5})  # named: used
    check_factory_kwargs("timm:passing_on", {"bias": False})  # not named, but it changes the model: passed on
    check_factory_kwargs("timm:passing_on", {"bias": True})  # passed on at its default: written out, not wrong
    with pytest.raises(DardError, match=r"dropout=0.0 changes nothing"):  # dropped whatever its value
        check_factory_kwargs("timm:swallowing", {"dropout": 0.0})
    check_factory_kwargs(f"timm:{VIT}", {"img_size": 8, "patch_size": 2})  # no **kwargs: built once, as before
    cfg = config_file(tmp_path, model={"arch": "timm:swallowing", "kwargs": {"dropout": 0.5}}, data={"name": "digits"})
    argv = ["train", "--config", cfg, "--out", str(tmp_path / "r")]
    fails_cleanly(capsys, tmp_path, argv, "model.kwargs: model 'timm:swallowing': dropout=0.5 changes nothing")


@pytest.mark.slow
def test_dard_trains_a_timm_vit_student_and_its_checkpoint_reloads(stand_in_timm, finished_run, tmp_path) -> None:
    from dard.training import train

    cfg = tiny_run_config(
        model={"arch": f"timm:{VIT}", "kwargs": {"img_size": 8, "patch_size": 2}},
        method={"name": "dard", "params": {"attack": {"name": "dpgd", "steps": 2}}},
        teacher={"checkpoint": str(finished_run)},
        data={"train_subset": 64, "val_size": 32, "test_subset": 16},
        optim={"epochs": 1, "batch_size": 64},
    )
    run = tmp_path / "vit"
    train(parse_config(cfg), run)
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["kwargs"] == {"img_size": 8, "patch_size": 2}
    model, meta = load_checkpoint(run)  # the recorded kwargs rebuild the same model, no --model needed
    assert meta["model"]["arch"] == f"timm:{VIT}" and meta["model"]["kwargs"] == {"img_size": 8, "patch_size": 2}
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)

    # the ViT as a teacher through its checkpoint: built with its recorded kwargs everywhere, the cost model's
    # throw-away copy included (without them it is a 224-pixel ViT, which refuses 8x8 images)
    cfg = tiny_run_config(
        method={"name": "dard", "params": {"attack": {"name": "dpgd", "steps": 1}}},
        teacher={"checkpoint": str(run)},
        data={"train_subset": 64, "val_size": 32, "test_subset": 16},
        optim={"epochs": 1, "batch_size": 64},
    )
    student = tmp_path / "from-vit"
    train(parse_config(cfg), student, final_eval=False)
    assert json.loads((student / "run.json").read_text())["teacher"]["kwargs"] == {"img_size": 8, "patch_size": 2}


def test_configs_without_kwargs_dump_as_before() -> None:
    from dard.config.schema import dump_config

    assert "kwargs" not in dump_config(parse_config({}))
    assert parse_config({"model": {"kwargs": {"img_size": 32}}}).model_dump(mode="json")["model"]["kwargs"] == {
        "img_size": 32
    }
