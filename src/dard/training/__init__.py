"""Training: run setup, the training loop, resumable state, the final evaluation (the run config itself is
:mod:`dard.config`)."""

from dard.training.loop import train
from dard.training.setup import load_run_config

__all__ = ["train", "load_run_config"]
