"""The offline GPU bundle (tools/bundle/, docs/gpu.md), tested without network or GPU.

- wheel surgery: a stripped wheel keeps a RECORD that matches every byte; a wheel rebuilt from this environment too;
- packing: a step folder becomes <= max_files files of <= max_file bytes (split, then largest files dropped);
- the job runner: each step packed as it ends, a step stopped at its limit still packed, SIGTERM to the job too;
  no limits unless given as options or by the bundle (make_bundle's job defaults in MANIFEST.json);
- compact CIFAR-10: pack -> build -> dard's loader gives the labels, the exact rows exactly, the rest close;
  the bundle's builder gives the same folder as the build.py a compact development copy carries ($DARD_DATA_DIR);
- end to end: a bundle made from this environment's packages installed on a simulated node (a Python that has
  torch and the rest but no pydantic/pyautoattack/dard) with pip --no-index, then the GPU job dry-run on the
  CPU: CUDA tests (skipped), the benchmark's smoke settings and a command, within the limits.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import REPO
from tools.bundle import cifar10_npz
from tools.bundle.pack import Limits, pack_folder
from tools.bundle.wheels import strip_wheel, verify_wheel, wheel_from_installed, write_wheel

from dard.data import load_dataset

JOB = REPO / "tools" / "bundle" / "job.py"
MIB = 2**20
# One job system's limits (the ones `make bundle` gives): 8 files of 16 MiB, 64 MiB in all
JOB_LIMITS = Limits(8, 16 * MIB, 64 * MIB)
JOB_OPTIONS = ["--max-files", "8", "--max-file-mib", "16", "--max-total-mib", "64"]


def _unpack(out: Path, stem: str) -> dict[str, bytes]:
    """Members of ``out/<stem>.tar.gz`` (or of its concatenated parts) by name."""
    parts = sorted(out.glob(f"{stem}.tar.gz*"))
    blob = b"".join(p.read_bytes() for p in parts)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _assert_within(out: Path, limits: Limits) -> None:
    files = [p for p in out.rglob("*") if p.is_file()]
    assert all(p.parent == out for p in files), files  # nothing left in step folders
    assert len(files) <= limits.max_files, [p.name for p in files]
    assert all(p.stat().st_size <= limits.max_file for p in files)
    assert sum(p.stat().st_size for p in files) <= limits.max_total


# -- wheels ------------------------------------------------------------------------------------------------------


def test_strip_wheel_keeps_a_matching_record(tmp_path):
    whl = tmp_path / "demo-1.0-py3-none-any.whl"
    files = {
        "demo/__init__.py": b"x = 1\n",
        "demo/examples/model_test.pt": os.urandom(5000),
        "demo/examples/eval.py": b"print()\n",
        "demo-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n",
        "demo-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "demo-1.0.dist-info/RECORD": b"",
    }
    write_wheel(whl, files)
    verify_wheel(whl)
    assert strip_wheel(whl, whl, ["demo/examples/*.pt"]) == ["demo/examples/model_test.pt"]
    verify_wheel(whl)
    with zipfile.ZipFile(whl) as zf:
        assert sorted(zf.namelist()) == sorted(n for n in files if not n.endswith(".pt"))
        assert zf.read("demo/examples/eval.py") == b"print()\n"
    tampered = tmp_path / "bad-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, b"y = 2\n" if name == "demo/__init__.py" else src.read(name))
    with pytest.raises(ValueError, match="demo/__init__.py"):
        verify_wheel(tampered)


def test_wheel_rebuilt_from_this_environment_is_valid(tmp_path):
    whl = wheel_from_installed("iniconfig", tmp_path)
    verify_wheel(whl)
    with zipfile.ZipFile(whl) as zf:
        names = zf.namelist()
    assert whl.name.startswith("iniconfig-") and "iniconfig/__init__.py" in names
    assert not any(n.endswith(("INSTALLER", "direct_url.json")) or "__pycache__" in n for n in names)


# -- packing -----------------------------------------------------------------------------------------------------


def test_pack_folder_splits_then_drops_the_largest_files(tmp_path):
    def folder(name: str) -> Path:
        d = tmp_path / name
        (d / "sub").mkdir(parents=True)
        (d / "big.bin").write_bytes(os.urandom(250_000))  # random: gzip cannot shrink it
        (d / "sub" / "note.txt").write_text("kept\n")
        return d

    out = tmp_path / "out"
    out.mkdir()
    split = pack_folder(folder("a"), out, "a", slots=4, space=10**6, part=100_000)
    assert split.files == ["a.tar.gz.000", "a.tar.gz.001", "a.tar.gz.002"] and not split.dropped
    assert all((out / f).stat().st_size <= 100_000 for f in split.files)
    assert set(_unpack(out, "a")) == {"a/big.bin", "a/sub/note.txt"} and not (tmp_path / "a").exists()
    dropped = pack_folder(folder("b"), out, "b", slots=1, space=10**6, part=100_000)
    assert dropped.files == ["b.tar.gz"] and dropped.dropped == ["big.bin"]
    members = _unpack(out, "b")
    assert members["b/sub/note.txt"] == b"kept\n" and b"big.bin" in members["b/DROPPED.txt"]
    assert pack_folder(tmp_path / "absent", out, "c", slots=1, space=10**6, part=100_000).files == []
    nothing = pack_folder(folder("d"), out, "d", slots=0, space=10**6, part=100_000)  # no file left to fill
    assert nothing.files == [] and nothing.dropped == ["big.bin", "sub/note.txt"] and not (tmp_path / "d").exists()


# -- the job runner ----------------------------------------------------------------------------------------------


def _job(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(JOB), "--no-setup", *args], capture_output=True, text=True, timeout=timeout
    )


def test_job_packs_each_step_within_the_limits(tmp_path):
    out = tmp_path / "out"
    cmd = "echo hello; head -c 1500000 /dev/urandom > $STEP_OUT/big.bin; echo done > $STEP_OUT/small.txt; exit 3"
    proc = _job("--out", str(out), "--max-files", "5", "--max-file-mib", "1", "--", cmd)
    assert proc.returncode == 1, proc.stderr
    record = json.loads((out / "job.json").read_text())
    (step,) = record["steps"]
    assert (step["name"], step["status"], step["rc"], step["dropped"]) == ("command", "failed", 3, [])
    assert step["files"] == ["0-command.tar.gz.000", "0-command.tar.gz.001"] and record["finished"]
    _assert_within(out, Limits(5, MIB, 64 * MIB))
    members = _unpack(out, "0-command")
    assert len(members["0-command/big.bin"]) == 1_500_000 and members["0-command/small.txt"] == b"done\n"
    assert b"hello" in members["0-command/output.txt"] and "hello" in (out / "log.txt").read_text()
    # three files in all: the big one must go, the rest still comes back
    proc = _job("--out", str(tmp_path / "few"), "--max-files", "3", "--max-file-mib", "1", "--", cmd)
    (step,) = json.loads((tmp_path / "few" / "job.json").read_text())["steps"]
    assert step["files"] == ["0-command.tar.gz"] and step["dropped"] == ["big.bin"]
    assert _unpack(tmp_path / "few", "0-command")["0-command/small.txt"] == b"done\n"
    # an output folder that is not empty is refused: nothing on disk is overwritten
    again = _job("--out", str(out), "--", "true")
    assert again.returncode == 2 and "not empty" in again.stderr


def test_job_sigterm_stops_the_step_and_still_packs(tmp_path):
    out = tmp_path / "out"
    cmd = "echo partial > $STEP_OUT/partial.txt; echo ready; sleep 60"
    proc = subprocess.Popen([sys.executable, str(JOB), "--no-setup", "--out", str(out), *JOB_OPTIONS, "--", cmd])
    try:
        deadline = time.monotonic() + 30
        while not (out / "0-command" / "partial.txt").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    record = json.loads((out / "job.json").read_text())
    assert [s["status"] for s in record["steps"]] == ["stopped"]
    assert _unpack(out, "0-command")["0-command/partial.txt"] == b"partial\n"
    _assert_within(out, JOB_LIMITS)


def test_job_stops_a_step_at_its_limit_and_still_packs(tmp_path):
    out = tmp_path / "out"
    cmd = "echo partial > $STEP_OUT/partial.txt; sleep 60"
    started = time.monotonic()
    proc = _job("--out", str(out), "--command-limit", "1", *JOB_OPTIONS, "--", cmd)
    assert proc.returncode == 1 and time.monotonic() - started < 30, proc.stderr
    (step,) = json.loads((out / "job.json").read_text())["steps"]
    assert (step["status"], step["reason"]) == ("timed-out", "stopped at its 1 s limit")
    assert _unpack(out, "0-command")["0-command/partial.txt"] == b"partial\n"
    _assert_within(out, JOB_LIMITS)
    # a budget that leaves less than MIN_STEP_S after the packing reserve: the step does not start
    proc = _job("--out", str(tmp_path / "late"), "--budget", "20", "--", "touch $STEP_OUT/ran")
    (step,) = json.loads((tmp_path / "late" / "job.json").read_text())["steps"]
    assert proc.returncode == 1 and step["status"] == "skipped" and "of the budget left" in step["reason"]
    assert not list((tmp_path / "late").rglob("ran"))


def test_job_has_no_limits_unless_given_and_takes_the_bundles_defaults(tmp_path):
    cmd = "head -c 1500000 /dev/urandom > $STEP_OUT/big.bin; echo done > $STEP_OUT/small.txt"
    proc = _job("--out", str(tmp_path / "free"), "--", cmd)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "free" / "job.json").read_text())
    (step,) = record["steps"]
    assert record["budget_s"] is None and set(record["limits"].values()) == {None}
    assert step["limit_s"] is None and step["files"] == ["0-command.tar.gz"] and step["dropped"] == []
    # in a bundle, the limits it was made with (MANIFEST.json's job_defaults) are the defaults
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for name in ("job.py", "pack.py"):
        shutil.copy(JOB.with_name(name), bundle / name)
    defaults = {"budget": 300, "max_files": 3, "max_file_mib": 1, "max_total_mib": 64}
    (bundle / "MANIFEST.json").write_text(json.dumps({"job_defaults": defaults}))
    out = tmp_path / "bounded"
    proc = subprocess.run(
        [sys.executable, str(bundle / "job.py"), "--no-setup", "--out", str(out), "--", cmd],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "job.json").read_text())
    (step,) = record["steps"]
    assert record["budget_s"] == 300 and record["limits"] == {"max_files": 3, "max_file": MIB, "max_total": 64 * MIB}
    assert step["files"] == ["0-command.tar.gz"] and step["dropped"] == ["big.bin"]
    _assert_within(out, Limits(3, MIB, 64 * MIB))


@pytest.mark.slow
def test_job_experiment_step_imports_earlier_runs_trains_within_its_budget_and_exports(tmp_path):
    from tests.test_budget import _experiment

    from dard.config import parse_config
    from dard.experiment import deep_merge
    from dard.run_dir.archive import export_runs
    from dard.training import train

    exp = _experiment(tmp_path, runs=("sat",))  # experiments/tiny/cpu.yaml: a SAT teacher, a SAT student
    teacher = parse_config(deep_merge(exp.base, {**exp.spec.teacher.config, "name": "teacher-s0", "device": "cpu"}))
    train(teacher, tmp_path / "teachers" / "teacher-s0")  # a committed teacher
    from tools.bundle import make_bundle  # an earlier job's archive (here of the same teacher), carried in the bundle

    make_bundle.add_imports(
        tmp_path / "step" / "imports", [export_runs([tmp_path / "teachers" / "teacher-s0"], tmp_path / "t.tar.gz")]
    )
    shutil.copy(REPO / "tools" / "bundle" / "experiment_step.sh", tmp_path / "step")
    out = tmp_path / "out"
    cmd = ["bash", str(tmp_path / "step" / "experiment_step.sh"), sys.executable, "300", str(tmp_path / "runs")]
    proc = subprocess.run(
        [*cmd, "cpu", str(out), "experiments/tiny/cpu.yaml"], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")}, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout
    assert "teacher-s0: added" in log and "teacher-s0: unchanged" in log  # from teachers/, then from imports/
    assert "[budget] teacher-s0: done (reused)" in log and "[budget] sat-s0: done" in log  # the student trained here
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["sat-s0.tar.gz"]  # exported as it finished
    assert (out / "results" / "tiny" / "report.md").is_file()


# -- compact CIFAR-10 --------------------------------------------------------------------------------------------


def _smooth_rows(n: int, seed: int) -> np.ndarray:
    """Smooth colour gradients (what JPEG keeps well), official CHW-flattened rows."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, 32)
    img = rng.uniform(40, 200, (n, 3, 1, 1)) + rng.uniform(-40, 40, (n, 3, 1, 1)) * (ramp[:, None] + ramp[None, :])
    return img.clip(0, 255).astype(np.uint8).reshape(n, -1)


