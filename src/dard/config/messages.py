"""What a failed validation of a config (or an experiment file) says: every error as ``key.path: message (got
value)``, an unknown key with the nearest valid keys of its section."""

from __future__ import annotations

import difflib
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from dard.errors import shown

__all__ = ["config_keys", "section_model", "unknown_key_message", "validation_message"]


def validation_message(
    err: ValidationError, model: type[BaseModel] | None = None, data: Mapping[str, Any] | None = None
) -> str:
    """Every error of a pydantic validation as ``key.path: message (got value)``, joined by '; '. With the
    validated ``model``, an unknown key names the nearest valid keys and the keys of its section; with the validated
    ``data`` (a run config's), also the free-form key of that name (:func:`free_form_keys`)."""
    parts = []
    for e in err.errors():
        # a whole-file validator's error has no key path, and names its keys itself ("pairs: ...")
        loc = "".join(f"{p}: " if i == len(e["loc"]) - 1 else f"{p}." for i, p in enumerate(e["loc"]))
        # a validator's own words, without pydantic's "Value error, " before them
        msg = e["msg"].removeprefix("Value error, ") if e["type"] == "value_error" else e["msg"]
        if e["type"] == "extra_forbidden":
            msg = unknown_key_message(model, [str(p) for p in e["loc"]], data) if model else "unknown key"
        got = (
            f" (got {shown(e['input'])})"
            if e["type"] != "extra_forbidden" and not isinstance(e.get("input"), dict)
            else ""
        )
        parts.append(f"{loc}{msg}{got}")
    return "; ".join(parts)


def section_model(model: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The pydantic model of the config section at ``path`` (``["optim"]``: OptimConfig), None when ``path`` does not
    lead to one (a free-form mapping such as ``method.params``)."""
    for key in path:
        field = model.model_fields.get(key)
        annotation = field.annotation if field is not None else None
        # an optional section (an experiment file's ``teacher: TeacherSpec | None``) is its model
        options = [a for a in (*typing.get_args(annotation), annotation) if a is not type(None)]
        found = [a for a in options if isinstance(a, type) and issubclass(a, BaseModel)]
        if len(found) != 1:
            return None
        model = found[0]
    return model


def config_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of ``model``, sections included (``optim``, ``optim.lr``, ...), in declaration order."""
    keys = []
    for name in model.model_fields:
        keys.append(prefix + name)
        sub = section_model(model, [name])
        if sub is not None:
            keys += config_keys(sub, f"{prefix}{name}.")
    return keys


def unknown_key_message(model: type[BaseModel], loc: list[str], data: Mapping[str, Any] | None = None) -> str:
    """``unknown key`` with the nearest valid keys of its section (difflib), the same name in other sections or as a
    free-form key ``data`` names (``method.lam``: ``method.params.lam``), and the section's keys: ``unknown key;
    did you mean optim.lr? (optim has: epochs, batch_size, lr, ...)``."""
    section, key = loc[:-1], loc[-1]
    parent = section_model(model, section)
    if parent is None:
        return "unknown key"
    siblings = list(parent.model_fields)
    prefix = "".join(f"{p}." for p in section)
    free = free_form_keys(data) if data is not None else {}
    # a key of the section's free-form mapping one level up (``method.lam`` for ``method.params.lam``)
    near = [
        f"{where}.{k}"
        for where, keys in free.items()
        if where.rsplit(".", 1)[0] == ".".join(section)
        for k in ([key] if key in keys else difflib.get_close_matches(key, keys, n=3, cutoff=0.6))
    ]
    near += [prefix + k for k in difflib.get_close_matches(key, siblings, n=3, cutoff=0.6)]
    # the same name in another section (``--set optim.eps=...`` for the top-level ``eps``), else in a free-form one
    near += [k for k in config_keys(model) if k.rsplit(".", 1)[-1] == key and k not in near]
    near = near or [f"{where}.{key}" for where, keys in free.items() if key in keys]
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    return f"unknown key{hint} ({'.'.join(section) or 'the top level'} has: {', '.join(siblings)})"


def free_form_keys(data: Mapping[str, Any]) -> dict[str, list[str]]:
    """The keys a run config's free-form sections take, where the config names what takes them: the method's
    parameters (``method.params``), the validation attack's (``val.attack``) and a registered model factory's own
    (``model.kwargs``, ``teacher.kwargs``; user code is not imported for a message, and timm takes any key)."""
    from dard.methods import METHODS  # the registries fill as their packages import: only for this message
    from dard.models import MODELS
    from dard.models.factory import RESERVED_KWARGS
    from dard.registry import ATTACKS

    def section(name: str) -> Mapping[str, Any]:
        value = data.get(name)
        return value if isinstance(value, Mapping) else {}

    def named(registry: Any, name: Any) -> list[str]:
        return registry.params(name) if isinstance(name, str) and name in registry else []

    attack = section("val").get("attack", {"name": "pgd"})  # the schema's defaults, where the config has none
    keys = {
        "method.params": named(METHODS, section("method").get("name", "dard")),
        "val.attack": named(ATTACKS, attack.get("name") if isinstance(attack, Mapping) else None),
        "model.kwargs": named(MODELS, section("model").get("arch", "small_cnn")),
        "teacher.kwargs": named(MODELS, section("teacher").get("arch")),
    }
    return {where: [k for k in names if k not in RESERVED_KWARGS] for where, names in keys.items()}
