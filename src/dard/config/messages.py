"""What a failed validation of a config says: every error as ``key.path: message (got value)``, an unknown key with
the nearest valid keys of its section."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ValidationError

from dard.errors import shown

__all__ = ["config_keys", "section_model", "unknown_key_message", "validation_message"]


def validation_message(err: ValidationError, model: type[BaseModel] | None = None) -> str:
    """Every error of a pydantic validation as ``key.path: message (got value)``, joined by '; '. With the
    validated ``model``, an unknown key names the nearest valid keys and the keys of its section."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = unknown_key_message(model, [str(p) for p in e["loc"]]) if model else "unknown key"
        got = (
            f" (got {shown(e['input'])})"
            if e["type"] != "extra_forbidden" and not isinstance(e.get("input"), dict)
            else ""
        )
        parts.append(f"{loc}: {msg}{got}")
    return "; ".join(parts)


def section_model(model: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    """The pydantic model of the config section at ``path`` (``["optim"]``: OptimConfig), None when ``path`` does not
    lead to one (a free-form mapping such as ``method.params``)."""
    for key in path:
        field = model.model_fields.get(key)
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
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


def unknown_key_message(model: type[BaseModel], loc: list[str]) -> str:
    """``unknown key`` with the nearest valid keys of its section (difflib), the same name in other sections, and
    the section's keys: ``unknown key; did you mean optim.lr? (optim has: epochs, batch_size, lr, ...)``."""
    section, key = loc[:-1], loc[-1]
    parent = section_model(model, section)
    if parent is None:
        return "unknown key"
    siblings = list(parent.model_fields)
    prefix = "".join(f"{p}." for p in section)
    near = [prefix + k for k in difflib.get_close_matches(key, siblings, n=3, cutoff=0.6)]
    # the same name in another section (``--set optim.eps=...`` for the top-level ``eps``)
    near += [k for k in config_keys(model) if k.rsplit(".", 1)[-1] == key and k not in near]
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    return f"unknown key{hint} ({'.'.join(section) or 'the top level'} has: {', '.join(siblings)})"
