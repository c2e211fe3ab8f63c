"""A run config read: YAML or a dict validated by the schema (:mod:`dard.config.schema`), then what it names built
(milliseconds, no data, no files): the method with its training attack, the validation attack and the evaluation
suite. A bad key or value of any of them is one line wherever a config is parsed (``dard config show``,
``dard experiment --plan``, a run folder's record, :func:`parse_config`), as ``dard train`` says it, not first when
a run's checks build them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dard.attacks import Attack
from dard.attacks.threat import apply_norm
from dard.config.messages import validation_message
from dard.config.options import apply_overrides
from dard.config.schema import RunConfig
from dard.errors import DardError
from dard.evaluation.suite import attack_from_spec, build_suite
from dard.methods import Method, create_method, method_params
from dard.packaged import find_config
from dard.yaml_files import read_yaml_mapping

__all__ = ["build_method", "build_val_attack", "check_built", "load_config", "parse_config"]


def parse_config(data: dict[str, Any] | None, *, build: bool = True) -> RunConfig:
    """Validate a plain dict into a RunConfig (DardError naming the key on failure), and with ``build`` build what
    it names (:func:`check_built`). A run folder's record is read without ``build``: it was built when the run was
    made, and a method or attack registered from Python then, or one a later version refuses (a seeded training
    attack), must not make the finished run unreadable by `dard eval RUN`, a report or an import; a run that trains
    again builds it (its resume's checks)."""
    try:
        cfg = RunConfig.model_validate(data or {})
    except ValidationError as e:
        raise DardError(f"config error: {validation_message(e, RunConfig, data)}") from None
    if build:
        check_built(cfg)  # the method and the attacks it names
    return cfg


def load_config(
    path: str | Path | None, overrides: list[str] | None = None, shortcuts: Mapping[str, tuple[str, Any]] | None = None
) -> RunConfig:
    """Load a YAML config (a file, or a packaged config's name such as ``cifar10/dard_resnet18``; defaults when
    ``path`` is None) and apply ``key.sub=value`` overrides and shortcut options' values (:func:`apply_overrides`)."""
    data: dict[str, Any] = read_yaml_mapping(find_config(path), "config file") if path is not None else {}
    apply_overrides(data, overrides or [], shortcuts, schema=RunConfig)
    return parse_config(data)


#: the most a validation attack may cost, in passes per image (:meth:`dard.attacks.Attack.passes`) at every
#: validation: 50 times the default's (pgd, 10 steps: 20). At their defaults AutoAttack's cascade (about 4,500),
#: Square's 5,000 queries and APGD-T's and FAB-T's nine targets (1,800 and 2,700) ran hours per epoch over the
#: validation split, where the default takes minutes; the cascade alone was refused, by its name
VAL_PASSES_MAX = 1000


def build_method(cfg: RunConfig) -> Method:
    """The configured loss object; the run's eps is the default budget of its training attack and the run's norm
    its norm (an attack that names another norm, or cannot run in the run's, is a one-line DardError)."""
    params = dict(cfg.method.params)
    if "attack" not in method_params(cfg.method.name) or not isinstance(params.get("attack", {}), dict | None):
        return create_method(cfg.method.name, **params)  # an attack that is no mapping (`attack: pgd`): its error
    attack = dict(params.get("attack") or {})
    attack.setdefault("eps", cfg.eps)
    method = create_method(cfg.method.name, **{**params, "attack": attack})
    resolved = method.config()["attack"]  # the attack the method chose, with every parameter
    apply_norm({"name": resolved["name"], **({"norm": attack["norm"]} if "norm" in attack else {})}, cfg.norm)
    if str(resolved.get("norm", "linf")).lower() == cfg.norm:
        return method  # a Linf run's attacks are built exactly as before the norm was a run setting
    return create_method(cfg.method.name, **{**params, "attack": {**attack, "norm": cfg.norm}})


def build_val_attack(cfg: RunConfig) -> Attack:
    """The validation attack (seeded with the run's seed unless it names its own); one that costs more than
    :data:`VAL_PASSES_MAX` passes per image at its settings is refused (:class:`dard.config.schema.ValConfig` says
    why), whatever its name: AutoAttack's cascade, Square or APGD-T at their defaults, PGD with many restarts."""
    attack = attack_from_spec(cfg.val.attack, cfg.eps, cfg.seed, cfg.norm)
    passes = attack.passes(attack.config())
    if passes > VAL_PASSES_MAX:
        name = cfg.val.attack.get("name")
        raise DardError(
            f"attack '{name}' costs {passes:,.0f} passes per image at every validation, over the {VAL_PASSES_MAX:,} a "
            "validation attack may (the default, pgd with 10 steps, costs 20; hours per epoch where it takes "
            "minutes): give it fewer steps, queries, targets or restarts, or validate with pgd or apgd-ce (200), and "
            "keep it at this cost for the final evaluation (eval.attacks, eval.autoattack_subset)"
        )
    return attack


def check_built(cfg: RunConfig) -> None:
    """Build the method and every attack ``cfg`` names, in the order ``dard train`` checks them; a DardError is
    one line prefixed with the key at fault (``method: ...``, ``val.attack: ...``, ``eval.attacks: ...``)."""
    for key, build in (
        ("method", lambda: build_method(cfg)),
        ("val.attack", lambda: build_val_attack(cfg)),
        ("eval.attacks", lambda: build_suite(cfg.eval.attacks, cfg.eps, seed=cfg.seed, norm=cfg.norm)),
    ):
        try:
            build()
        except DardError as e:
            raise DardError(f"{key}: {e}") from None  # as `dard train` says it (preflight.check_config)
