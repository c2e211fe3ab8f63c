"""Training: configs, the training loop, resumable state."""

from dard.training.config import RunConfig, load_config, parse_config
from dard.training.loop import load_run_config, train

__all__ = ["RunConfig", "load_config", "parse_config", "train", "load_run_config"]
