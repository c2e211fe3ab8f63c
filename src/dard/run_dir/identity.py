"""What makes two recorded run configs the same run: everything but where it ran.

Keys that may differ between two records of one run: the device and host (threads, data folder, where its teacher
checkpoint lies: a teacher run is checked on its own), and the fp32 speed switches, which agree to rounding
(tests/test_speed.py). bf16 autocast changes the numbers, so it counts. Used by `dard experiment` (reusing run
folders) and `dard import` (merging an archive into a runs folder).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

NOT_IDENTITY = (
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
)


def config_identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` without the keys of :data:`NOT_IDENTITY`."""
    d = copy.deepcopy(dict(cfg))
    for path in NOT_IDENTITY:
        node = d
        for k in path[:-1]:
            node = node.get(k, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return d


def config_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested mappings."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return [d for k in keys for d in config_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]
