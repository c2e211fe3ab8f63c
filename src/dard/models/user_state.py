"""The process-wide torch settings a user's code may change and dard's run depends on, put back after it ran.

A ``module:function`` model's module is imported, and its factory called, inside dard's own process. A habit of
inference scripts there (``torch.set_grad_enabled(False)``, ``torch.set_default_dtype(torch.float64)``,
``torch.set_num_threads(1)``) would otherwise carry over into the whole run: no gradients at the first training
step (an internal error), dard's own tensors in another dtype, reductions that no longer follow the run's recorded
thread count. What the user's code builds keeps what it chose (a float64 model stays float64).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["torch_settings_kept"]


def _set_deterministic(value: tuple[bool, bool]) -> None:
    torch.use_deterministic_algorithms(value[0], warn_only=value[1])


def _set_cudnn_benchmark(value: bool) -> None:
    torch.backends.cudnn.benchmark = value


# (read, write) of each setting
_SETTINGS: tuple[tuple[Callable[[], Any], Callable[[Any], Any]], ...] = (
    (torch.is_grad_enabled, torch.set_grad_enabled),
    (torch.get_default_dtype, torch.set_default_dtype),
    (torch.get_num_threads, torch.set_num_threads),
    (torch.get_float32_matmul_precision, torch.set_float32_matmul_precision),
    (
        lambda: (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
        _set_deterministic,
    ),
    (lambda: torch.backends.cudnn.benchmark, _set_cudnn_benchmark),
)


@contextmanager
def torch_settings_kept() -> Iterator[None]:
    """Run the block (a user module's import, a user factory), then restore each of torch's global settings it
    changed: grad mode, default dtype, thread count, float32 matmul precision, deterministic algorithms, cuDNN
    benchmarking."""
    saved = [(read(), read, write) for read, write in _SETTINGS]
    try:
        yield
    finally:
        for value, read, write in saved:
            if read() != value:  # only what changed: set_num_threads and the like are not free
                write(value)
