"""Model checkpoints: weights as safetensors, metadata (architecture, normalisation, provenance) as JSON.

A checkpoint ``NAME`` is the pair ``NAME.safetensors`` + ``NAME.json``. External weights (a ``.pt``/``.pth``
state dict from other code) load through :func:`dard.weights.load_weights` with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dard.errors import DardError
from dard.io import read_json, save_tensors, write_json
from dard.module_utils import unwrap_model

FORMAT = "dard-checkpoint"


def save_checkpoint(
    path: str | Path, model: nn.Module, spec: dict[str, Any], extra: dict[str, Any] | None = None
) -> Path:
    """Write ``path`` (.safetensors) and its sibling .json atomically; returns the weights path.

    ``spec`` describes how to rebuild the model: ``arch``, ``num_classes``, ``in_channels``, ``mean``, ``std``.
    The JSON is written last, so a weights file without metadata is an incomplete save.
    """
    weights = Path(path).with_suffix(".safetensors")
    model = unwrap_model(model)
    save_tensors(weights, model.state_dict(), metadata={"format": FORMAT, "arch": str(spec["arch"])})
    write_json(weights.with_suffix(".json"), {"format": FORMAT, "model": spec, **(extra or {})})
    return weights


def resolve_checkpoint(path: str | Path) -> Path:
    """Map a run folder, a ``.json`` or a ``.safetensors`` path to the weights file of a dard checkpoint."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.safetensors", "last.safetensors", "model.safetensors"):
            if (p / name).exists():
                return p / name
        raise DardError(f"{p} holds no checkpoint (expected best.safetensors or last.safetensors)")
    if p.suffix == ".json":
        p = p.with_suffix(".safetensors")
    if not p.exists():
        raise DardError(f"checkpoint not found: {p}")
    return p


def read_checkpoint_meta(weights: Path) -> dict[str, Any]:
    """Read and check the JSON metadata beside ``weights``."""
    meta_path = weights.with_suffix(".json")
    if not meta_path.exists():
        raise DardError(f"{weights} has no metadata file {meta_path.name}; pass --model ARCH to load raw weights")
    try:
        meta = read_json(meta_path)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise DardError(f"{meta_path} is not a dard checkpoint metadata file ({type(e).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        raise DardError(f"{meta_path} is not a dard checkpoint metadata file")
    return meta


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model described by a dard checkpoint and load its weights; returns (model in eval mode, meta)."""
    from dard.models import create_model
    from dard.weights import load_weights

    weights = resolve_checkpoint(path)
    if weights.suffix != ".safetensors":
        raise DardError(
            f"{weights} is not a dard checkpoint (.safetensors + .json); pass --model ARCH to load raw weights"
        )
    meta = read_checkpoint_meta(weights)
    spec = meta["model"]
    try:
        model = create_model(
            spec["arch"],
            num_classes=int(spec["num_classes"]),
            in_channels=int(spec["in_channels"]),
            mean=spec.get("mean"),
            std=spec.get("std"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DardError(f"{weights.with_suffix('.json')}: bad model spec ({e})") from None
    load_weights(model, weights)
    return model.to(device).eval(), meta
