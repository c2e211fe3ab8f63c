"""dard: adversarially robust knowledge distillation (DARD with DPGD) and robustness evaluation."""

__version__ = "0.1.0"