def test_compact_cifar_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10_npz, "EXACT_PER_BATCH", 2)  # rows 0-1 of each batch exact, the rest JPEG
    rows = {"train": _smooth_rows(20, 0), "test": _smooth_rows(6, 1)}
    labels = {"train": np.arange(20) % 10, "test": np.arange(6)[::-1] % 10}
    cifar10_npz.pack_rows({k: (rows[k], labels[k]) for k in rows}, tmp_path / "npz")
    cifar10_npz.build(tmp_path / "npz", tmp_path / "built")
    bundle = load_dataset("cifar10", tmp_path / "built")
    for split, images in (("train", bundle.train), ("test", bundle.test)):
        got = images.x.reshape(len(images), -1).numpy()
        assert np.array_equal(images.y.numpy(), labels[split])
        per = len(got) // len(cifar10_npz.SPLITS[split])
        exact = [i for i in range(len(got)) if i % per < 2]
        assert np.array_equal(got[exact], rows[split][exact])
        assert np.abs(got.astype(int) - rows[split]).mean() < 3  # JPEG q75 on smooth images
    again = cifar10_npz.read_official(tmp_path / "built")
    assert np.array_equal(again["test"][0], bundle.test.x.reshape(6, -1).numpy())
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "built" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    with pytest.raises(SystemExit, match="not the official CIFAR-10 archive"):
        cifar10_npz.read_official(archive)


