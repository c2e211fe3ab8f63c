"""`dard config show`: a resolved run config as commented YAML, every key present.

Each key is written with its value; the comment after it carries the field's description (where the schema has
one) and the default when the value differs from it. The output is a valid run config: ``yaml.safe_load`` of it
gives the config's own ``model_dump``, so it can be saved and passed back to ``dard train --config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel

from dard.attacks.threat import budget_text
from dard.config.messages import section_model
from dard.config.schema import RunConfig

_INDENT = "  "


def inline_yaml(value: Any) -> str:
    """``value`` as one line of YAML (flow style for lists and mappings)."""
    # dumped inside a list, so that a scalar gets no document-end marker; the brackets are then taken off
    text = yaml.safe_dump([value], default_flow_style=True, width=1 << 30, sort_keys=False).strip()
    return text[1:-1]


def show_config(cfg: RunConfig, method: Mapping[str, Any] | None = None, source: str | None = None) -> str:
    """The resolved ``cfg`` as commented YAML. ``method``: the method's resolved parameters (its defaults filled
    in, ``Method.config()``), shown as a comment under ``method.params``; ``source``: named in the first line."""
    lines = [f"# the resolved run config{f' of {source}' if source else ''}: every key, its default when it differs"]
    lines += _section(cfg, type(cfg), 0)
    if method is not None:
        at = lines.index(next(line for line in lines if line.startswith(f"{_INDENT}params:")))
        lines.insert(at + 1, f"{_INDENT}# with the method's defaults: {inline_yaml(dict(method))}")
    return "\n".join(lines) + "\n"


def _section(values: BaseModel, model: type[BaseModel], depth: int) -> list[str]:
    lines = []
    pad = _INDENT * depth
    for name, field in model.model_fields.items():
        value = getattr(values, name)
        sub = section_model(model, [name])
        if sub is not None:
            doc = " ".join((sub.__doc__ or "").split()).split("; ")[0].split(". ")[0].rstrip(".")
            lines.append(f"{pad}{name}:" + (f"  # {doc}" if doc else ""))
            lines += _section(value, sub, depth + 1)
            continue
        dumped = value if not isinstance(value, BaseModel) else value.model_dump(mode="json")
        notes = [field.description] if field.description else []
        if name == "eps" and isinstance(value, float):
            notes.append(budget_text(value, getattr(values, "norm", "linf"), named=True))
        default = field.get_default(call_default_factory=True)
        if default != value:
            notes.append(f"default {inline_yaml(default)}")
        comment = f"  # {'; '.join(notes)}" if notes else ""
        lines.append(f"{pad}{name}: {inline_yaml(_plain(dumped))}{comment}")
    return lines


def _plain(value: Any) -> Any:
    """A field's value as YAML-safe plain data (tuples as lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
