"""Where experiment files are found, and loading one (validated, every run config included)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from dard.config import validation_message
from dard.errors import DardError
from dard.experiment.plan import check_runs, plan_runs
from dard.experiment.spec import Experiment, ExperimentSpec, check_base_sections, check_sections
from dard.names import check_name
from dard.packaged import CONFIGS_DIR, EXPERIMENTS_DIR, list_configs
from dard.yaml_files import read_yaml_file, read_yaml_mapping


def experiments_root() -> Path:
    """The packaged experiment files (``dard/experiments``; in a checkout, ``src/dard/experiments``)."""
    return EXPERIMENTS_DIR


def _roots(root: Path | None) -> list[Path]:
    """Where experiment names are looked up, first match winning: ``root`` alone when given, else
    ``./experiments`` (your own experiment files, when the working folder has one), then the packaged ones."""
    if root is not None:
        return [root]
    here = Path("experiments")
    return [here, EXPERIMENTS_DIR] if here.is_dir() else [EXPERIMENTS_DIR]


def list_experiments(root: Path | None = None) -> dict[str, list[str]]:
    """Experiment name -> its scales, from ``root`` (default: ``./experiments`` and the packaged ones)."""
    found: dict[str, list[str]] = {}
    for r in reversed(_roots(root)):  # reversed: the first root's experiment wins a name clash
        if r.is_dir():
            found.update(
                (p.name, sorted(f.stem for f in p.glob("*.yaml")))
                for p in r.iterdir()
                if p.is_dir() and not p.name.startswith("_") and any(p.glob("*.yaml"))
            )
    return dict(sorted(found.items()))


def load_experiment(name: str, scale: str = "cpu", root: Path | None = None) -> Experiment:
    """Load ``<root>/<name>/<scale>.yaml`` (or ``name`` itself when it is a YAML file) and validate it."""
    path = Path(name)
    by_name = path.suffix not in (".yaml", ".yml")
    if by_name:
        # name and scale are folder names, of the file looked up and of the default runs and report folders:
        # `--scale ../lambda/cpu` (or an absolute path) loaded another file and wrote its runs and report there
        check_name(name, "experiment name")
        check_name(scale, "scale")
        roots = _roots(root)
        folder = next((r / name for r in roots if (r / name).is_dir()), None)
        if folder is None:
            known = list(list_experiments(root))
            where = ", ".join(str(r) for r in roots)
            raise DardError(f"unknown experiment '{name}'; known: {', '.join(known) or 'none'} (in {where})")
        path = _shown(folder / f"{scale}.yaml")
        if not os.path.lexists(path):  # a FIFO or a folder there is said as what it is when read
            scales = sorted(p.stem for p in folder.glob("*.yaml"))
            raise DardError(f"experiment '{name}' has no scale '{scale}'; available: {', '.join(scales)}")
    else:  # the folder's own name: `../mine.yaml` named the experiment '..', whose report went to results/../mine
        name, scale = path.resolve().parent.name or "experiment", path.stem
        if scale in (".", ".."):  # `...yaml`: the runs folder runs/experiments/.. was runs/ itself
            raise DardError(f"{path}: the file's name makes its scale '{scale}', which is no folder name; rename it")
    data, text = read_yaml_file(path, "experiment file")
    try:
        spec = ExperimentSpec.model_validate(data)
    except ValidationError as e:
        raise DardError(f"{path}: {validation_message(e, ExperimentSpec)}") from None
    base_path = base_file(path, spec.base)
    base = read_yaml_mapping(base_path, "base run config")
    check_base_sections(base, base_path)
    exp = Experiment(name=name, scale=scale, spec=spec, base=base, source=path, text=text, by_name=by_name)
    planned = plan_runs(exp, Path("runs"))  # validates every run config before any training
    check_runs(planned, path)
    check_sections(spec, [run.config for run in planned], path)
    return exp


def base_file(path: Path, base: str) -> Path:
    """The base run config experiment file ``path`` names: a file relative to it; else the packaged one it names as
    if it lay among the packaged experiments (``../_scales/cpu.yaml`` in a copy of one, or a file of your own) or a
    packaged run config's name (``cifar10/sat_resnet18``, as ``--config`` takes it). A scale was out of reach of an
    experiment outside the package but by its installed path."""
    own = path.parent / base
    if own.is_file():
        return own.resolve()
    if os.path.lexists(own):  # a FIFO, a folder or a dangling link: said as what it is when read, not "not found"
        return own
    packaged = (EXPERIMENTS_DIR / "_" / base).resolve()
    if packaged.is_relative_to(EXPERIMENTS_DIR.resolve()) and packaged.is_file():
        return packaged
    name = base.removeprefix("./").removeprefix("configs/").removesuffix(".yaml")
    if name in list_configs():
        return CONFIGS_DIR / f"{name}.yaml"
    scales = ", ".join(f"../_scales/{p.name}" for p in sorted((EXPERIMENTS_DIR / "_scales").glob("*.yaml")))
    raise DardError(
        f"{path}: base run config not found: {own} (nor a packaged scale, {scales}, or run config, `dard list`)"
    )


def _shown(path: Path) -> Path:
    """``path`` relative to the working folder when it lies inside it (what reports and errors print), else as is."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path
