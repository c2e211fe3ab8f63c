"""Models of the user's own: plain nn.Module factories (registered, or named module:function), their normalisation
wrapper and state-dict keys, checkpoints, and `dard train` / `dard eval` with them."""

from __future__ import annotations

import itertools
import json
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from tests.cli_checks import config_file, fails_cleanly
from tests.conftest import assert_one_line_error, run_cli, tiny_config
from torch import nn

from dard.checkpoint import checkpoint_meta, load_checkpoint, load_model, save_checkpoint
from dard.cli import main
from dard.config import TeacherConfig, load_config, parse_config
from dard.data import load_dataset
from dard.errors import DardError
from dard.evaluation import build_suite, evaluate
from dard.model_checks import check_batch_independent, check_input
from dard.models import ImageClassifier, PlainClassifier, create_model, register_model
from dard.training import train
from dard.training.setup import load_teacher
from dard.weights import load_weights

NETS = """
from torch import nn


def make_net(num_classes=10, in_channels=1):
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(in_channels * 16, 16), nn.ReLU(), nn.Linear(16, num_classes)
    )


def no_arguments():
    return make_net(10, 1)


def seven_classes():
    return make_net(7, 1)


def needs_depth(depth, num_classes=10):
    return make_net(num_classes)


def not_a_module():
    return 3


SHARED = make_net()


def shared():  # one instance for every call, as `MODEL = torch.hub.load(...)`; `def get(): return MODEL` gives
    return SHARED


NOT_CALLABLE = 5
"""
_names = itertools.count()


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write ``source`` as a fresh importable module in tmp_path; returns its name (dropped again at teardown)."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str = NETS) -> str:
        name = f"dard_user_nets_{next(_names)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        monkeypatch.delitem(sys.modules, name, raising=False)  # restored (i.e. removed) at teardown
        return name

    return write


def plain_mlp(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, num_classes))


register_model("test_plain_mlp")(plain_mlp)


# -- the wrapper ---------------------------------------------------------------------------------------------------


def test_plain_factory_is_wrapped_keeps_its_keys_and_normalises_inside():
    model = create_model("test_plain_mlp", num_classes=5, in_channels=3, mean=[0.5, 0.4, 0.3], std=[0.2])
    plain = plain_mlp(5).eval()
    assert isinstance(model, PlainClassifier) and isinstance(model, ImageClassifier)
    assert list(model.state_dict()) == list(plain.state_dict())  # no "net." prefix: external weights load as-is
    load_weights(model, plain.state_dict())
    x = torch.rand(4, 3, 2, 2)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1), 0.2
    assert torch.allclose(model.eval()(x), plain((x - mean) / std), atol=1e-6)
    # and back: the wrapper's state dict loads into the plain module, also nested inside another module
    other = plain_mlp(5).eval()
    other.load_state_dict(model.state_dict())
    assert torch.allclose(other((x - mean) / std), plain((x - mean) / std))
    outer = nn.Sequential(create_model("test_plain_mlp", num_classes=5, in_channels=3))
    outer.load_state_dict({f"0.{k}": v for k, v in plain.state_dict().items()})
    assert torch.equal(outer[0].net[1].weight, plain[1].weight)


