"""Datasets as uint8 tensors, fixed held-out splits and a device-resident loader with batched augmentation.

``load_dataset(name, data_dir, download)`` returns a :class:`DatasetBundle`. Registered datasets:
``cifar10``, ``cifar100`` (official python-pickle layout), ``folder`` (``train/<class>/*``,
``test/<class>/*`` images) and ``digits`` (scikit-learn's embedded 8x8 digits, no files needed).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# each module registers its datasets on import (dard.registry)
from dard.data import cifar, digits, image_folder  # noqa: F401
from dard.data.base import DatasetBundle, ImageSet, channel_stats
from dard.data.download import DEFAULT_DATA_DIR_ENV, default_data_dir
from dard.data.loader import DeviceLoader, augment_batch, split_train_val, val_count
from dard.errors import DardError
from dard.registry import DATASETS, register_dataset

DatasetFactory = Callable[[Path | None, bool], DatasetBundle]


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = False) -> DatasetBundle:
    """Load the registered dataset ``name`` from ``data_dir`` (downloading it first if allowed)."""
    factory = DATASETS.get(name)
    path = Path(data_dir).expanduser() if data_dir is not None else None
    bundle = factory(path, bool(download))
    if not isinstance(bundle, DatasetBundle):
        raise TypeError(f"dataset factory '{name}' returned {type(bundle).__name__}, not DatasetBundle")
    return bundle


def known_sizes(name: str, data_dir: str | Path | None = None) -> tuple[int | None, int | None]:
    """The class and channel counts dataset ``name``'s images will have, where known without reading them (None
    where not: a dataset registered by the user, a folder's channels, which its images decide), so that a model's
    weights are matched against them before the data loads."""
    if name in (cifar.CIFAR10.name, cifar.CIFAR100.name):
        return (cifar.CIFAR10 if name == cifar.CIFAR10.name else cifar.CIFAR100).num_classes, 3
    if name == "digits":
        return digits.NUM_CLASSES, 1
    if name == "folder" and data_dir is not None:
        train = Path(data_dir).expanduser() / "train"
        try:
            return (len(image_folder.class_dirs(train)) or None) if train.is_dir() else None, None
        except (DardError, OSError):  # the data load says what is wrong with the folder
            return None, None
    return None, None


def known_split_sizes(name: str, val_size: float, data_dir: str | Path | None = None) -> tuple[int, int] | None:
    """The training images left after holding ``val_size`` out (a fraction below 1, else a count), and the test
    images, of dataset ``name`` where known without reading the images: the embedded ``digits``, and a ``folder``
    in ``data_dir`` by its files (listed, none decoded); None for the others (CIFAR copies differ in size, a user's
    dataset), for a folder whose layout the load refuses, and for a ``val_size`` that leaves none (the load says)."""
    if name == "digits":
        sizes: tuple[int, int] | None = (digits.TRAIN_SIZE, digits.TEST_SIZE)
    elif name == "folder" and data_dir is not None:
        sizes = image_folder.split_counts(Path(data_dir).expanduser())
    else:
        sizes = None
    if sizes is None:
        return None
    try:
        held_out = val_count(sizes[0], val_size if val_size < 1 else int(val_size))
    except DardError:
        return None
    return sizes[0] - held_out, sizes[1]


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return DATASETS.names()


__all__ = [
    "DATASETS",
    "DEFAULT_DATA_DIR_ENV",
    "DatasetBundle",
    "DardError",
    "DeviceLoader",
    "ImageSet",
    "augment_batch",
    "channel_stats",
    "default_data_dir",
    "known_sizes",
    "known_split_sizes",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "split_train_val",
]
