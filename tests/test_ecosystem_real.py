"""The real timm and RobustBench packages through dard (marker ``ecosystem``).

Both packages import torchvision, and PyPI's torchvision does not import beside the CPU torch 2.13.0 of ``make
test``, so there these tests skip with a reason naming ``make test-ecosystem``. That target builds
``.venv-ecosystem`` (torch 2.14.1 + torchvision 0.29.1, ``dard[timm,robustbench]``) and runs them with
``DARD_ECOSYSTEM=1``, under which a package that does not import fails the test instead of skipping it, so the
run cannot pass by skipping everything.

Everything is offline: the models are untrained, their random weights written where the libraries look, and the
CIFAR-10 images are a few random ones in the official pickle layout.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from tests.conftest import run_cli, tiny_run_config

from dard.checkpoint import load_checkpoint, load_model
from dard.config import parse_config
from dard.data import load_dataset
from dard.models import create_model
from dard.models.cost import macs_per_image

pytestmark = [pytest.mark.ecosystem, pytest.mark.slow]

VIT = "vit_tiny_patch16_224"
VIT_KWARGS = {"img_size": 32, "patch_size": 4}  # a ViT for 32x32 images: 64 patches of 4x4
RN18 = "Addepalli2021Towards_RN18"  # RobustBench's smallest CIFAR-10 Linf entry that dard builds (its resnet18)


def _require(module: str, load: Callable[[], Any]) -> Any:
    """What ``load`` imports, else a skip naming ``make test-ecosystem`` (a failure under ``DARD_ECOSYSTEM=1``)."""
    try:
        return load()
    except Exception as exc:  # not installed, or a torchvision built for another torch
        reason = f"{module} does not import here ({type(exc).__name__}: {str(exc)[:120]})"
        if os.environ.get("DARD_ECOSYSTEM") == "1":
            pytest.fail(f"{reason}, in the venv `make test-ecosystem` built for it")
        pytest.skip(f"{reason}; `make test-ecosystem` runs this test in .venv-ecosystem")


@pytest.fixture
def timm() -> ModuleType:
    return _require("timm", lambda: importlib.import_module("timm"))


@pytest.fixture
def robustbench_utils() -> ModuleType:
    """``robustbench.utils``, imported the way dard imports it (robustbench 1.1.1 needs dard's ``autoattack`` name)."""
    from dard.models.robustbench import import_robustbench

    return _require("robustbench", lambda: import_robustbench("this test")[0])


def _write_cifar10(root: Path, per_batch: int, test_x: np.ndarray | None = None, test_y: list[int] | None = None):
    """``root/cifar-10-batches-py`` with ``per_batch`` random images in each of the five training batches and the
    given test images (uint8 rows of 3072) and labels (default: ``per_batch`` random ones)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    def dump(name: str, obj: object) -> None:
        with open(folder / name, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)

    for i in range(1, 6):
        rows = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        dump(f"data_batch_{i}", {b"labels": [int(v) for v in rng.integers(0, 10, per_batch)], b"data": rows})
    if test_x is None:
        test_x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
    labels = test_y if test_y is not None else [int(v) for v in rng.integers(0, 10, len(test_x))]
    dump("test_batch", {b"labels": labels, b"data": test_x})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump("batches.meta", {b"label_names": [s.encode() for s in names]})
    return root


def _cifar_run(data_dir: Path, **sections) -> dict:
    """A run config of one training step (8 images, one batch) on a random CIFAR-10 copy of 10 training images
    (:func:`_write_cifar10` with ``per_batch=2``), no test evaluation."""
    base = {
        "data": {"name": "cifar10", "dir": str(data_dir), "train_subset": None, "val_size": 2, "test_subset": 2},
        "optim": {"epochs": 1, "batch_size": 8},
        "val": {"attack": {"name": "pgd", "steps": 1}, "batch_size": 8},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return tiny_run_config(**base)


def _train(cfg: dict, run: Path) -> Path:
    from dard.training import train

    train(parse_config(cfg), run, final_eval=False)
    return run


def _epochs(run: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl (one per epoch; here one epoch of one step)."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


# -- timm ------------------------------------------------------------------------------------------------------


def _vit_tiny_macs(tokens: int = 65, dim: int = 192, depth: int = 12, classes: int = 10) -> int:
    """vit_tiny's multiply-accumulates for one 32x32 image in 4x4 patches (64 patches and the class token): the
    patch embedding, per block qkv (3d^2), projection (d^2) and MLP (2 * 4d^2) per token plus attention's two
    products (2 tokens^2 d), and the head."""
    patch_embed = 64 * dim * 3 * 4 * 4
    block = tokens * (3 * dim * dim + dim * dim + 8 * dim * dim) + 2 * tokens * tokens * dim
    return patch_embed + depth * block + dim * classes


def test_timm_vit_is_a_dard_student_and_teacher(timm, tmp_path) -> None:
    data = _write_cifar10(tmp_path / "data", per_batch=2)
    bundle = load_dataset("cifar10", data)
    # a teacher for the ViT student: one natural step of dard's small CNN
    cnn = _train(_cifar_run(data, model={"arch": "small_cnn"}), tmp_path / "cnn")

    vit_model = {"arch": f"timm:{VIT}", "kwargs": VIT_KWARGS}
    dard_method = {"name": "dard", "params": {"attack": {"name": "dpgd", "steps": 2}}}
    vit_student = _cifar_run(data, model=vit_model, method=dard_method, teacher={"checkpoint": str(cnn)})
    vit = _train(vit_student, tmp_path / "vit")
    assert len(_epochs(vit)) == 1 and math.isfinite(_epochs(vit)[0]["train_loss"])
    student, meta = load_checkpoint(vit)  # the recorded arch and kwargs rebuild it, nothing named again
    assert meta["model"]["arch"] == f"timm:{VIT}" and meta["model"]["kwargs"] == VIT_KWARGS
    assert type(student.net).__module__.startswith("timm.") and student.net.patch_embed.img_size == (32, 32)
    assert tuple(student.mean.flatten().tolist()) == pytest.approx(bundle.mean)  # the dataset's, inside, once
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = student.net((x - student.mean) / student.std)
        assert torch.allclose(student(x), expected, atol=1e-6)
    assert macs_per_image(student) == _vit_tiny_macs()  # attention's products counted, for the time budget

    # the trained ViT as the teacher of a small CNN, through its dard checkpoint
    cnn_student = _cifar_run(data, model={"arch": "small_cnn"}, method=dard_method, teacher={"checkpoint": str(vit)})
    distilled = _train(cnn_student, tmp_path / "from-vit")
    assert len(_epochs(distilled)) == 1 and math.isfinite(_epochs(distilled)[0]["train_loss"])
    teacher = json.loads((distilled / "run.json").read_text())["teacher"]
    assert teacher["arch"] == f"timm:{VIT}" and teacher["kwargs"] == VIT_KWARGS


def test_timm_download_arguments_are_refused_before_timm_sees_them(timm) -> None:
    from dard.errors import DardError

    with pytest.raises(DardError, match="pretrained is not supported"):
        create_model(f"timm:{VIT}", pretrained=True, **VIT_KWARGS)
    with pytest.raises(DardError, match="timm has no model 'vit_tiny_patch16'; did you mean"):
        create_model("timm:vit_tiny_patch16")


# -- RobustBench -----------------------------------------------------------------------------------------------


def _random_zoo_weights(name: str, model_dir: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of zoo entry ``name``'s architecture, BatchNorm statistics included (so that eval mode
    uses them), saved where robustbench's loader looks, as its files hold them (``state_dict``, ``module.``)."""
    torch.manual_seed(seed)
    net = create_model(f"robustbench:{name}", num_classes=10).net
    state = {}
    for key, value in net.state_dict().items():
        if key.endswith("running_mean"):
            value = 0.1 * torch.randn_like(value)
        elif key.endswith("running_var"):
            value = torch.rand_like(value) + 0.5
        state[key] = value
    path = model_dir / "cifar10" / "Linf" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return state


@pytest.mark.parametrize(
    "name, dard_arch",
    [
        (RN18, "resnet18"),
        ("Standard", "wrn28_10"),  # RobustBench's undefended WRN-28-10
        ("Carmon2019Unlabeled", "wrn28_10"),  # carries an unused sub_block1, which dard's WRN has not
    ],
)
def test_zoo_entry_and_dards_architecture_give_the_same_logits(robustbench_utils, tmp_path, name, dard_arch) -> None:
    state = _random_zoo_weights(name, tmp_path)
    zoo_model = robustbench_utils.load_model(name, model_dir=str(tmp_path), dataset="cifar10", threat_model="Linf")
    bundle = load_dataset("cifar10", _write_cifar10(tmp_path / "data", per_batch=2))
    through_dard = load_model(bundle, "cpu", arch=f"robustbench:{name}", model_dir=tmp_path).model
    ours = create_model(dard_arch, num_classes=10).eval()  # no mean/std: the zoo's models take raw [0, 1] pixels
    ours.load_state_dict({k: v for k, v in state.items() if not k.startswith("sub_block1.")})
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference = zoo_model(x)
        assert torch.equal(through_dard(x), reference)  # robustbench's own model, no normalisation added
        assert torch.allclose(ours(x), reference, rtol=0, atol=1e-5)
        assert reference.std() > 0  # the BatchNorm statistics were random, so the logits tell inputs apart


def test_zoo_teacher_distils_and_dard_eval_attacks_it(robustbench_utils, tmp_path, monkeypatch) -> None:
    model_dir = tmp_path / "models"
    _random_zoo_weights(RN18, model_dir)
    zoo_model = robustbench_utils.load_model(RN18, model_dir=str(model_dir), dataset="cifar10", threat_model="Linf")
    # test labels are the zoo model's own predictions: clean accuracy through dard must be 100%, which a second
    # normalisation of the inputs would break for some of them
    test_x = np.random.default_rng(1).integers(0, 256, size=(3, 3072), dtype=np.uint8)
    with torch.no_grad():
        labels = zoo_model(torch.from_numpy(test_x).float().div(255).reshape(-1, 3, 32, 32)).argmax(1).tolist()
    data = _write_cifar10(tmp_path / "data", per_batch=2, test_x=test_x, test_y=labels)

    # the zoo model as the teacher of one DARD step, found through $DARD_MODEL_DIR (dard train's --teacher)
    monkeypatch.setenv("DARD_MODEL_DIR", str(model_dir))
    cfg = _cifar_run(
        data,
        model={"arch": "small_cnn"},
        method={"name": "dard", "params": {"attack": {"name": "dpgd", "steps": 1}}},
        teacher={"checkpoint": f"robustbench:{RN18}"},
    )
    run = _train(cfg, tmp_path / "student")
    assert len(_epochs(run)) == 1 and math.isfinite(_epochs(run)[0]["train_loss"])
    teacher = json.loads((run / "run.json").read_text())["teacher"]
    assert teacher["arch"] == f"robustbench:{RN18}" and str(model_dir) in json.dumps(teacher)
    monkeypatch.delenv("DARD_MODEL_DIR")

    # dard eval finds the same file through --model-dir and attacks it with PGD
    record = tmp_path / "eval.json"
    proc = run_cli(
        "eval", "--model", f"robustbench:{RN18}", "--model-dir", str(model_dir), "--data", "cifar10",
        "--data-dir", str(data), "--n", "3", "--attacks", "pgd20", "--out", str(record), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(record.read_text())
    assert rec["model"]["mean"] is None and rec["model"]["arch"] == f"robustbench:{RN18}"
    assert rec["clean"]["correct"] == rec["clean"]["total"] == 3
    assert rec["attacks"]["pgd20"]["total"] == 3 and rec["attacks"]["pgd20"]["correct"] <= 3