@pytest.mark.slow
def test_bundle_builder_matches_the_development_copys_build_script(cifar10, tmp_path):
    """The `cifar10` fixture built $DARD_DATA_DIR's compact copy with cifar10_npz; the copy's own build.py must give
    the same images. Only a compact copy that carries its build.py (CI's) has that second builder to compare."""
    if cifar10.compact is None or not (cifar10.compact / "build.py").is_file():
        pytest.skip("needs DARD_DATA_DIR set to a compact CIFAR-10 copy with its own build.py (as in CI)")
    proc = subprocess.run(
        [sys.executable, str(cifar10.compact / "build.py"), str(tmp_path)],
        capture_output=True, text=True, cwd=cifar10.compact, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours, theirs = load_dataset("cifar10", cifar10.root), load_dataset("cifar10", tmp_path)
    for a, b in ((ours.train, theirs.train), (ours.test, theirs.test)):
        assert np.array_equal(a.x.numpy(), b.x.numpy()) and np.array_equal(a.y.numpy(), b.y.numpy())


# -- end to end --------------------------------------------------------------------------------------------------

# What the target node lacks: these are hidden from the simulated node's Python.
MISSING = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "pyautoattack", "dard")


def _simulated_node(root: Path) -> Path:
    """A Python that sees this environment's packages except MISSING (and the editable dard); returns it."""
    site = root / "site"
    site.mkdir(parents=True)
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.split("-")[0].lower() not in MISSING and not entry.name.startswith("__editable__"):
            (site / entry.name).symlink_to(entry)
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "node.pth").write_text(f"import site; site.addsitedir({str(site)!r})\n")
    return python


