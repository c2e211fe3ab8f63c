"""Make the offline bundle for a GPU node without internet (``make bundle``): ``.bundle/`` in the checkout.

    python -m tools.bundle.make_bundle --data DIR        # for CPython 3.12 on manylinux x86_64, CIFAR-10 from DIR
    python -m tools.bundle.make_bundle --python-version 3.11 --platform manylinux_2_28_aarch64 ...
    python -m tools.bundle.make_bundle --wheels-from-env # offline: rebuild the wheels from this environment
    python -m tools.bundle.make_bundle --budget 520 --max-files 8 --max-file-mib 16 --max-total-mib 64 --max-mib 60

Run from the checkout's root. The job system's limits are options, none by default: ``--max-mib`` caps the bundle
itself (what a job may carry); ``--budget`` and the ``--max-*`` output limits become the defaults of the bundle's
``run.sh``/``gpu_job.sh`` on the node (kept in MANIFEST.json as ``job_defaults``), so a job there needs no options.

What goes in (docs/gpu.md): the wheels the node lacks (pydantic and its parts, pyautoattack without its example
weights, pytest and its parts in case), pinned to the versions installed here (the tested ones) when they are;
the project files a job uses (``src``, with dard's configs and experiments, ``tests``, ``benchmarks``, ``tools``,
``teachers``, ``pyproject.toml``: dard runs from source, nothing to build); CIFAR-10 in compact form
(``cifar10_npz.py``; ``--data``: a folder with ``jpeg.npz``, ``cifar-10-batches-py/`` or the official archive); the
scripts (``run.sh``, ``gpu_job.sh`` and their helpers); ``MANIFEST.json``. Packages the node has (torch, numpy, ...) are
not bundled: the node's own are used. The bundle is built beside the old one and swapped in at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from tools.bundle.wheels import strip_wheel, verify_wheel, wheel_from_installed

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

try:
    import tomllib
except ImportError:  # Python 3.10: pip's vendored copy of the same parser
    from pip._vendor import tomli as tomllib

SCRIPTS = ["run.sh", "gpu_job.sh", "job.py", "pack.py", "setup_env.py", "cifar10_npz.py", "experiment_step.sh"]
PROJECT = ["src", "tests", "benchmarks", "tools", "teachers", "pyproject.toml"]
WITH_DEPS = ["pydantic", "pytest"]  # what the node lacks (pytest in case), with their own requirements
NO_DEPS = ["pyautoattack"]  # its requirements (torch, numpy, scipy) are the node's
STRIP = {"pyautoattack": ["pyautoattack/examples/*.pt", "pyautoattack/examples/*.h5"]}  # example weights, 44 MB


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def pinned(names: list[str], pin: bool) -> list[str]:
    """``name==version`` for names installed here (what the tests ran against), else the bare name."""
    return [f"{n}=={installed_version(n)}" if pin and installed_version(n) else n for n in names]


def download_wheels(dest: Path, args: argparse.Namespace) -> None:
    """Binary wheels for the target interpreter and platform from the package index."""
    target = ["--only-binary=:all:", "--python-version", args.python_version, "--implementation", args.implementation]
    for plat in args.platform:
        target += ["--platform", plat]
    base = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(dest), *target]
    subprocess.run([*base, *pinned(WITH_DEPS, args.pin)], check=True)
    subprocess.run([*base, "--no-deps", *pinned(NO_DEPS, args.pin)], check=True)


def installed_closure(names: list[str]) -> list[str]:
    """``names`` and, recursively, the installed distributions their requirements name (markers evaluated)."""
    from packaging.requirements import Requirement

    seen: dict[str, None] = {}
    todo = list(names)
    while todo:
        name = metadata.distribution(todo.pop()).metadata["Name"]
        if name.lower() in (s.lower() for s in seen):
            continue
        seen[name] = None
        for raw in metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen)


def collect_wheels(dest: Path, args: argparse.Namespace) -> list[dict]:
    """Fill ``dest`` with the wheels, strip the example weights, check every RECORD; returns their list."""
    dest.mkdir(parents=True)
    if args.wheels_from_env:
        for name in installed_closure(WITH_DEPS) + NO_DEPS:
            wheel_from_installed(name, dest)
    else:
        download_wheels(dest, args)
    rows = []
    for whl in sorted(dest.glob("*.whl")):
        dist = whl.name.split("-")[0].lower().replace("_", "-")
        dropped = strip_wheel(whl, whl, STRIP[dist]) if dist in STRIP else []
        verify_wheel(whl)
        rows.append({"file": whl.name, "bytes": whl.stat().st_size, "sha256": sha256(whl), "dropped": dropped})
    return rows


def project_files() -> list[str]:
    """The project files a job needs: tracked and untracked-not-ignored ones (what a checkout carries)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "--", *PROJECT],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        files = out.splitlines()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but caches
        files = [p.relative_to(ROOT).as_posix() for d in PROJECT for p in (ROOT / d).rglob("*") if p.is_file()]
        files += [d for d in PROJECT if (ROOT / d).is_file()]
    return sorted(f for f in files if "__pycache__" not in f and (ROOT / f).is_file())


def copy_project(dest: Path) -> int:
    files = project_files()
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    return len(files)


