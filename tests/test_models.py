"""Tests for dard.models: registry, architectures, in-model normalisation, weight loading, cost."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch

from dard.errors import DardError
from dard.models import ImageClassifier, create_model, list_models
from dard.models.cifar_resnet import cifar_resnet
from dard.models.cost import count_parameters, macs_per_image
from dard.models.wide_resnet import wide_resnet
from dard.registry import MODELS
from dard.weights import load_weights, read_state_dict

# pyautoattack (a dependency) ships the weights of its example CIFAR-10 ResNet-18 inside the package.
AUTOATTACK_MODEL = Path(str(files("pyautoattack") / "examples" / "model_test.pt"))
BIG = {"wrn34_10", "wrn28_10"}  # forward only one image on these: they are slow on CPU
#: the package's own architectures: another test file registers models of its own (tests/test_user_models.py), and
#: collected first it would add them to these parametrisations
BUILTIN = [n for n in list_models() if MODELS.get(n).__module__.startswith("dard.")]
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# -- registry and construction -----------------------------------------------------------------------


def test_expected_models_registered() -> None:
    expected = {
        "resnet18",
        "preactresnet18",
        "resnet8",
        "resnet20",
        "resnet32",
        "resnet44",
        "resnet56",
        "wrn34_10",
        "wrn28_10",
        "wrn16_4",
        "mobilenetv2",
        "small_cnn",
    }
    assert expected <= set(list_models())
    assert list_models() == sorted(list_models())


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(DardError) as info:
        create_model("resnet9000")
    msg = str(info.value)
    assert "resnet9000" in msg and "resnet18" in msg and "wrn34_10" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("kwargs", [{"num_classes": 1}, {"num_classes": 0}, {"in_channels": 0}])
def test_create_model_validates_arguments(kwargs: dict) -> None:
    with pytest.raises(DardError):
        create_model("resnet8", **kwargs)


def test_bad_normalisation_rejected() -> None:
    with pytest.raises(DardError):
        create_model("resnet8", mean=(0.5, 0.5), std=(0.2, 0.2))  # 2 values for 3 channels
    with pytest.raises(DardError):
        create_model("resnet8", mean=CIFAR_MEAN, std=(0.2, 0.0, 0.2))
    with pytest.raises(DardError):
        cifar_resnet(21)
    with pytest.raises(DardError):
        wide_resnet(30, 2)


@pytest.mark.parametrize(
    "name, published",
    [
        ("resnet18", 11.17e6),
        ("resnet56", 0.86e6),
        ("resnet20", 0.27e6),
        ("wrn34_10", 46.16e6),
        ("mobilenetv2", 2.30e6),
    ],
)
def test_parameter_counts_match_published(name: str, published: float) -> None:
    n = count_parameters(create_model(name))
    assert abs(n - published) / published < 0.01, (name, n)


def test_count_parameters_trainable_only() -> None:
    model = create_model("resnet8")
    total = count_parameters(model)
    model.linear.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == total - model.linear.weight.numel()


# -- forward passes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(set(BUILTIN) - BIG))
def test_forward_shapes_and_finite(name: str) -> None:
    model = create_model(name, num_classes=7, mean=CIFAR_MEAN, std=CIFAR_STD)
    assert isinstance(model, ImageClassifier)
    assert model.num_classes == 7 and model.in_channels == 3
    x = torch.rand(2, 3, 32, 32)
    for mode in (True, False):
        model.train(mode)
        out = model(x)
        assert out.shape == (2, 7)
        assert torch.isfinite(out).all()
    # Features + head equal the full forward.
    assert torch.allclose(model.forward_head(model.embed(x)), model(x), atol=1e-5)


@pytest.mark.parametrize("name", sorted(BIG))
def test_big_models_single_image(name: str) -> None:
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(set(BUILTIN) - BIG))
def test_other_channels_and_small_inputs(name: str) -> None:
    model = create_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        for size in (8, 17):
            out = model(torch.rand(2, 1, size, size))
            assert out.shape == (2, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet18", "preactresnet18", "resnet20", "wrn16_4", "mobilenetv2", "small_cnn"])
def test_channels_last_input(name: str) -> None:
    model = create_model(name, mean=CIFAR_MEAN, std=CIFAR_STD).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = model(x.to(memory_format=torch.channels_last))
        out_cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-4)
    assert torch.allclose(ref, out_cl, atol=1e-4)


def test_small_cnn_on_digits() -> None:
    model = create_model("small_cnn", num_classes=10, in_channels=1)
    out = model(torch.rand(2, 1, 8, 8))
    assert out.shape == (2, 10)
    out.sum().backward()  # trainable end to end
    assert model.conv1.weight.grad is not None


# -- normalisation inside the model ------------------------------------------------------------------


def test_normalisation_inside_model() -> None:
    normed = create_model("resnet20", mean=CIFAR_MEAN, std=CIFAR_STD).eval()
    plain = create_model("resnet20").eval()
    plain.load_state_dict(normed.state_dict())
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(normed(x), plain((x - mean) / std), atol=1e-5)
        assert not torch.allclose(normed(x), plain(x), atol=1e-3)


def test_normalisation_buffers_not_in_state_dict() -> None:
    model = create_model("resnet18", mean=CIFAR_MEAN, std=CIFAR_STD)
    keys = set(model.state_dict())
    assert not {"mean", "std"} & keys
    assert not any(k.endswith(".mean") or k.endswith(".std") for k in keys)
    assert {name for name, _ in model.named_buffers()} >= {"mean", "std"}
    assert model.mean.shape == (1, 3, 1, 1) and model.std.shape == (1, 3, 1, 1)


def test_identity_normalisation_and_reset() -> None:
    model = create_model("resnet8", in_channels=1)
    assert model.normalization == ([0.0], [1.0])
    model.set_normalization([0.5], [0.25])
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(model.normalize(x), (x - 0.5) / 0.25)
    model.set_normalization(None, None)
    assert torch.equal(model.normalize(x), x)
    broadcast = create_model("resnet8", mean=[0.5], std=[0.5])  # one value for all channels
    assert broadcast.normalization == ([0.5] * 3, [0.5] * 3)


# -- weight loading ----------------------------------------------------------------------------------


def _outputs_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x))


def test_load_state_dict_with_prefixes_and_wrappers(tmp_path: Path) -> None:
    src = create_model("resnet8")
    sd = src.state_dict()
    cases = [
        {f"module.{k}": v for k, v in sd.items()},
        {f"module.model.{k}": v for k, v in sd.items()},
        {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3},
        {"model": dict(sd)},
        {"net": dict(sd), "acc": 0.9},
    ]
    for case in cases:
        dst = create_model("resnet8")
        load_weights(dst, case)
        assert _outputs_equal(src, dst)
    # From files too: .pt, .pth and .safetensors.
    from safetensors.torch import save_file

    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "w.pt")
    torch.save(sd, tmp_path / "w.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "w.safetensors"))
    for name in ("w.pt", "w.pth", "w.safetensors"):
        dst = create_model("resnet8")
        load_weights(dst, tmp_path / name)
        assert _outputs_equal(src, dst)
    dst = create_model("resnet8")
    load_weights(dst, str(tmp_path / "w.pt"))  # str paths work as well
    assert _outputs_equal(src, dst)


def test_load_missing_and_unexpected_keys() -> None:
    model = create_model("resnet8")
    sd = dict(model.state_dict())
    sd.pop("linear.weight")
    sd["extra.weight"] = torch.zeros(3)
    with pytest.raises(DardError) as info:
        load_weights(create_model("resnet8"), sd)
    msg = str(info.value)
    assert "linear.weight" in msg and "extra.weight" in msg and "1 missing" in msg and "1 unexpected" in msg
    assert "\n" not in msg
    load_weights(create_model("resnet8"), sd, strict=False)  # tolerated when not strict


def test_two_keys_for_one_tensor_once_prefixes_are_stripped_are_refused(tmp_path: Path) -> None:
    # a model saved beside its DataParallel copy: `fc.weight` and `module.fc.weight` both became `fc.weight`, and
    # the one listed last was loaded in silence
    sd = dict(create_model("small_cnn").state_dict())
    both = {**sd, **{f"module.{k}": v * 2 for k, v in sd.items()}}
    torch.save(both, tmp_path / "both.pt")
    for source in (both, tmp_path / "both.pt"):
        with pytest.raises(DardError, match=r"keys conv1.weight and module.conv1.weight both name tensor conv1.weight"):
            load_weights(create_model("small_cnn"), source)
    load_weights(create_model("small_cnn"), {f"module.{k}": v for k, v in sd.items()})  # one copy: stripped


def test_a_checkpoint_holding_a_model_and_its_ema_copy_is_refused(tmp_path: Path) -> None:
    # {"state_dict": ..., "state_dict_ema": ...}: the first key's weights were loaded in silence (timm's own loader
    # prefers the EMA); one copy under two keys is still one state dict
    sd = dict(create_model("small_cnn").state_dict())
    ema = {k: v * 2 for k, v in sd.items()}
    torch.save({"state_dict": sd, "state_dict_ema": ema, "epoch": 3}, tmp_path / "both.pth.tar")
    for source in ({"model": sd, "model_ema": ema}, tmp_path / "both.pth.tar"):
        with pytest.raises(DardError, match=r"holds 2 state dicts \((state_dict, state_dict_ema|model, model_ema)\)"):
            load_weights(create_model("small_cnn"), source)
    load_weights(create_model("small_cnn"), {"model": sd, "state_dict": dict(sd)})


def test_the_one_state_dict_of_a_checkpoint_loads_under_any_key_and_two_are_refused(tmp_path: Path) -> None:
    # a state dict under a key not in the wrapper list ({"model_state": ..., "optimizer_state": ...}, {"module": ...})
    # was "no state dict", though it was the only one; and a distillation checkpoint {"student": ..., "teacher": ...}
    # loaded the student in silence, "student" being a known key and "teacher" not
    src = create_model("small_cnn")
    sd = dict(src.state_dict())
    optim = torch.optim.SGD(src.parameters(), lr=0.1, momentum=0.9)
    src(torch.rand(2, 3, 8, 8)).sum().backward()
    optim.step()  # its state holds momentum buffers: a mapping, but not a state dict
    for case in ({"model_state": sd, "optimizer_state": optim.state_dict(), "epoch": 4}, {"module": sd}):
        dst = create_model("small_cnn")
        load_weights(dst, case)
        assert _outputs_equal(src, dst)
    both = {"student": sd, "teacher": {k: v * 2 for k, v in sd.items()}}
    torch.save(both, tmp_path / "kd.pt")
    for source in (both, tmp_path / "kd.pt"):
        with pytest.raises(DardError, match=r"holds 2 state dicts \(student, teacher\), so which one to load"):
            load_weights(create_model("small_cnn"), source)


def test_keys_behind_a_prefix_the_model_lacks_are_named(tmp_path: Path) -> None:
    # a distillation wrapper's state dict (student.*, teacher.*) or a backbone's listed five keys of each side, and
    # the reader had to see for themselves that every missing key was there behind a prefix
    sd = dict(create_model("small_cnn").state_dict())
    kd = {**{f"student.{k}": v for k, v in sd.items()}, **{f"teacher.{k}": v for k, v in sd.items()}}
    with pytest.raises(DardError, match=r"the file's keys are the model's behind 'student.', 'teacher.': save the"):
        load_weights(create_model("small_cnn"), kd)
    with pytest.raises(DardError, match=r"the model's behind 'backbone.encoder.': save the state dict"):
        load_weights(create_model("small_cnn"), {f"backbone.encoder.{k}": v for k, v in sd.items()})
    sd.pop("fc.bias")
    with pytest.raises(DardError) as info:  # keys of another model: no prefix to name
        load_weights(create_model("small_cnn"), {f"backbone.{k}": v for k, v in sd.items()})
    assert "behind" not in str(info.value)


def test_load_deeper_model_names_missing_keys() -> None:
    # ResNet-20 weights lack ResNet-56's extra blocks; at most 5 names are listed, plus the count.
    with pytest.raises(DardError) as info:
        load_weights(create_model("resnet56"), create_model("resnet20").state_dict())
    msg = str(info.value)
    assert "missing" in msg and "layer1.3." in msg and "\n" not in msg
    assert msg.count("layer") <= 10


def test_load_shape_mismatch() -> None:
    with pytest.raises(DardError, match="architecture mismatch") as info:
        load_weights(create_model("resnet20", num_classes=100), create_model("resnet20").state_dict())
    assert "linear.weight" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DardError, match="architecture mismatch"):
        load_weights(create_model("resnet20"), create_model("resnet20", in_channels=1).state_dict(), strict=False)


def test_weights_that_do_not_fit_name_their_file_and_cut_long_keys(tmp_path: Path, capsys) -> None:
    # dard eval read the file first and then said "cannot load the given checkpoint", naming no file; a key of 5000
    # characters filled the line's 1000 and hid the rest of the message
    from tests.cli_checks import fails_cleanly

    sd = dict(create_model("small_cnn", in_channels=1).state_dict())
    sd.pop("fc.bias")
    weights = tmp_path / "their-net.pt"
    torch.save({"state_dict": {**sd, "k" * 5000: torch.zeros(1)}}, weights)
    argv = ["eval", "--model", "small_cnn", "--weights", str(weights), "--normalization", "none", "--data", "digits"]
    line = fails_cleanly(capsys, tmp_path, argv, f"cannot load {weights} into", "1 missing key(s) [fc.bias]")
    assert "k" * 57 + "..." in line and "k" * 61 not in line


def test_load_with_numpy_metadata_beside_the_weights(tmp_path: Path) -> None:
    # training scripts store their metrics as NumPy scalars beside the weights: torch's weights-only load refused the
    # whole file as "pickled objects"
    src = create_model("resnet8")
    meta = {"best_acc": np.float64(0.9), "epoch": np.int64(3), "mean": np.array([0.49, 0.48, 0.45])}
    torch.save({"net": src.state_dict(), **meta}, tmp_path / "w.pth")
    dst = create_model("resnet8")
    load_weights(dst, tmp_path / "w.pth")
    assert _outputs_equal(src, dst)
    # still data alone: an object array's items go through the same restricted unpickler
    torch.save({"net": src.state_dict(), "args": np.array([Path("x")], dtype=object)}, tmp_path / "o.pth")
    with pytest.raises(DardError, match="pickled objects are refused"):
        load_weights(dst, tmp_path / "o.pth")


def test_load_not_a_checkpoint(tmp_path: Path) -> None:
    for name in ("notes.pt", "notes.safetensors"):
        bad = tmp_path / name
        bad.write_text("this is not a checkpoint\nsecond line\n")
        with pytest.raises(DardError, match="is not a weights file") as info:
            load_weights(create_model("resnet8"), bad)
        assert "\n" not in str(info.value)


def test_load_reads_the_format_from_the_content_not_the_name(tmp_path: Path) -> None:
    # safetensors saved as model.pt (or with no suffix) was read by torch.load and refused as "pickled objects";
    # a FIFO was "a directory"; an EMA-only checkpoint (timm's state_dict_ema) held "no state dict"
    import os

    from safetensors.torch import save_file

    src = create_model("resnet8")
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, str(tmp_path / "model.pt"))
    save_file(sd, str(tmp_path / "weights"))
    torch.save(sd, tmp_path / "torch.safetensors")
    torch.save({"state_dict_ema": sd, "epoch": 3}, tmp_path / "ema.pth.tar")
    for name in ("model.pt", "weights", "torch.safetensors", "ema.pth.tar"):
        dst = create_model("resnet8")
        load_weights(dst, tmp_path / name)
        assert _outputs_equal(src, dst), name
    # a safetensors header of 128 + 256k bytes starts with 0x80, a pickle stream's first byte: read as safetensors
    for pad in range(1, 400):
        save_file({"w": torch.ones(1)}, str(tmp_path / "padded.safetensors"), metadata={"pad": "x" * pad})
        if (tmp_path / "padded.safetensors").read_bytes()[:1] == b"\x80":
            break
    assert (tmp_path / "padded.safetensors").read_bytes()[:1] == b"\x80"
    assert read_state_dict(tmp_path / "padded.safetensors")["w"].tolist() == [1.0]
    (tmp_path / "zeros.bin").write_bytes(bytes(64))
    with pytest.raises(DardError, match="neither safetensors nor a PyTorch checkpoint"):
        load_weights(create_model("resnet8"), tmp_path / "zeros.bin")
    os.mkfifo(tmp_path / "fifo.pt")
    with pytest.raises(DardError, match=r"fifo.pt: it is a FIFO, not a weights file"):
        load_weights(create_model("resnet8"), tmp_path / "fifo.pt")
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(DardError, match=r"folder.pt: it is a folder, not a weights file"):
        load_weights(create_model("resnet8"), tmp_path / "folder.pt")


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DardError, match="not found") as info:
        load_weights(create_model("resnet8"), tmp_path / "nope.pt")
    assert "\n" not in str(info.value)


def test_load_no_state_dict_inside(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "acc": 0.5}, tmp_path / "meta.pt")
    with pytest.raises(DardError, match="no state dict"):
        load_weights(create_model("resnet8"), tmp_path / "meta.pt")


def test_tensors_beside_other_values_are_named_as_such(tmp_path: Path) -> None:
    # a state dict with an epoch written into it was "holds no state dict (keys: conv1.weight, bn1.weight, ...)",
    # the names of its tensors given as the keys of something else
    sd = dict(create_model("small_cnn").state_dict())
    for case in ({**sd, "epoch": 5}, {"state_dict": {**sd, "best_acc": 0.5}}):
        torch.save(case, tmp_path / "mixed.pt")
        with pytest.raises(
            DardError,
            match=r"holds 20 tensors beside 1 value\(s\) that are not tensors \[(epoch \(int|best_acc \(float)",
        ):
            load_weights(create_model("small_cnn"), tmp_path / "mixed.pt")


def test_loads_reference_cifar_resnet18_strictly() -> None:
    sd = torch.load(AUTOATTACK_MODEL, map_location="cpu", weights_only=True)
    assert len(sd) == 122
    model = create_model("resnet18", mean=CIFAR_MEAN, std=CIFAR_STD)
    assert set(model.state_dict()) == set(sd)
    load_weights(model, AUTOATTACK_MODEL, strict=True)
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


# -- cost accounting ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, published", [("resnet18", 0.556e9), ("resnet56", 0.126e9), ("resnet20", 0.041e9)])
def test_macs_per_image(name: str, published: float) -> None:
    macs = macs_per_image(create_model(name))
    assert abs(macs - published) / published < 0.03, (name, macs)


def test_macs_restores_modes_and_scales_with_input() -> None:
    model = create_model("resnet8")
    model.train()
    model.layer1.eval()  # mixed modes must come back exactly
    small = macs_per_image(model, (3, 16, 16))
    big = macs_per_image(model, (3, 32, 32))
    assert model.training and not model.layer1.training and model.layer2.training
    assert small < big
    assert macs_per_image(create_model("small_cnn", in_channels=1), (1, 8, 8)) > 0
