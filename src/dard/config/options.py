"""The command line's ``KEY=VALUE`` options: ``--set key.sub=value`` (a run config's overrides) and ``dard eval
--model-arg KEY=VALUE`` (a factory's keyword arguments). One reader, so both refuse a malformed item with the same
words and read a value the same way: as YAML, as dard reads its files (``1e-3`` a number), or as the raw text where
it is no valid YAML (``--set name=a: b`` keeps its text)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from dard.errors import DardError, shown
from dard.yaml_files import parse_yaml

__all__ = ["apply_overrides", "read_assignments", "set_dotted"]


def read_assignments(items: Sequence[str], flag: str, *, dotted: bool) -> dict[str, Any]:
    """``KEY=VALUE`` items of option ``flag`` as {key: value}, in order; a DardError naming ``flag`` and the item for
    one without ``=``, with an empty key (or, ``dotted``, an empty part: ``.lr``, ``optim..lr``) or one that is not a
    Python name (not ``dotted``: a keyword argument), and for a key given twice (a later value silently won)."""
    import yaml

    form = "key.sub=value" if dotted else "KEY=VALUE, KEY a Python name"
    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".") if dotted else [key]
        if not eq or not all(p.strip() for p in parts) or (not dotted and not key.isidentifier()):
            why = " (a key part is empty)" if eq and dotted else ""
            raise DardError(f"{flag} {shown(item)} must look like {form}{why}")
        if key in out:
            raise DardError(f"{flag} {shown(key)} is given twice")
        try:
            out[key] = parse_yaml(raw, f"{flag} {key}")
        except (yaml.YAMLError, RecursionError):
            out[key] = raw
    return out


def set_dotted(data: dict[str, Any], dotted: str, value: Any, schema: type[BaseModel] | None = None) -> None:
    """Apply a command-line override ``a.b.c=value`` (value parsed as YAML) to a nested dict. A mapping given for a
    section of the schema (``optim={lr: 0.01}``) sets its keys one by one: the keys it leaves out keep the config's
    values (replaced whole, the section's other keys fell back to their defaults: 10 epochs instead of the file's
    50, in silence). A free-form value (``val.attack``, ``method.params``, ``model.kwargs``) is one value, replaced
    whole. ``schema``: the pydantic model ``data`` is for (the run config), which says what a section is; None:
    every value is set whole."""
    _set_keys(data, dotted.split("."), value, dotted, schema)


def _set_keys(data: dict[str, Any], keys: list[str], value: Any, dotted: str, schema: type[BaseModel] | None) -> None:
    if isinstance(value, dict) and schema is not None and _is_schema_section(keys, schema):
        for k, v in value.items():
            _set_keys(data, [*keys, str(k)], v, dotted, schema)
        return
    node = data
    for k in keys[:-1]:
        if node.get(k) is None:  # absent, or an empty section (`optim:` with its keys commented out): its defaults
            node[k] = {}
        node = node[k]
        if not isinstance(node, dict):
            raise DardError(f"override {shown(dotted)}: {shown(k)} is not a section")
    node[keys[-1]] = value


def _is_schema_section(keys: list[str], schema: type[BaseModel]) -> bool:
    """Whether ``keys`` name a section of ``schema`` (a model of its own: the run config's ``optim``, ``speed``)."""
    model = schema
    for k in keys:
        field = model.model_fields.get(k)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return False
        model = field.annotation
    return True


def apply_overrides(
    data: dict[str, Any],
    overrides: Sequence[str],
    shortcuts: Mapping[str, tuple[str, Any]] | None = None,
    *,
    schema: type[BaseModel] | None,
) -> None:
    """Apply command-line overrides ``key.sub=value`` (:func:`read_assignments`) to a config dict in place, then
    ``shortcuts``, {key: (option, value)} of options that set one key each (`dard train --teacher`, ``--epochs``):
    their values as given, not read as YAML (``--teacher "runs/t #1"`` was the folder ``runs/t``, a comment cut
    off). A key set by both is a DardError naming the two. ``schema``: as for :func:`set_dotted` (the run config's
    model, passed in: this module sits below the schema, which reads its overrides with it)."""
    values = read_assignments(overrides, "--set", dotted=True)
    for key, (option, value) in (shortcuts or {}).items():
        if key in values:
            raise DardError(f"{option} and --set {key} both set {key}: give one of them")
        values[key] = value
    for key, value in values.items():
        set_dotted(data, key, value, schema)
