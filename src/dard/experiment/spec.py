"""Experiment files: their schema, the validated experiment, and the merging and parsing of its run configs
(:mod:`.plan` makes the runs, :mod:`.catalog` finds and loads the files)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from dard.config import RunConfig, parse_config
from dard.config.schema import BIG, SEED_MAX
from dard.errors import DardError, shown
from dard.names import check_name
from dard.validate import without_empty_sections

#: the one key of a run entry that is not a config override: the experiment's seeds that run takes
RUN_SEEDS = "seeds"


class _Strict(BaseModel):
    # strict as the run config is (dard.config.schema): `seeds: ["1"]` or `[true]` is an error, not seed 1
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:  # `config:` with its keys commented out is YAML's null
        return without_empty_sections(cls, data)


def _plain_name(value: str, what: str) -> str:
    """:func:`dard.names.check_name`'s rule as a validation error (pydantic names the key)."""
    try:
        return check_name(value, what)
    except DardError as e:
        raise ValueError(str(e)) from None


class TeacherSpec(_Strict):
    name: str
    seed: int | None = Field(
        0, ge=0, le=SEED_MAX, description="seed of the single shared teacher; null trains one per student seed"
    )
    config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _plain(cls, v: str) -> str:  # it names run folders
        return _plain_name(v, "teacher name")


class CompareAttacksSpec(_Strict):
    n: int = Field(500, ge=1, le=BIG, description="first N test images")
    checkpoint: Literal["best", "last"] = "best"  # any other name found no weights, and the section stayed empty
    attacks: dict[str, dict[str, Any]] = Field(min_length=1)


class PlotParamSpec(_Strict):
    param: str = Field(description="a key of the method's resolved config (run.json), e.g. lam")
    label: str = ""


class LabelGapSpec(_Strict):
    n: int = Field(500, ge=1, le=BIG, description="first N test images")
    checkpoint: Literal["best", "last"] = "best"


class TeacherQualitySpec(_Strict):
    """Each distilled run's teacher measured on its own (the teacher-quality ladder): the checkpoint it learned
    from, clean and under PGD-20, on the first ``n`` test images."""

    n: int = Field(10000, ge=1, le=BIG, description="first N test images")


