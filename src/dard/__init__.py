"""dard: adversarially robust knowledge distillation (DARD with DPGD) and robustness evaluation.

The main entry points, importable from the top level::

    import dard

    attack = dard.create_attack("dpgd", eps=8 / 255, steps=10)      # attack(model, x, y) -> x_adv
    method = dard.create_method("dard", lam=0.5)                      # method(student, teacher, x, y) -> LossOutput
    model = dard.create_model("resnet18", num_classes=10)          # or "mypkg.nets:make_net" (user code)
    model = dard.create_model(my_net, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])  # wrap an nn.Module
    model = dard.create_model("timm:vit_tiny_patch16_224", img_size=32, patch_size=4)  # dard[timm]
    model, meta = dard.load_checkpoint("runs/dard/best.safetensors")  # a dard checkpoint or run folder
    record = dard.evaluate(model, x, y, dard.build_suite(["pgd20", "apgd-ce"], eps=8 / 255))  # an EvalRecord

    @dard.register_model("my_net")      # any nn.Module factory; dard wraps the normalisation around it
    def my_net(num_classes=10): ...
    # dard.register_attack / dard.register_method: an Attack / Method subclass under a name

They are imported on first use (module ``__getattr__``), so ``import dard`` and the ``dard`` command's start-up
do not pay for PyTorch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these resolve lazily below
    from dard import attacks
    from dard.attacks import create_attack, register_attack
    from dard.checkpoint import load_checkpoint
    from dard.evaluation.suite import build_suite, evaluate
    from dard.methods import create_method, register_method
    from dard.models import create_model, register_model

__all__ = [
    "__version__",
    "attacks",
    "build_suite",
    "create_attack",
    "create_method",
    "create_model",
    "evaluate",
    "load_checkpoint",
    "register_attack",
    "register_method",
    "register_model",
]

# public name -> (module, attribute; None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "attacks": ("dard.attacks", None),
    "build_suite": ("dard.evaluation.suite", "build_suite"),
    "create_attack": ("dard.attacks", "create_attack"),
    "create_method": ("dard.methods", "create_method"),
    "create_model": ("dard.models", "create_model"),
    "evaluate": ("dard.evaluation.suite", "evaluate"),
    "load_checkpoint": ("dard.checkpoint", "load_checkpoint"),
    "register_attack": ("dard.attacks", "register_attack"),
    "register_method": ("dard.methods", "register_method"),
    "register_model": ("dard.models", "register_model"),
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from dard._version import __version__

        value: Any = __version__
    elif name in _LAZY:
        module, attr = _LAZY[name]
        value = importlib.import_module(module)
        if attr is not None:
            value = getattr(value, attr)
    else:
        raise AttributeError(f"module 'dard' has no attribute {name!r}")
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
