"""What a run is called and where it goes: the run name recorded in run.json is the run folder's name.

A config's ``name`` is the default for both: ``dard train --config X`` writes ``runs/<name>``. ``--out DIR`` names
the run after ``DIR``'s folder name. An explicit ``--set name=...`` always wins. When command-line overrides change
what a config's name describes (its method, architecture or dataset: ``--model resnet8`` on a config named
``teacher-resnet56-sat``), the name becomes ``<method>-<arch>-<dataset>`` instead, so no run carries a name that
says something else.
"""

from __future__ import annotations

from pathlib import Path

from dard.config import RunConfig
from dard.names import check_label, check_name

__all__ = ["default_run_name", "name_run"]


def _what(cfg: RunConfig) -> tuple[str, str, str]:
    return cfg.method.name, cfg.model.arch, cfg.data.name


def default_run_name(cfg: RunConfig, base: RunConfig) -> str:
    """``cfg``'s name when it still describes ``cfg`` (same method, architecture and dataset as ``base``, the config
    before command-line overrides), else ``<method>-<arch>-<dataset>``."""
    return cfg.name if _what(cfg) == _what(base) else "-".join(_what(cfg))


def name_run(cfg: RunConfig, base: RunConfig, out: str | Path | None, name_given: bool) -> tuple[RunConfig, Path]:
    """``(cfg with its run name, run folder)`` for `dard train`: see the module docstring for the rules."""
    if name_given:
        name = cfg.name
    elif out is not None:
        name = Path(out).resolve().name
    else:
        name = default_run_name(cfg, base)
    check_label(name, "run name")  # reports, plots and messages show it
    if out is None:
        check_name(name, "run name")  # it names the folder runs/<name>
    return cfg.model_copy(update={"name": name}), Path(out) if out is not None else Path("runs") / name
