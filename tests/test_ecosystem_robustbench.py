"""RobustBench zoo models by name (`robustbench:<name>`): `dard eval --model`, `--teacher`, `create_model`.

`import robustbench` imports timm and torchvision, which do not import beside the CPU-only torch 2.13.0 the tests
use (PyPI's torchvision is built against its CUDA torch), and robustbench 1.1.1 installs a top-level `tests`
package that hides this one. So dard's adapter is checked against a stand-in `robustbench` package written into
a temporary folder: the two names dard uses (`robustbench.utils.load_model`, `robustbench.model_zoo.model_dicts`)
with robustbench's documented behaviour (weights at `<model_dir>/<dataset>/<threat>/<name>.pt`, a download when
the file is absent, `torch.load` of a `state_dict` with `module.` prefixes). Its zoo lists a small network, which
normalises its inputs itself as the zoo's models do, for `digits` (the real zoo: CIFAR-10/100, ImageNet), so the
whole path runs offline in seconds. The real robustbench is tested in tests/test_ecosystem_real.py (marker
`ecosystem`, run by `make test-ecosystem`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tests.cli_checks import config_file, fails_cleanly
from tests.conftest import assert_one_line_error, run_cli, tiny_run_config

from dard.checkpoint import load_model
from dard.config import parse_config
from dard.data import load_dataset
from dard.errors import DardError
from dard.model_fit import check_stated_normalization
from dard.models import create_model

NAME = "Tiny2024Zoo"
STAND_IN = {
    # as robustbench 1.1.1's __init__ (through its eval.py): the git package's module name, not pyautoattack's
    "robustbench/__init__.py": """
        from autoattack import AutoAttack
        from autoattack.state import EvaluationState
    """,
    "robustbench/model_zoo/__init__.py": """
        import torch
        from torch import nn


        class TinyZooNet(nn.Module):
            # normalisation inside, as the zoo's models have it
            def __init__(self, in_channels=1, num_classes=10):
                super().__init__()
                self.register_buffer("mu", torch.full((1, in_channels, 1, 1), 0.3))
                self.register_buffer("sigma", torch.full((1, in_channels, 1, 1), 0.2))
                self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
                self.fc = nn.Linear(4, num_classes)

            def forward(self, x):
                h = torch.relu(self.conv((x - self.mu) / self.sigma))
                return self.fc(h.mean((2, 3)))


        ENTRY = {"model": TinyZooNet, "gdrive_id": "an-id"}
        model_dicts = {
            "digits": {"Linf": {"Tiny2024Zoo": ENTRY}},
            "cifar10": {"Linf": {"Tiny2024Zoo": {"model": lambda: TinyZooNet(3), "gdrive_id": "an-id"}}},
        }
    """,
    "robustbench/utils.py": """
        import os
        from pathlib import Path

        import torch

        from robustbench.model_zoo import model_dicts

        DOWNLOADS = []


        def load_model(model_name, model_dir="./models", dataset="cifar10", threat_model="Linf"):
            entry = model_dicts[dataset][threat_model][model_name]
            path = Path(model_dir) / dataset / threat_model / f"{model_name}.pt"
            os.makedirs(path.parent, exist_ok=True)
            if not path.is_file():
                DOWNLOADS.append(str(path))
                raise ConnectionError("no route to the download host")
            # weights_only=False: the worst case, what torch.load did by default before torch 2.6
            checkpoint = torch.load(path, map_location=torch.device("cpu"), weights_only=False)
            state = checkpoint.get("state_dict", checkpoint)
            state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
            model = entry["model"]()
            model.load_state_dict(state)
            return model.eval()
    """,
}


@pytest.fixture(autouse=True)
def _autoattack_names() -> Iterator[None]:
    """The `autoattack` names dard may give pyautoattack (dard.models.robustbench) are put back as they were."""
    names = ("autoattack", "autoattack.state")
    saved = {name: sys.modules.get(name) for name in names}
    yield
    for name, module in saved.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module


def test_robustbench_importing_autoattack_finds_pyautoattack(zoo) -> None:
    # robustbench 1.1.1 imports `autoattack` (installed from git) but depends on PyPI's pyautoattack, the same code
    import pyautoattack
    import pyautoattack.state

    for name in ("autoattack", "autoattack.state"):  # as in a new process (an earlier test may have imported it)
        sys.modules.pop(name, None)
    if importlib.util.find_spec("autoattack") is not None:
        pytest.skip("a real `autoattack` is installed here; dard uses it as it is")  # never on dard[test] alone
    assert create_model(f"robustbench:{NAME}", num_classes=10)(torch.rand(1, 3, 8, 8)).shape == (1, 10)
    assert sys.modules["autoattack"] is pyautoattack and sys.modules["autoattack.state"] is pyautoattack.state


def test_an_installed_autoattack_is_left_alone(zoo, tmp_path, monkeypatch) -> None:
    (tmp_path / "pkg" / "autoattack").mkdir()
    (tmp_path / "pkg" / "autoattack" / "__init__.py").write_text("AutoAttack = 'the git package'\n")
    (tmp_path / "pkg" / "autoattack" / "state.py").write_text("EvaluationState = None\n")
    for name in ("autoattack", "autoattack.state"):
        sys.modules.pop(name, None)
    create_model(f"robustbench:{NAME}", num_classes=10)
    assert sys.modules["autoattack"].AutoAttack == "the git package"


def _robustbench_modules() -> list[str]:
    return [m for m in sys.modules if m == "robustbench" or m.startswith("robustbench.")]


@pytest.fixture
def zoo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The stand-in package importable, the zoo's model folder ($DARD_MODEL_DIR) empty; yields that folder. The
    stand-in's modules leave sys.modules afterwards, so no other test imports them."""
    for rel, text in STAND_IN.items():
        (tmp_path / "pkg" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / rel).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path / "pkg"))
    for name in _robustbench_modules():
        monkeypatch.delitem(sys.modules, name)
    model_dir = tmp_path / "models"
    monkeypatch.setenv("DARD_MODEL_DIR", str(model_dir))
    yield model_dir
    for name in _robustbench_modules():
        if str(tmp_path) in str(getattr(sys.modules[name], "__file__", "")):
            del sys.modules[name]


