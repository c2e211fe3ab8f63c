"""Datasets as uint8 tensors, fixed held-out splits and a device-resident loader with batched augmentation.

``load_dataset(name, data_dir, download)`` returns a :class:`DatasetBundle`. Registered datasets:
``cifar10``, ``cifar100`` (official python-pickle layout), ``folder`` (``train/<class>/*``,
``test/<class>/*`` images) and ``digits`` (scikit-learn's embedded 8x8 digits, no files needed).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from dard.data.base import DatasetBundle, ImageSet, channel_stats
from dard.errors import DardError
from dard.registry import Registry

DatasetFactory = Callable[[Path | None, bool], DatasetBundle]

DATASETS: Registry[DatasetFactory] = Registry("dataset")
register_dataset = DATASETS.register

DEFAULT_DATA_DIR_ENV = "DARD_DATA_DIR"


def default_data_dir() -> Path:
    """The data folder used when none is given: ``$DARD_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get(DEFAULT_DATA_DIR_ENV) or "data")


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False) -> DatasetBundle:
    """Load the registered dataset ``name`` from ``data_dir`` (downloading it first if allowed)."""
    factory = DATASETS.get(name)
    path = Path(data_dir).expanduser() if data_dir is not None else None
    bundle = factory(path, bool(download))
    if not isinstance(bundle, DatasetBundle):
        raise TypeError(f"dataset factory '{name}' returned {type(bundle).__name__}, not DatasetBundle")
    return bundle


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return DATASETS.names()


# Imported for their registrations (they use ``register_dataset`` defined above).
from dard.data import cifar, digits, image_folder  # noqa: E402,F401
from dard.data.loader import DeviceLoader, augment_batch, split_train_val  # noqa: E402

__all__ = [
    "DATASETS",
    "DatasetBundle",
    "DardError",
    "DeviceLoader",
    "ImageSet",
    "augment_batch",
    "channel_stats",
    "default_data_dir",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "split_train_val",
]