@pytest.mark.slow
def test_bundle_installs_offline_and_runs_the_gpu_job_dry(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OUT")}
    npz = tmp_path / "npz"
    cifar10_npz.pack_rows(
        {"train": (_smooth_rows(10, 0), np.arange(10) % 10), "test": (_smooth_rows(4, 1), np.arange(4))}, npz
    )
    bundle = tmp_path / "bundle"
    made = subprocess.run(
        [sys.executable, "-m", "tools.bundle.make_bundle", "--out", str(bundle), "--wheels-from-env"]
        + ["--data", str(npz), "--budget", "520", *JOB_OPTIONS],
        capture_output=True, text=True, env={**env, "PYTHONPATH": str(REPO / "src")}, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    assert manifest["job_defaults"] == {"budget": 520, "max_files": 8, "max_file_mib": 16, "max_total_mib": 64}
    wheels = {w["file"].split("-")[0]: w for w in manifest["wheels"]}
    assert {"pydantic", "pydantic_core", "pyautoattack", "pytest"} <= set(wheels)
    assert "pyautoattack/examples/model_test.pt" in wheels["pyautoattack"]["dropped"]
    assert not any(name.lower().startswith(("torch", "numpy")) for name in wheels)

    node = _simulated_node(tmp_path / "node")
    assert subprocess.run([str(node), "-c", "import pydantic"], env=env, capture_output=True).returncode != 0
    out = tmp_path / "out"
    # (a command stopped at its limit: test_job_stops_a_step_at_its_limit_and_still_packs)
    # the `dard` on PATH (its parser imports no torch), then one Python process for `dard list` and the data
    cmd = (
        "dard --version && python -c 'from dard.cli import main; from dard.data import load_dataset; "
        'print("cifar10", len(load_dataset("cifar10").test)); main(["list"])\' > $STEP_OUT/list.txt '
        "&& echo partial > $STEP_OUT/partial.txt"
    )
    job = subprocess.run(
        ["bash", str(bundle / "gpu_job.sh"), "--out", str(out), "--scratch", str(tmp_path / "scratch"), "--", cmd],
        capture_output=True, text=True, env={**env, "PYTHON": str(node)}, timeout=600,
    )  # fmt: skip
    log = (out / "log.txt").read_text()
    record = json.loads((out / "job.json").read_text())
    assert job.returncode == 0, log[-3000:]
    statuses = {s["name"]: s["status"] for s in record["steps"]}
    assert statuses == {"setup": "ok", "cuda-tests": "ok", "bench": "ok", "command": "ok"}, log[-3000:]
    assert record["budget_s"] == 520 and record["limits"] == dataclasses.asdict(JOB_LIMITS)
    _assert_within(out, JOB_LIMITS)  # the bundle's job defaults, no option given
    # pip took torch (and the rest) from the node and only the missing packages from the bundle
    assert record["node"]["torch_file"].startswith(str(tmp_path / "node" / "site"))
    assert "Requirement already satisfied: torch" in log and "Processing" in log and "pydantic-" in log
    assert "skipped" in log and "needs a CUDA device" in log  # the CUDA tests ran and skipped
    junit = _unpack(out, "1-cuda-tests")["1-cuda-tests/junit.xml"].decode()
    assert 'skipped="' in junit and 'failures="0"' in junit
    bench = _unpack(out, "2-bench")
    result = json.loads(next(v for k, v in bench.items() if k.endswith(".json")))
    assert result["complete"] and result["train"]["plain@8"]["images_per_s"]["n"] == 2
    command = _unpack(out, "3-command")
    assert command["3-command/partial.txt"] == b"partial\n" and re.search(r"^dard \S+$", log, re.M)
    assert command["3-command/list.txt"].startswith(b"cifar10 4\nmodels:")