def _save_weights(model_dir: Path, dataset: str = "digits") -> dict[str, torch.Tensor]:
    """Random weights for the zoo entry saved where robustbench looks, as its files hold them."""
    from dard.models.robustbench import import_robustbench

    import_robustbench("the test")  # as dard imports it (the `autoattack` name), before the test's own import
    from robustbench.model_zoo import TinyZooNet

    torch.manual_seed(1)
    state = TinyZooNet(1 if dataset == "digits" else 3).state_dict()
    path = model_dir / dataset / "Linf" / f"{NAME}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return state


def test_zoo_model_loads_by_name_without_a_second_normalisation(zoo) -> None:
    state = _save_weights(zoo)
    bundle = load_dataset("digits")
    loaded = load_model(bundle, "cpu", arch=f"robustbench:{NAME}")
    assert loaded.info["arch"] == f"robustbench:{NAME}" and loaded.info["mean"] is None
    assert loaded.info["source"] == str(zoo / "digits" / "Linf" / f"{NAME}.pt")
    from robustbench.model_zoo import TinyZooNet

    reference = TinyZooNet(1).eval()
    reference.load_state_dict(state)
    x = bundle.test.x[:8].float() / 255
    with torch.no_grad():
        assert torch.equal(loaded.model(x), reference(x))  # the zoo's own normalisation, and no other


def test_missing_weights_offline_name_the_exact_path(zoo, tmp_path) -> None:
    folder = tmp_path / "elsewhere"
    proc = run_cli("eval", "--model", f"robustbench:{NAME}", "--model-dir", str(folder), "--data", "digits")
    where = folder / "digits" / "Linf" / f"{NAME}.pt"
    assert_one_line_error(proc, "weights not found and not downloaded", f"put the file at {where}")


def test_normalization_flag_is_refused_for_a_zoo_model() -> None:
    proc = run_cli("eval", "--model", f"robustbench:{NAME}", "--normalization", "dataset")
    assert_one_line_error(proc, "a RobustBench model normalises its inputs itself")


def test_unknown_name_and_pickles_are_one_line_errors(zoo) -> None:
    bundle = load_dataset("digits")
    with pytest.raises(DardError, match="lists no digits Linf model 'Tiny2024'; did you mean Tiny2024Zoo"):
        load_model(bundle, "cpu", arch="robustbench:Tiny2024")
    path = zoo / "digits" / "Linf" / f"{NAME}.pt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "hook": Path("x")}, path)  # an object a weights-only load refuses
    with pytest.raises(DardError, match="is not loadable weights-only"):
        load_model(bundle, "cpu", arch=f"robustbench:{NAME}")


def test_missing_package_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "robustbench", None)
    with pytest.raises(DardError, match=r"needs the robustbench package: pip install 'dard\[robustbench\]'"):
        create_model(f"robustbench:{NAME}")