class ExperimentSpec(_Strict):
    title: str
    about: str = ""
    caveat: str = ""
    base: str
    seeds: list[int] = Field(min_length=1)
    teacher: TeacherSpec | None = None
    runs: dict[str, dict[str, Any]] = Field(min_length=1)
    compare_attacks: CompareAttacksSpec | None = None
    plot_param: PlotParamSpec | None = None
    label_gap: LabelGapSpec | None = None
    teacher_quality: TeacherQualitySpec | None = None
    runs_dir: str | None = Field(
        None,
        description="default --runs, relative to the working folder: a runs folder committed with the repository, "
        "so that a campaign longer than one machine's stretch continues from a fresh clone",
    )
    # a YAML pair is a list, which strict mode takes for no tuple
    pairs: list[Annotated[tuple[str, str], Strict(False)]] = Field(
        default_factory=list,
        description="report rows to compare on the same images (run names without seed, or the teacher's), e.g. "
        "[[dard, pgdard], [dard-lam0, dard]]: per-seed McNemar tests and the across-seed paired difference",
    )

    @model_validator(mode="after")
    def _pairs_name_rows(self) -> ExperimentSpec:
        rows = list(dict.fromkeys([*self.runs, *([self.teacher.name] if self.teacher else [])]))
        for a, b in self.pairs:
            unknown = [n for n in (a, b) if n not in rows]
            if unknown:
                raise ValueError(f"pairs: {', '.join(unknown)} is not a run of this experiment ({', '.join(rows)})")
            if a == b:
                raise ValueError(f"pairs: [{a}, {b}] compares a row with itself")
        return self

    @model_validator(mode="after")
    def _run_seeds_are_the_experiments(self) -> ExperimentSpec:
        for key, entry in self.runs.items():
            own = entry.get(RUN_SEEDS, self.seeds)
            if not (
                isinstance(own, list)
                and own
                and all(type(s) is int and s in self.seeds for s in own)
                and len(set(own)) == len(own)
            ):
                raise ValueError(
                    f"runs.{key}.{RUN_SEEDS} must be distinct seeds of the experiment's "
                    f"({', '.join(map(str, self.seeds))}), got {shown(own)}"
                )
        return self

    def run_seeds(self, key: str) -> list[int]:
        """The seeds run ``key`` takes, in the experiment's order: its own ``seeds`` (some of the experiment's; a
        row that can wait for more seeds runs fewer first, and adding them later reuses what is done), else all."""
        own = self.runs[key].get(RUN_SEEDS)
        return [s for s in self.seeds if own is None or s in own]

    def run_overrides(self, key: str) -> dict[str, Any]:
        """Run ``key``'s config overrides (its entry less ``seeds``)."""
        return {k: v for k, v in self.runs[key].items() if k != RUN_SEEDS}

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:  # a seed twice would plan one run twice
        if len(set(v)) != len(v) or not all(0 <= s <= SEED_MAX for s in v):
            raise ValueError(f"seeds must be distinct integers from 0 to {SEED_MAX}")
        return v

    @field_validator("runs", mode="before")
    @classmethod
    def _empty_entries(cls, v: Any) -> Any:  # `natural:` alone: a run of the base config as it is
        return {k: {} if e is None else e for k, e in v.items()} if isinstance(v, dict) else v

    @field_validator("runs")
    @classmethod
    def _plain_keys(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:  # they name run folders
        for key in v:
            _plain_name(key, "run key")
        return v


@dataclass
class Experiment:
    """A validated experiment: its spec, the base run config (a dict) and where it came from."""

    name: str
    scale: str
    spec: ExperimentSpec
    base: dict[str, Any]
    source: Path
    text: str  # the experiment file as read (the results keep a copy: read once, what the runs were planned from)
    by_name: bool = False  # found by name and scale (`dard experiment main --scale cpu`), not given as a file

    def command(self) -> str:
        """The command that runs this experiment again, as a report names it: by name and scale, or by the file's
        path (a file of your own by name and scale was `dard experiment FOLDER --scale STEM`, an unknown
        experiment)."""
        import shlex

        how = f"{self.name} --scale {self.scale}" if self.by_name else shlex.quote(str(self.source))
        return f"dard experiment {how}"

    def use_data(self, folder: str | None = None, download: bool = False) -> None:
        """Point every run at a data folder and/or allow downloading the official archives (command-line flags;
        neither makes a finished run a different run)."""
        data: dict[str, Any] = {"dir": folder} if folder else {}
        if download:
            data["download"] = True
        if data:
            self.base = deep_merge(self.base, {"data": data})


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``over``, recursing into nested mappings (``over`` wins; a null section adds nothing)."""
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if v is None and isinstance(out.get(k), Mapping):
            continue  # an empty section (`method:` with its keys commented out) overrides nothing
        out[k] = (
            deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else copy.deepcopy(v)
        )
    return out


def check_base_sections(base: Mapping[str, Any], where: Path) -> None:
    """Each section of an experiment's base run config is a mapping (or empty): a run's own section replaced one
    that was not (``data: cifar10``), and the run trained on the defaults' dataset without a word."""
    from dard.config import RunConfig
    from dard.config.messages import section_model

    for key, value in base.items():
        if value is not None and not isinstance(value, Mapping) and section_model(RunConfig, [str(key)]) is not None:
            raise DardError(f"{where}: {key} is a section of keys, not {shown(value)} (e.g. {key}: {{name: ...}})")


def merge_run(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A run's config: ``base`` updated by the run's overrides (:func:`deep_merge`), except that a run naming another
    method than the base's takes only those of the base's ``method.params`` its method has: a base's
    ``params: {attack: ...}`` made a ``natural`` run, and its ``lam`` a ``sat`` one, an error that no run entry could
    undo (a null section overrides nothing)."""
    method, mine = base.get("method"), over.get("method")
    if isinstance(method, Mapping) and isinstance(mine, Mapping) and isinstance(method.get("params"), Mapping):
        from dard.methods import METHODS

        name = mine.get("name", method.get("name", "dard"))
        if name != method.get("name", "dard") and isinstance(name, str) and name in METHODS:
            takes = METHODS.params(name)
            params = {k: v for k, v in method["params"].items() if k in takes}
            base = {**base, "method": {**method, "params": params}}
    return deep_merge(base, over)


def parse_run_config(cfg: dict[str, Any], where: str) -> RunConfig:
    """Validate a run config dict; an error names ``where`` (the experiment file and run, or the run folder)."""
    try:
        return parse_config(cfg)
    except DardError as e:
        raise DardError(f"{where}: {e}") from None


def check_sections(spec: ExperimentSpec, configs: Sequence[RunConfig], where: Path) -> None:
    """The extra sections fit the runs they apply to, checked when the experiment is loaded (``--plan`` included):
    every ``compare_attacks`` attack builds under each run's eps and norm, and ``plot_param`` is a numeric parameter
    of some run's method. Both were found out only after the training (an unknown attack stopped the campaign; an
    unknown parameter gave an empty plot and matplotlib's warnings on stderr)."""
    from dard.config.read import build_method
    from dard.evaluation.suite import attack_from_spec

    compare = spec.compare_attacks.attacks if spec.compare_attacks is not None else {}
    for cfg in configs if compare else []:
        for label, attack in compare.items():
            try:
                attack_from_spec(attack, cfg.eps, cfg.seed, cfg.norm)
            except DardError as e:
                raise DardError(f"{where}: compare_attacks.attacks.{label} (run '{cfg.name}'): {e}") from None
    if spec.plot_param is not None:
        param = spec.plot_param.param
        methods = []
        for cfg in configs:
            try:
                methods.append(build_method(cfg).config())
            except DardError as e:
                raise DardError(f"{where}: run '{cfg.name}': method: {e}") from None
        if not any(isinstance(m.get(param), (int, float)) for m in methods):
            numeric = sorted({k for m in methods for k, v in m.items() if isinstance(v, (int, float))})
            raise DardError(
                f"{where}: plot_param.param {shown(param)} is no numeric parameter of the runs' methods "
                f"(they have: {', '.join(numeric) or 'none'})"
            )


def needs_teacher(cfg: Mapping[str, Any]) -> bool:
    """Whether the run config's method distils from a teacher (False for an unknown method, which
    :func:`dard.experiment.plan.check_runs` refuses naming the file and the run)."""
    from dard.methods import METHODS

    method = cfg.get("method") or {}  # null: the section's defaults
    if not isinstance(method, Mapping):  # `method: dard`: the run's parse names it (it was an AttributeError)
        return False
    try:
        return bool(METHODS.get(str(method.get("name", "dard"))).needs_teacher)
    except DardError:
        return False
