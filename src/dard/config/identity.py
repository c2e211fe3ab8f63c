"""A run config's identity: what makes two runs the same run (experiment reuse) or the same row of a report.

A recorded config is parsed again with the current :class:`~dard.config.RunConfig`, so options added to
dard since a run was made count at their defaults and an old ``config.yaml`` has the same identity as the config
that would make it today. Keys that change where or how fast a run ran but not its numbers are left out
(:data:`NOT_IDENTITY`); reports also leave out the seed and the name (:data:`SEEDLESS`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from dard.config.read import parse_config

__all__ = ["NOT_IDENTITY", "SEEDLESS", "config_diff", "config_identity", "identity_hash", "without_keys"]

# Keys that may differ between a recorded run and a request without making it a different run: where it ran
# (and where its teacher run lies: the teacher run is checked on its own), and the fp32 speed switches
# (tests/test_speed.py). bf16 autocast changes the numbers, so it counts.
NOT_IDENTITY: tuple[tuple[str, ...], ...] = (
    ("device",),
    ("progress",),
    ("data", "dir"),
    ("data", "download"),
    ("teacher", "checkpoint"),
    ("speed", "threads"),
    ("speed", "channels_last"),
    ("speed", "compile"),
    ("speed", "compile_backend"),
    ("speed", "compile_mode"),
    ("speed", "sync_every"),
    ("speed", "cudnn_benchmark"),
    ("speed", "sync_bn"),
    ("keep_epochs",),  # extra copies of checkpoints; the training is the same
)
#: also left out when runs are grouped over seeds: the seed, and the name (which carries the seed suffix)
SEEDLESS: tuple[tuple[str, ...], ...] = (("seed",), ("name",))


def config_identity(cfg: Mapping[str, Any], drop: Iterable[tuple[str, ...]] = ()) -> dict[str, Any]:
    """``cfg`` (a run config mapping) parsed and dumped as JSON-ready data, without :data:`NOT_IDENTITY` and the
    ``drop`` key paths. A config that does not parse is a one-line DardError (what it names is not built: a
    recorded run's identity does not depend on what this version registers or refuses)."""
    return without_keys(parse_config(dict(cfg), build=False).model_dump(mode="json"), (*NOT_IDENTITY, *drop))


def without_keys(cfg: Mapping[str, Any], paths: Iterable[tuple[str, ...]]) -> dict[str, Any]:
    """A deep copy of ``cfg`` without the nested keys ``paths`` (absent ones are ignored)."""
    d = copy.deepcopy(dict(cfg))
    for path in paths:
        node = d
        for k in path[:-1]:
            node = node.get(k, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return d


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two (nested) identities."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return [d for k in keys for d in config_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def identity_hash(identity: Mapping[str, Any]) -> str:
    """A short stable hash of an identity (canonical JSON, SHA-256, 12 hex digits)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