def test_architecture_by_name_is_untrained_and_unnormalised(zoo) -> None:
    model = create_model(f"robustbench:{NAME}", num_classes=10)
    assert model(torch.rand(2, 3, 8, 8)).shape == (2, 10)
    with pytest.raises(DardError, match="threat model must be one of Linf, L2, corruptions"):
        create_model(f"robustbench:{NAME}", threat_model="L1")


@pytest.mark.slow
def test_dard_distils_a_zoo_teacher_and_eval_attacks_it(zoo, tmp_path) -> None:
    from dard.training import train

    _save_weights(zoo)
    cfg = tiny_run_config(
        method={"name": "dard", "params": {"attack": {"name": "dpgd", "steps": 2}}},
        teacher={"checkpoint": f"robustbench:{NAME}"},
        data={"train_subset": 64, "val_size": 32, "test_subset": 16},
        optim={"epochs": 1, "batch_size": 64},
    )
    run = tmp_path / "student"
    train(parse_config(cfg), run)
    info = (run / "run.json").read_text()
    assert f'"arch": "robustbench:{NAME}"' in info and str(zoo) in info  # the teacher's provenance
    weights = zoo / "digits" / "Linf" / f"{NAME}.pt"  # and the exact weights it read
    assert json.loads(info)["teacher_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    proc = run_cli(
        "eval", "--model", f"robustbench:{NAME}", "--data", "digits", "--n", "16", "--attacks", "pgd20,apgd-ce"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"robustbench:{NAME}" in proc.stdout and "apgd-ce" in proc.stdout


def test_a_zoo_teacher_is_checked_before_the_data_loads(zoo, tmp_path, capsys) -> None:
    # an unknown zoo name (odd characters included) or a dataset the zoo has no models for was found when the
    # teacher loaded, after the data
    work = tmp_path / "work"
    work.mkdir()
    for data, name, needle in [
        ("cifar10", "Tiny2024", "RobustBench lists no cifar10 Linf model 'Tiny2024'; did you mean Tiny2024Zoo"),
        ("cifar10", "../../Tiny2024Zoo", "lists no cifar10 Linf model '../../Tiny2024Zoo'"),
        ("cifar10", "", "lists no cifar10 Linf model ''"),
        ("folder", NAME, "RobustBench has no models for dataset 'folder'"),
    ]:
        given = {"name": data, "dir": str(tmp_path / "no-data")}
        cfg = config_file(work, method={"name": "dard", "params": {}}, data=given)
        argv = ["train", "--config", cfg, "--teacher", f"robustbench:{name}", "--out", str(work / "new")]
        fails_cleanly(capsys, work, argv, needle)
        argv = ["eval", "--model", f"robustbench:{name}", "--data", data, "--data-dir", given["dir"]]
        fails_cleanly(capsys, work, argv, needle)
    # `dard eval --norm l2` of a zoo model took the Linf table's model of that name and measured it under L2
    argv = ["eval", "--model", f"robustbench:{NAME}", "--data", "digits", "--norm", "l2", "--eps", "0.5"]
    fails_cleanly(capsys, work, argv, f"RobustBench lists no digits L2 model '{NAME}'")
    # and an L2 run's teacher likewise: it was the Linf table's model of that name, whatever the run's norm
    cfg = config_file(work, method={"name": "dard", "params": {}}, data={"name": "digits"}, norm="l2")
    argv = ["train", "--config", cfg, "--teacher", f"robustbench:{NAME}", "--out", str(work / "new")]
    fails_cleanly(capsys, work, argv, f"RobustBench lists no digits L2 model '{NAME}'")


def test_a_zoo_architecture_with_external_weights_refuses_a_normalisation_it_would_drop(
    zoo, tmp_path, capsys, synthetic_cifar10_dir
) -> None:
    # `--normalization dataset` (or `teacher.normalize: true`) beside a robustbench: architecture was dropped in
    # silence (the zoo's models take raw pixels): dard eval measured the model unnormalised and its record said
    # `normalization: dataset`
    work = tmp_path / "work"
    work.mkdir()
    weights = str(tmp_path / "w.pt")
    torch.save(_save_weights(zoo, "cifar10"), weights)
    arch, data = f"robustbench:{NAME}", {"name": "cifar10", "dir": str(synthetic_cifar10_dir)}
    needle = f"does nothing for {arch}: RobustBench's architectures take raw [0, 1] pixels"
    argv = ["eval", "--model", arch, "--weights", weights, "--normalization", "dataset", "--data", data["name"]]
    argv += ["--data-dir", data["dir"], "--n", "4", "--attacks", "fgsm"]
    fails_cleanly(capsys, work, argv, f"--normalization dataset {needle}")
    teacher = {"arch": arch, "weights": weights, "normalize": True}
    cfg = config_file(work, method={"name": "dard", "params": {}}, teacher=teacher, data=data)
    argv = ["train", "--config", cfg, "--out", str(work / "new")]
    fails_cleanly(capsys, work, argv, f"teacher.normalize: true {needle}")
    check_stated_normalization(weights, False, "teacher.normalize: false", "", arch)  # raw pixels: as it loads


def test_load_model_refuses_a_normalisation_it_would_not_apply(zoo, tmp_path, synthetic_cifar10_dir) -> None:
    # the Python path beside the config's and dard eval's refusals: load_model(arch="robustbench:...", weights=...)
    # took normalize (True by default) and dropped it in silence, as it did for a zoo model by name and a checkpoint
    from dard.checkpoint import model_spec, save_checkpoint

    cifar, bundle = load_dataset("cifar10", synthetic_cifar10_dir), load_dataset("digits")
    state, _ = _save_weights(zoo, "cifar10"), _save_weights(zoo)
    arch = f"robustbench:{NAME}"
    with pytest.raises(DardError, match=f"normalize=True does nothing for {arch}: RobustBench's architectures take"):
        load_model(cifar, "cpu", arch=arch, weights=state, normalize=True)
    with pytest.raises(DardError, match=f"normalize=True does nothing for {arch}"):
        load_model(bundle, "cpu", arch=arch, normalize=True)  # the zoo's trained model by name
    assert load_model(cifar, "cpu", arch=arch, weights=state).info["mean"] is None  # unstated: raw pixels, as it is
    small = create_model("small_cnn", in_channels=1)
    raw = save_checkpoint(tmp_path / "raw", small, model_spec("small_cnn", bundle, False))
    with pytest.raises(DardError, match=r"normalize=True contradicts .*raw \[0, 1\] pixels.*leave it out"):
        load_model(bundle, "cpu", checkpoint=raw, normalize=True)
    assert load_model(bundle, "cpu", checkpoint=raw, normalize=False).info["mean"] is None  # as recorded


def test_a_zoo_teacher_is_measured_and_cached_on_its_weights_sha256(zoo, finished_run, tmp_path, monkeypatch) -> None:
    # teacher_quality left a zoo teacher out ("not a dard checkpoint"): measured now, cached on its file's SHA-256
    import dard.evaluation.suite as suite
    from dard.experiment.extras import teacher_quality
    from dard.experiment.spec import TeacherQualitySpec

    _save_weights(zoo)
    student = tmp_path / "student"
    shutil.copytree(finished_run, student)
    cfg = parse_config(
        tiny_run_config(method={"name": "dard", "params": {}}, teacher={"checkpoint": f"robustbench:{NAME}"})
    )
    spec = TeacherQualitySpec(n=16)
    measured = teacher_quality(student, cfg, spec, device="cpu")
    path = zoo / "digits" / "Linf" / f"{NAME}.pt"
    assert measured.teacher["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert measured.teacher["arch"] == f"robustbench:{NAME}" and measured.record.attacks["pgd20"].total == 16
    monkeypatch.setattr(suite, "evaluate", lambda *a, **k: pytest.fail("measured again"))
    assert teacher_quality(student, cfg, spec, device="cpu") == measured  # cached
    torch.save({"state_dict": {}}, path)  # other weights in its place: measured again (here, refused as they load)
    with pytest.raises(DardError, match="robustbench could not load it"):
        teacher_quality(student, cfg, spec, device="cpu")


def test_a_zoo_student_refuses_a_stated_normalisation_it_would_drop(zoo, tmp_path, capsys) -> None:
    # model.normalize: true beside model.arch robustbench:... was dropped in silence (model_spec gives the zoo's
    # architectures none), the run's config.yaml saying it was applied; a run folder's record, which states every
    # key, is not a statement
    from dard.training.preflight import check_config

    work = tmp_path / "work"
    work.mkdir()
    model = {"arch": f"robustbench:{NAME}", "normalize": True}
    cfg = config_file(work, model=model, data={"name": "digits"})
    argv = ["train", "--config", cfg, "--out", str(work / "new")]
    fails_cleanly(capsys, work, argv, f"model.normalize: true does nothing for robustbench:{NAME}", "drop model.norm")
    check_config(parse_config(tiny_run_config(model=model)), new_run=False)  # a resume of a recorded config
    check_config(parse_config(tiny_run_config(model={"arch": f"robustbench:{NAME}"})))  # unstated: as it always was
