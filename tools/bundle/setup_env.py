"""Install the bundle on an offline node: a scratch virtual environment that sees the node's own packages (its
torch above all), the missing wheels from the bundle, the dard source, and the CIFAR-10 folder. Standard
library only; run by job.py as its first step with the node's Python.

    python setup_env.py --bundle .bundle --scratch /tmp/dard-job

Why not ``venv --system-site-packages``: on such nodes ``python3`` is often itself a virtual environment
(``/opt/torch/.venv``), and a venv made from it sees the *base* interpreter's packages, not torch. So the venv is
made without them and a ``.pth`` file adds the calling interpreter's own site folders (with their ``.pth``
files) after the venv's. pip inside the venv then counts the node's packages as installed: ``pip install
--no-index --find-links wheels <dard's requirements>`` leaves torch, numpy, ... alone and installs only what is
missing or too old, from the bundle; a requirement that neither has fails here, before any work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import site
import subprocess
import sys
from pathlib import Path

CHECK = """
import json, sys, torch, numpy, pydantic, pyautoattack, dard
cuda = torch.cuda.is_available()
print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "torch_file": torch.__file__,
    "cuda": cuda, "cuda_version": torch.version.cuda, "device": torch.cuda.get_device_name(0) if cuda else "cpu",
    "numpy": numpy.__version__, "pydantic": pydantic.VERSION, "dard_file": dard.__file__}))
"""

SHIM = """#!{python}
import sys
from dard.cli import main
sys.exit(main())
"""


def node_site_dirs() -> list[str]:
    """The site folders of the interpreter running this script (its venv's, or the system's), user site too."""
    dirs = list(site.getsitepackages())
    user = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user and Path(user).is_dir():
        dirs.append(user)
    return dirs


def run(argv: list[str], check: bool = True) -> str:
    """Run a command and echo its output; on failure raise SystemExit (``check``) or return None."""
    print("+ " + " ".join(argv), flush=True)
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode and check:
        raise SystemExit(f"setup: command failed with status {proc.returncode}: {argv[0]} ...")
    return None if proc.returncode else proc.stdout


def pip_install(python: Path, bundle: Path, manifest: dict) -> None:
    """dard's requirements, resolved against the node's packages plus the bundle's wheels.

    pip also checks the requirements of the node's own packages; should one of those be unmet on the node (a
    broken image), fall back to the bundle's wheels without dependency resolution (the import check follows).
    """
    pip = [str(python), "-m", "pip", "install", "--no-index", "--find-links", str(bundle / "wheels")]
    pip += ["--no-cache-dir", "--disable-pip-version-check", "--no-input", "--no-compile"]
    if run([*pip, *manifest["install"]], check=False) is None:
        names = [w["file"].split("-")[0] for w in manifest["wheels"]]
        print("setup: resolving against the node's packages failed; installing the bundle's wheels without it")
        run([*pip, "--no-deps", *names])


def make_venv(bundle: Path, venv: Path, manifest: dict) -> Path:
    """Create (or reuse, when made from this very bundle) the scratch venv; returns its python."""
    python = venv / "bin" / "python"
    stamp = venv / ".dard-bundle"
    if stamp.is_file() and stamp.read_text() == manifest["id"] and python.exists():
        print(f"reusing {venv} (installed from this bundle)")
        return python
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    # an "import" line of a .pth file is executed (one statement per line); addsitedir also runs their .pth files
    sites = [f"import site; site.addsitedir({d!r})" for d in node_site_dirs()]
    pth = [str(bundle.resolve() / "project" / "src"), *sites]
    (Path(purelib) / "_dard_bundle.pth").write_text("\n".join(pth) + "\n")
    pip_install(python, bundle, manifest)
    (venv / "bin" / "dard").write_text(SHIM.format(python=python))
    (venv / "bin" / "dard").chmod(0o755)
    stamp.write_text(manifest["id"])
    return python


def build_data(bundle: Path, python: Path, dest: Path, manifest: dict) -> None:
    """Rebuild CIFAR-10 in the official layout under ``dest`` (skipped when already built from this bundle)."""
    stamp = dest / ".dard-bundle"
    if stamp.is_file() and stamp.read_text() == manifest["id"]:
        print(f"reusing {dest} (built from this bundle)")
        return
    shutil.rmtree(dest, ignore_errors=True)
    run([str(python), str(bundle / "cifar10_npz.py"), "build", str(bundle / "data"), str(dest)])
    stamp.write_text(manifest["id"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parent)
    p.add_argument("--scratch", type=Path, required=True)
    args = p.parse_args(argv)
    manifest = json.loads((args.bundle / "MANIFEST.json").read_text())
    want, have = manifest["python"], "{}.{}".format(*sys.version_info[:2])
    if want != have:
        raise SystemExit(f"setup: the bundle was made for Python {want}, this is {have} (make bundle BUNDLE_PY={have})")
    args.scratch.mkdir(parents=True, exist_ok=True)
    python = make_venv(args.bundle, args.scratch / "venv", manifest)
    facts = json.loads(run([str(python), "-c", CHECK]).strip().splitlines()[-1])
    (args.scratch / "env.json").write_text(json.dumps(facts, indent=1) + "\n")
    if (args.bundle / "data" / "jpeg.npz").is_file():
        build_data(args.bundle, python, args.scratch / "data", manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
