"""Training: configs, run setup, the training loop, resumable state, the final evaluation."""

from dard.training.config import RunConfig, load_config, parse_config
from dard.training.loop import train
from dard.training.setup import load_run_config

__all__ = ["RunConfig", "load_config", "parse_config", "train", "load_run_config"]