def test_plain_model_checkpoint_saves_and_loads(tmp_path):
    model = create_model("test_plain_mlp", num_classes=5, in_channels=3, mean=[0.5], std=[0.25]).eval()
    spec = {"arch": "test_plain_mlp", "num_classes": 5, "in_channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}
    path = save_checkpoint(tmp_path / "m", model, spec)
    loaded, meta = load_checkpoint(path)
    x = torch.rand(4, 3, 2, 2)
    assert meta["model"] == spec and torch.equal(loaded(x), model(x))


class TiedMLP(nn.Module):
    """Two names for one layer, applied twice: two keys, one weight (tied weights)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.body, self.head = (
            nn.Sequential(nn.Flatten(), nn.Linear(12, num_classes)),
            nn.Linear(num_classes, num_classes),
        )
        self.again = self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.again(self.head(self.body(x)))


register_model("test_tied_mlp")(TiedMLP)


def test_tied_weights_checkpoint_saves_and_loads(tmp_path):
    # safetensors refuses tensors that share memory, so the first checkpoint of a CPU run of such a model failed
    # after its first epoch (on a GPU the copy to the CPU separated them)
    model = create_model("test_tied_mlp", num_classes=4, in_channels=3).eval()
    spec = {"arch": "test_tied_mlp", "num_classes": 4, "in_channels": 3, "mean": None, "std": None}
    loaded, _ = load_checkpoint(save_checkpoint(tmp_path / "m", model, spec))
    x = torch.rand(4, 3, 2, 2)
    assert torch.equal(loaded(x), model(x)) and loaded.net.again is loaded.net.head


def test_tied_weights_saved_under_one_name_load_and_two_differing_names_are_refused(tmp_path):
    # safetensors' save_model (as Hugging Face saves) keeps one name of tied tensors: the model's other name was a
    # "missing key"; and a file whose two names of one tied tensor differ loaded the last listed in silence
    from safetensors.torch import save_model

    model = create_model("test_tied_mlp", num_classes=4, in_channels=3).eval()
    save_model(model.net, str(tmp_path / "one-name.safetensors"))
    loaded = create_model("test_tied_mlp", num_classes=4, in_channels=3).eval()
    load_weights(loaded, tmp_path / "one-name.safetensors")
    x = torch.rand(4, 3, 2, 2)
    assert torch.equal(loaded(x), model(x)) and loaded.net.again is loaded.net.head
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["again.weight"] += 1
    with pytest.raises(DardError, match="tensors head.weight and again.weight differ, but the model ties them"):
        load_weights(create_model("test_tied_mlp", num_classes=4, in_channels=3), state)


def test_factory_ignoring_num_classes_is_caught_at_the_first_forward():
    register_model("test_plain_ignores_classes")(lambda: plain_mlp(7))
    model = create_model("test_plain_ignores_classes", num_classes=10)
    with pytest.raises(DardError, match="returns 7 class scores per image but was built for 10 classes"):
        model.eval()(torch.rand(2, 3, 2, 2))


# -- module:function -----------------------------------------------------------------------------------------------


def test_module_function_builds_the_users_model(user_module):
    name = user_module()
    model = create_model(f"{name}:make_net", num_classes=4, in_channels=3)
    assert isinstance(model, PlainClassifier) and model(torch.rand(2, 3, 8, 8)).shape == (2, 4)
    assert create_model(f"{name}:no_arguments", num_classes=10, in_channels=1)(torch.rand(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("{m}:nope", "module '{m}' has no attribute 'nope'"),
        ("{m}:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not a function returning an nn.Module"),
        ("{m}:not_a_module", "the factory returned a int, not an nn.Module"),
        ("{m}:needs_depth", "its factory needs 'depth'; a model factory may take only num_classes and in_channels"),
        ("no_such_module_here:make", "cannot import module 'no_such_module_here' (No module named"),
        ("{m}.sub:make", "cannot import module '{m}.sub'"),
        (":make", "expected a registered name or module:function"),
        ("{m}:", "expected a registered name or module:function"),
        ("{m}:a:b", "expected a registered name or module:function"),
    ],
)
def test_bad_module_function_is_one_line_error(user_module, spec, fragment):
    m = user_module()
    with pytest.raises(DardError) as info:
        create_model(spec.format(m=m))
    assert fragment.format(m=m) in str(info.value) and "\n" not in str(info.value)


def test_a_factory_returning_one_instance_twice_is_refused(user_module):
    # the student and a teacher of the same spec were one module (the teacher's weights loaded over the student,
    # which then froze), and in `dard experiment --jobs 1` each run's student began where the previous one ended
    spec = f"{user_module()}:shared"
    create_model(spec, num_classes=10, in_channels=1)
    with pytest.raises(DardError, match="returned a module it had returned before"):
        create_model(spec, num_classes=10, in_channels=1)


OWN_NORMALISATION = """
from torch import nn
from dard.models import ImageClassifier


class Own(ImageClassifier):
    def __init__(self, num_classes, in_channels):
        super().__init__(num_classes, in_channels)
        self.fc = nn.Linear(in_channels * 64, num_classes)

    def forward_features(self, x):
        return x.flatten(1)

    def forward_head(self, features):
        return self.fc(features)


def make(num_classes=10, in_channels=1):
    model = Own(num_classes, in_channels)
    model.set_normalization([0.5], [0.25])  # how it was trained
    return model
"""


def test_a_factorys_image_classifier_keeps_its_own_normalisation(user_module):
    # "--normalization none" (the model takes raw pixels and normalises itself) reset it to none: wrong accuracies
    spec = f"{user_module(OWN_NORMALISATION)}:make"
    assert create_model(spec, num_classes=10, in_channels=1).normalization == ([0.5], [0.25])
    assert create_model(spec, num_classes=10, in_channels=1, mean=[0.3], std=[0.2]).normalization[0] == [
        pytest.approx(0.3)
    ]


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("def make(:\n", "failed (SyntaxError: "),
        ("import no_such_dependency_xyz\n", "failed (ModuleNotFoundError: No module named 'no_such_dependency_xyz')"),
        ("raise RuntimeError('boom')\n", "failed (RuntimeError: boom)"),
    ],
)
def test_module_that_fails_to_import_is_one_line_error(user_module, source, fragment):
    m = user_module(source)
    with pytest.raises(DardError, match=r"importing module '" + m + "' failed") as info:
        create_model(f"{m}:make")
    assert fragment in str(info.value)


UNUSABLE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, out=None, trainable=True):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.fc.requires_grad_(trainable)
        self.out = out

    def forward(self, x):
        logits = self.fc(x.flatten(1))
        return self.out(logits, x) if self.out else logits


def frozen():
    return Net(trainable=False)


def detached():
    return Net(lambda logits, x: logits.detach())


def no_parameters():
    return nn.Sequential(nn.Flatten(), nn.Unflatten(1, (64,)), nn.AdaptiveAvgPool1d(10))


def changes_its_input(num_classes):
    return Net(lambda logits, x: (x.mul_(0.5), logits)[1])


def on_the_meta_device():
    return Net().to("meta")


def lazy():
    net = Net()
    net.fc = nn.LazyLinear(10)
    return net


def batch_statistics():
    return Net(lambda logits, x: logits - logits.mean(0))


def logits_and_features():
    return Net(lambda logits, x: (logits, x.flatten(1)))
"""


@pytest.mark.parametrize(
    "factory, needles",
    [
        ("frozen", ["has no trainable parameters"]),
        ("no_parameters", ["has no trainable parameters"]),
        ("detached", ["returns logits without a gradient"]),
        ("changes_its_input", ["gradient cannot be computed", "in place"]),
        ("on_the_meta_device", ["the meta device", "tensor 'fc.weight'"]),
        # trained for the whole run, then an internal error when its checkpoint was loaded for the final evaluation
        ("lazy", ["uninitialised lazy parameters", "tensor 'fc.weight'"]),
        # trained and evaluated: its accuracy depended on the evaluation's batch size and AutoAttack's order
        ("batch_statistics", ["depend on the other images in the batch"]),
        # was "cannot take the dataset's images (DardError: ...)" with the hint cut, after probing image sizes to 1024
        ("logits_and_features", ["returned a tuple of 2", "output[0] or output['logits']"]),
    ],
)
def test_models_dard_cannot_train_or_attack_are_refused_before_any_work(
    factory, needles, user_module, tmp_path, capsys
):
    # each reached the net as an internal error: at the optimizer, the first backward or attack, the move to the device
    spec = f"{user_module(UNUSABLE)}:{factory}"
    work = tmp_path / "work"  # not the module's folder, where the import writes __pycache__
    work.mkdir()
    cfg = config_file(work, model={"arch": spec})
    fails_cleanly(capsys, work, ["train", "--config", cfg, "--out", str(work / "run")], spec, *needles)
    if factory in ("changes_its_input", "on_the_meta_device", "lazy"):  # the others evaluate: attacks need no weights
        weights = work / "w.safetensors"
        save_file({"fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)}, str(weights))
        argv = ["eval", "--model", spec, "--weights", str(weights), "--normalization", "none", "--data", "digits"]
        fails_cleanly(capsys, work, argv, *needles)


def test_a_randomised_model_is_not_taken_for_one_that_depends_on_its_batch():
    # noise in forward (evaluated with EOT) makes two calls differ; it is not judged, and draws from a forked stream
    class Noisy(nn.Module):
        def forward(self, x):
            return x.flatten(1) + torch.randn(x.shape[0], 64)

    x, rng = torch.rand(2, 1, 8, 8), torch.get_rng_state()
    check_batch_independent(Noisy(), x, "model 'noisy'")
    assert torch.equal(torch.get_rng_state(), rng)
    with pytest.raises(DardError, match="m fails on a single image"):  # batch statistics of one image
        check_batch_independent(nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64, track_running_stats=False)), x, "m")


ONLY_SMALL_BATCHES = """
import torch
from torch import nn


class OnlySmallBatches(nn.Module):
    def __init__(self, num_classes=10, in_channels=1):
        super().__init__()
        self.pool, self.fc = nn.AdaptiveAvgPool2d(4), nn.Linear(in_channels * 16, num_classes)

    def forward(self, x):
        if x.shape[0] > 2:  # dard's checks probe 2 images; a real batch breaks it
            x = x.reshape(3, -1)
        return self.fc(torch.flatten(self.pool(x), 1))


def make(num_classes=10, in_channels=1):
    return OnlySmallBatches(num_classes, in_channels)
"""


def test_a_failure_in_the_users_forward_names_their_code_not_a_dard_bug(user_module, tmp_path, monkeypatch, capsys):
    # it passed the checks and failed on the first real batch: the net called it an internal error of dard's
    monkeypatch.setenv("DARD_LOG_DIR", str(tmp_path / "logs"))
    spec = f"{user_module(ONLY_SMALL_BATCHES)}:make"
    weights = tmp_path / "w.safetensors"
    save_file(create_model(spec, num_classes=10, in_channels=1).net.state_dict(), str(weights))
    argv = ["eval", "--model", spec, "--weights", str(weights), "--normalization", "none", "--data", "digits"]
    line = fails_cleanly(capsys, None, [*argv, "--n", "8", "--attacks", "fgsm", "--no-progress"], "RuntimeError")
    assert line.startswith(f"dard: error: your code failed at {tmp_path / spec.split(':')[0]}.py:") and "logs" in line


LIBRARY_LAYERS_ONLY = """
from torch import nn


def make(num_classes=10, in_channels=1):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, 16), nn.BatchNorm1d(16), nn.Linear(16, num_classes))
"""


def test_a_failure_in_a_users_model_of_library_layers_alone_is_theirs(user_module, tmp_path, monkeypatch, capsys):
    # BatchNorm1d cannot train on a batch of one: no frame of the user's file is in the traceback, only torch's below
    # dard's PlainClassifier.forward, and the net called it an internal error of dard's (exit 1)
    monkeypatch.setenv("DARD_LOG_DIR", str(tmp_path / "logs"))
    cfg = config_file(tmp_path, model={"arch": f"{user_module(LIBRARY_LAYERS_ONLY)}:make"}, optim={"batch_size": 1})
    line = fails_cleanly(capsys, None, ["train", "--config", cfg, "--out", str(tmp_path / "run")], "ValueError")
    assert line.startswith("dard: error: your code failed at ") and "torch" in line and "per channel" in line


@pytest.mark.slow
def test_a_failure_in_the_users_forward_in_an_experiment_worker_is_the_same_line(user_module, tmp_path, monkeypatch):
    # `--jobs 2` trains in spawned workers: the exception reached the parent pickled, its traceback as text, and the
    # net called it an internal error of dard's (exit 1) where `--jobs 1` named the user's file (exit 2)
    monkeypatch.setenv("DARD_LOG_DIR", str(tmp_path / "logs"))
    spec = f"{user_module(ONLY_SMALL_BATCHES)}:make"
    folder = tmp_path / "experiments" / "tiny"
    folder.mkdir(parents=True)
    base = tiny_config(model={"arch": spec}, eval={"attacks": ["fgsm"]}, speed={"threads": 1})
    (folder / "base.yaml").write_text(yaml.safe_dump(base))
    runs = {"nat": {"method": {"name": "natural", "params": {}}}}
    exp = {"title": "t", "about": "a", "caveat": "c", "base": "base.yaml", "seeds": [0, 1], "runs": runs}
    (folder / "cpu.yaml").write_text(yaml.safe_dump(exp))
    argv = ["experiment", "tiny", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res"), "--jobs", "2"]
    proc = run_cli(*argv, cwd=tmp_path)
    assert_one_line_error(proc, f"your code failed at {tmp_path / spec.split(':')[0]}.py:", "RuntimeError", "logs")


GLOBAL_STATE = """
import torch
from torch import nn

torch.set_grad_enabled(False)  # an inference script's habit, at import


def make(num_classes=10, in_channels=1):
    torch.set_default_dtype(torch.float64)  # the model is built in float64
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, num_classes))


def bf16(num_classes=10, in_channels=1):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, num_classes)).to(torch.bfloat16)
"""


def test_a_users_factory_leaves_torchs_global_settings_as_they_were(user_module, tmp_path, capsys):
    # set_grad_enabled(False) in the user's module ended `dard train` at its first step as an internal error; a
    # default dtype or thread count set there went on into the whole run
    threads, name = torch.get_num_threads(), user_module(GLOBAL_STATE)
    model = create_model(f"{name}:make", num_classes=10, in_channels=1)
    assert torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32
    assert torch.get_num_threads() == threads
    # what the factory built keeps its dtype; it gets the images in it and gives float32 logits
    x = torch.rand(3, 1, 8, 8)
    assert model.net[1].weight.dtype == torch.float64 and model(x).dtype == torch.float32
    assert torch.equal(model(x), model.net(x.double()).float())
    work = tmp_path / "work"
    work.mkdir()
    for factory in ("make", "bf16"):  # the students train; a model of another dtype was refused before
        out = work / factory
        assert (
            main(["train", "--config", config_file(work, model={"arch": f"{name}:{factory}"}), "--out", str(out)]) == 0
        )
        assert load_checkpoint(out, arch=f"{name}:{factory}")[0](x).dtype == torch.float32


# -- train, checkpoints and eval -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_run(tmp_path_factory) -> tuple[Path, str]:
    """A one-epoch digits run of a module:function model; the module's folder stays on sys.path for the module."""
    folder = tmp_path_factory.mktemp("user_code")
    name = f"dard_user_nets_{next(_names)}"
    (folder / f"{name}.py").write_text(NETS)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(folder))
        spec = f"{name}:make_net"
        cfg = tiny_config(model={"arch": spec}, eval={"attacks": ["fgsm"], "batch_size": 512})
        yield train(parse_config(cfg), folder / "run"), spec
        sys.modules.pop(name, None)


@pytest.mark.slow
def test_train_records_the_spec_and_loads_only_when_it_is_named(user_run):
    run, spec = user_run
    assert load_config(None, [f"model.arch={spec}"]).model.arch == spec  # what `dard train --model SPEC` sets
    _, meta = checkpoint_meta(run, spec)
    assert meta["model"]["arch"] == spec and (run / "eval" / "best.json").exists()
    with pytest.raises(DardError, match=f"the model is user code '{spec}', which dard imports only when you name it"):
        load_checkpoint(run)
    with pytest.raises(DardError, match=f"holds a '{spec}' model, not 'small_cnn'"):
        load_checkpoint(run, arch="small_cnn")
    model, _ = load_checkpoint(run, arch=spec)
    assert isinstance(model, PlainClassifier) and model.normalization[0] == pytest.approx([0.30535638])


@pytest.mark.slow
def test_eval_cli_rebuilds_the_users_model(user_run, capsys):
    run, spec = user_run
    common = [str(run), "--data", "digits", "--n", "20", "--attacks", "fgsm", "--eps", "0.1", "--no-progress"]
    assert main(["eval", *common, "--model", spec]) == 0
    assert f"model: {spec}" in capsys.readouterr().out
    assert main(["eval", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--model {spec} (dard eval)" in err


@pytest.mark.slow
def test_eval_cli_says_when_the_recorded_module_cannot_be_imported(user_run, capsys, monkeypatch):
    run, spec = user_run
    module = spec.split(":")[0]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(run.parent)])  # as if run from elsewhere
    monkeypatch.delitem(sys.modules, module)
    assert main(["eval", str(run), "--data", "digits", "--model", spec, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"dard: error: model '{spec}': cannot import module '{module}'") and "\n" not in err


@pytest.mark.slow
def test_teacher_from_user_code_weights_or_checkpoint(user_run, tmp_path):
    run, spec = user_run
    bundle = load_dataset("digits")
    weights = tmp_path / "teacher.pt"
    torch.save(load_checkpoint(run, arch=spec)[0].state_dict(), weights)
    from_weights, info = load_teacher(
        TeacherConfig(arch=spec, weights=str(weights)), bundle, torch.device("cpu"), "Linf"
    )
    from_checkpoint, _ = load_teacher(
        TeacherConfig(checkpoint=str(run), arch=spec), bundle, torch.device("cpu"), "Linf"
    )
    x = bundle.test.x[:8].float() / 255
    assert info["arch"] == spec and torch.equal(from_weights(x), from_checkpoint(x))
    assert all(not p.requires_grad for p in from_weights.parameters())
    with pytest.raises(DardError, match="teacher.arch="):
        load_model(bundle, "cpu", checkpoint=run, what="teacher")


WIDTH_OF_ITS_ARGUMENT = """
from torch import nn


def make(num_classes=10, in_channels=1, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
"""


def test_eval_passes_model_args_to_the_factory_of_external_weights(user_module, tmp_path, capsys):
    # external weights of a factory built with other arguments (a timm ViT's img_size, a net's width) could not be
    # evaluated: dard eval had no way to give the factory its keyword arguments, as a config's model.kwargs does
    spec = f"{user_module(WIDTH_OF_ITS_ARGUMENT)}:make"
    weights = tmp_path / "w.safetensors"
    save_file(create_model(spec, num_classes=10, in_channels=1, hidden=32).net.state_dict(), str(weights))
    out = tmp_path / "r.json"
    argv = ["eval", "--model", spec, "--weights", str(weights), "--normalization", "none", "--data", "digits"]
    argv += ["--n", "16", "--attacks", "fgsm", "--no-progress"]
    fails_cleanly(capsys, None, argv, "architecture mismatch")  # the factory's default width: the weights do not fit
    assert main([*argv, "--model-arg", "hidden=32", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["model"]["kwargs"] == {"hidden": 32}
    for bad, needle in [
        (["--model-arg", "hidden"], "must look like KEY=VALUE"),
        (["--model-arg", "hidden=32", "--model-arg", "hidden=8"], "given twice"),
        (["--model-arg", "num_classes=3"], "num_classes"),
        (["--model-arg", "hidden=2020-01-01"], "got a date"),
        # a misspelt argument was found when the model was built, after the data had loaded: here it is missing
        (["--model-arg", "hiden=32", "--data", "cifar10", "--data-dir", str(tmp_path)], "takes no argument 'hiden'"),
    ]:
        fails_cleanly(capsys, None, [*argv, *bad], needle)


WARNS_AT_IMPORT_AND_IN_ITS_FACTORY = """
import warnings

from torch import nn

warnings.warn("this module is old")


def make(num_classes=10, in_channels=1, hidden=16):
    warnings.warn("the factory says hello", FutureWarning)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
"""


@pytest.mark.slow
def test_a_users_warnings_never_come_before_the_error_line(user_module, tmp_path):
    # the module's and the factory's own warnings reached stderr at once: a model that then failed to load gave
    # four lines before the error. They are held now: dropped with a failure, shown once the model loads.
    spec = f"{user_module(WARNS_AT_IMPORT_AND_IN_ITS_FACTORY)}:make"
    weights = tmp_path / "w.safetensors"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_file(create_model(spec, num_classes=10, in_channels=1, hidden=32).net.state_dict(), str(weights))
    argv = ["eval", "--model", spec, "--weights", str(weights), "--normalization", "none", "--data", "digits"]
    argv += ["--n", "8", "--attacks", "fgsm", "--no-progress"]
    assert_one_line_error(run_cli(*argv, cwd=tmp_path, isolated=True), "architecture mismatch")
    loaded = run_cli(*argv, "--model-arg", "hidden=32", cwd=tmp_path, isolated=True)
    assert loaded.returncode == 0, loaded.stderr
    assert (
        "UserWarning: this module is old" in loaded.stderr and "FutureWarning: the factory says hello" in loaded.stderr
    )


NAN_LOGITS = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, brightest=0.0):
        super().__init__()
        self.fc = nn.Linear(in_channels * 64, num_classes)
        self.brightest = brightest  # images brighter than this on average get NaN logits

    def forward(self, x):
        out = self.fc(x.flatten(1))
        bad = (x.flatten(1).mean(1) > self.brightest)[:, None]
        return torch.where(bad, torch.full_like(out, float("nan")), out)


def make(num_classes=10, in_channels=1):
    return Net(num_classes, in_channels)
"""


def test_a_model_with_nan_logits_is_refused_not_measured(user_module, tmp_path, capsys):
    # NaN logits (finite weights) were argmax'ed into a class, usually 0: `dard eval` printed an accuracy for them
    # and a teacher taught them; now the load refuses them, and the evaluation for images the probe did not see
    name = user_module(NAN_LOGITS)
    weights = tmp_path / "w.safetensors"
    save_file(create_model(f"{name}:make", num_classes=10, in_channels=1).state_dict(), str(weights))
    root = tmp_path / "w"
    root.mkdir()
    argv = ["eval", "--model", f"{name}:make", "--weights", str(weights), "--normalization", "none"]
    fails_cleanly(capsys, root, [*argv, "--data", "digits", "--n", "8"], "returns NaN or infinite logits")
    teacher = {"arch": f"{name}:make", "weights": str(weights), "normalize": False}
    cfg = config_file(root, method={"name": "dard", "params": {}}, teacher=teacher)
    fails_cleanly(capsys, root, ["train", "--config", cfg, "--out", str(root / "r")], "teacher", "NaN")
    model = sys.modules[name].Net(brightest=0.3)
    test = load_dataset("digits").test
    x, y = test.x[:64].float() / 255, test.y[:64]
    bright = int((x.flatten(1).mean(1) > 0.3).sum())
    assert 0 < bright < 64
    with pytest.raises(DardError, match=f"NaN or infinite logits for {bright} of 64 clean images"):
        evaluate(create_model(model, in_channels=1), x, y, build_suite(["fgsm"], eps=0.1))


class _NanOffTheImages(nn.Module):
    """Finite logits for the images it was shown, NaN for any other input: a model an attack breaks."""

    def __init__(self, seen: torch.Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.register_buffer("seen", seen.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x.flatten(1))
        known = (x.flatten(1)[:, None, :] == self.seen[None]).all(-1).any(1)[:, None]
        return torch.where(known, out, torch.full_like(out, float("nan")))


def test_nan_logits_under_attack_count_as_wrong_with_a_warning():
    # an attack that drives the model to NaN has beaten it: argmax of a NaN row picked class 0, which counted as
    # an answer for the images of class 0; now the image counts as misclassified and the record says why
    test = load_dataset("digits").test
    x, y = test.x[:64].float() / 255, test.y[:64]
    torch.manual_seed(0)
    model = create_model(_NanOffTheImages(x), in_channels=1)
    record = evaluate(model, x, y, build_suite(["fgsm"], eps=0.1))
    assert record.clean.correct > 0
    fgsm = next(iter(record.attacks.values()))
    assert fgsm.correct == 0
    assert any("NaN or infinite logits for 64 attacked image(s)" in w for w in fgsm.warnings)


def _build_then_fail(spec: str) -> str:
    create_model(spec, num_classes=10, in_channels=1)
    raise DardError("the weights do not fit")


def test_a_users_warnings_in_an_experiment_worker_wait_for_the_load_too(user_module):
    # a worker of `dard experiment --jobs N` runs outside the command's hold: the warnings of a model whose load
    # then failed reached stderr beside the one line the parent prints
    from dard.experiment.pool import _in_worker

    spec = f"{user_module(WARNS_AT_IMPORT_AND_IN_ITS_FACTORY)}:make"
    with warnings.catch_warnings(record=True) as shown, pytest.raises(DardError, match="do not fit"):
        warnings.simplefilter("always")
        _in_worker(_build_then_fail, spec)
    assert shown == []


FAILS_WHATEVER_THE_SIZE = """
import torch
from torch import nn

CALLS = []


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(1, num_classes)

    def forward(self, x):
        CALLS.append(tuple(x.shape))
        return self.fc(undefined_name)


def make(num_classes=10):
    return Net(num_classes)
"""


def test_a_model_failing_for_another_reason_than_the_size_is_not_probed_at_every_size(user_module):
    # after a failure that is not about the image size (here a NameError), the minimum-size probe still ran the
    # model on every size up to 1024x1024 (minutes for a large model on a CPU) and then gave the first error anyway
    name = user_module(FAILS_WHATEVER_THE_SIZE)
    model = create_model(f"{name}:make", num_classes=10, in_channels=1)
    x = load_dataset("digits").test.x[:2].float() / 255
    with pytest.raises(DardError, match=r"cannot take the dataset's 1x8x8 images \(NameError: name 'undefined_name'"):
        check_input(model, x, 10, "model")
    assert sys.modules[name].CALLS == [(2, 1, 8, 8)]


def test_a_teacher_from_weights_takes_its_factorys_kwargs(user_module, tmp_path, capsys):
    # teacher: {arch, weights} built the factory with its defaults: weights of another width (a timm ViT's img_size)
    # could not teach, while the student had model.kwargs and dard eval --model-arg
    spec = f"{user_module(WIDTH_OF_ITS_ARGUMENT)}:make"
    weights = tmp_path / "w.safetensors"
    save_file(create_model(spec, num_classes=10, in_channels=1, hidden=32).net.state_dict(), str(weights))
    teacher = {"arch": spec, "weights": str(weights), "normalize": False}
    bundle = load_dataset("digits")
    model, info = load_teacher(TeacherConfig(**teacher, kwargs={"hidden": 32}), bundle, torch.device("cpu"), "Linf")
    assert info["kwargs"] == {"hidden": 32} and model.net[1].out_features == 32
    with pytest.raises(DardError, match="architecture mismatch"):
        load_teacher(TeacherConfig(**teacher), bundle, torch.device("cpu"), "Linf")
    # the checks of model.kwargs: plain data, not what dard sets, and only where they reach a factory
    for kwargs, needle in [
        ({"num_classes": 3}, "num_classes comes from the dataset"),
        ({"when": yaml.safe_load("2020-01-01")}, "got a date"),
    ]:
        with pytest.raises(DardError, match=needle):
            parse_config({"teacher": {**teacher, "kwargs": kwargs}})
    with pytest.raises(DardError, match="kwargs is for arch . weights"):
        parse_config({"teacher": {"checkpoint": "runs/t", "kwargs": {"hidden": 32}}})
    # through dard train: the teacher is checked before any work, and run.json records what built it
    root = tmp_path / "w"
    root.mkdir()
    cfg = config_file(root, method={"name": "dard", "params": {}}, teacher=teacher)
    argv = ["train", "--config", cfg, "--out", str(root / "run")]
    fails_cleanly(capsys, root, argv, "architecture mismatch")
    assert main([*argv, "--set", "teacher.kwargs={hidden: 32}"]) == 0
    assert json.loads((root / "run" / "run.json").read_text())["teacher"]["kwargs"] == {"hidden": 32}
    assert yaml.safe_load((root / "run" / "config.yaml").read_text())["teacher"]["kwargs"] == {"hidden": 32}