def add_data(dest: Path, source: str) -> str | None:
    """CIFAR-10 in compact form; returns where it came from (None: no data in the bundle). ``source`` "auto" looks
    in the checkout's ``data/`` (dard's default data folder) only."""
    if source == "none":
        return None
    cand = Path(source) if source != "auto" else ROOT / "data"
    if (cand / "jpeg.npz").is_file():  # already compact
        dest.mkdir(parents=True)
        for name in ("jpeg.npz", "exact.npz"):
            if (cand / name).is_file():
                shutil.copy2(cand / name, dest / name)
        return str(cand)
    official = next(
        (p for p in (cand, cand / "cifar-10-python.tar.gz") if p.is_file() and p.name.endswith(".tar.gz")), None
    )
    if official is not None or (cand / "cifar-10-batches-py").is_dir():
        from tools.bundle.cifar10_npz import pack_rows, read_official  # numpy and Pillow: only when packing

        pack_rows(read_official(official or cand), dest)
        return str(official or cand)
    if source != "auto":
        raise SystemExit(f"make_bundle: no CIFAR-10 in {source} (jpeg.npz, cifar-10-batches-py/ or the .tar.gz)")
    print("make_bundle: no CIFAR-10 in data/ (give --data DIR): the bundle has no data", file=sys.stderr)
    return None


def add_imports(dest: Path, sources: list[Path]) -> list[str]:
    """Copy run archives (``dard export``; files, or folders holding ``*.tar.gz``) for the experiment step to import
    on the node; returns their names."""
    archives = [q for s in sources for q in (sorted(s.glob("*.tar.gz")) if s.is_dir() else [s])]
    missing = [str(a) for a in archives if not a.is_file()]
    if missing or len({a.name for a in archives}) != len(archives):
        raise SystemExit(f"make_bundle: --imports: missing or repeated archives ({', '.join(missing) or 'names'})")
    for a in archives:
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(a, dest / a.name)
    return [a.name for a in archives]


def git_state() -> tuple[str | None, bool]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True)
        return sha.stdout.strip(), bool(dirty.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return None, False


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def job_defaults(args: argparse.Namespace) -> dict:
    """The limits given for the job system the bundle is made for; job.py takes them as its defaults."""
    names = ("budget", "max_files", "max_file_mib", "max_total_mib")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def make(args: argparse.Namespace) -> dict:
    out = args.out.resolve()
    stage = out.with_name(out.name + ".tmp")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for name in SCRIPTS:
        shutil.copy2(HERE / name, stage / name)
    wheels = collect_wheels(stage / "wheels", args)
    n_files = copy_project(stage / "project")
    data = add_data(stage / "data", args.data)
    imports = add_imports(stage / "imports", args.imports)
    commit, dirty = git_state()
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": commit,
        "dirty": dirty,
        "python": args.python_version,
        "platforms": args.platform,
        "install": [*deps, "pytest"],  # what setup asks pip for: the node's packages satisfy most of it
        "wheels": wheels,
        "project_files": n_files,
        "data": data,
        "imports": imports,
        "job_defaults": job_defaults(args),
    }
    manifest["id"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]
    (stage / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = folder_bytes(stage)
    if args.max_mib is not None and size > args.max_mib * 2**20:
        raise SystemExit(f"make_bundle: {stage} is {size / 2**20:.1f} MiB, over --max-mib {args.max_mib}")
    shutil.rmtree(out, ignore_errors=True)
    stage.rename(out)
    return {**manifest, "bytes": size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / ".bundle")
    p.add_argument("--python-version", default="3.12", help="target interpreter, e.g. 3.12 (default)")
    p.add_argument("--implementation", default="cp")
    p.add_argument(
        "--platform",
        action="append",
        help="wheel platform tag, repeatable (default manylinux2014_x86_64 and manylinux_2_17_x86_64)",
    )
    p.add_argument("--wheels-from-env", action="store_true", help="rebuild the wheels from this environment (offline)")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="newest versions, not the ones installed here")
    p.add_argument(
        "--data",
        default="auto",
        help="CIFAR-10 to carry: a folder (jpeg.npz, cifar-10-batches-py/ or the official .tar.gz), none, or auto "
        "(the checkout's data/)",
    )
    p.add_argument("--max-mib", type=float, help="fail if the bundle is larger (default: no limit)")
    limits = p.add_argument_group("job defaults on the node (run.sh/gpu_job.sh; default: no limit)")
    limits.add_argument("--budget", type=float, help="seconds for a whole job")
    limits.add_argument("--max-files", type=int, help="files a job may return from $OUT")
    limits.add_argument("--max-file-mib", type=float, help="MiB per returned file")
    limits.add_argument("--max-total-mib", type=float, help="MiB returned in all")
    p.add_argument(
        "--imports",
        type=Path,
        nargs="*",
        default=[],
        help="run archives from earlier jobs (files, or folders of *.tar.gz) for the experiment step to import",
    )
    args = p.parse_args(argv)
    args.platform = args.platform or ["manylinux2014_x86_64", "manylinux_2_17_x86_64"]
    if args.wheels_from_env:
        args.python_version = "{}.{}".format(*sys.version_info[:2])
    t0 = time.time()
    info = make(args)
    print(f"bundle {args.out}: {info['bytes'] / 2**20:.1f} MiB in {time.time() - t0:.0f} s (id {info['id']})")
    for w in info["wheels"]:
        note = f"  (without {', '.join(w['dropped'])})" if w["dropped"] else ""
        print(f"  wheels/{w['file']}  {w['bytes'] / 2**20:.2f} MiB{note}")
    print(f"  project/  {info['project_files']} files;  data/ from {info['data']}")
    if info["dirty"]:
        print("  note: the checkout has uncommitted changes; they are in the bundle")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
