"""The embedded default dataset: scikit-learn's 8x8 handwritten digits (no files, no download)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from dard.data.base import DatasetBundle, ImageSet, channel_stats
from dard.data.loader import split_train_val
from dard.registry import register_dataset

# The train/test split is fixed once and for all (independent of any run's seed).
SPLIT_SEED = 20240101
TEST_SIZE = 360
TRAIN_SIZE = 1437  # of scikit-learn's 1797 (known before the data loads: dard.data.known_split_sizes)
NUM_CLASSES = 10  # the digits 0-9 (known before the data loads: dard.data.known_sizes)


@register_dataset("digits")
def digits(data_dir: Path | None = None, download: bool = False) -> DatasetBundle:
    """1797 grayscale 8x8 digits (values 0..16 scaled to 0..255): 1437 train / 360 test, stratified.

    ``data_dir`` and ``download`` are ignored: the data ships with scikit-learn.
    """
    images, target = read_digits()
    pixels = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    x = torch.from_numpy(np.ascontiguousarray(pixels[:, None, :, :]))
    y = torch.from_numpy(np.asarray(target, dtype=np.int64))
    train, test = split_train_val(ImageSet(x, y), TEST_SIZE, seed=SPLIT_SEED)
    mean, std = channel_stats(train)
    classes = [str(c) for c in range(NUM_CLASSES)]
    return DatasetBundle(
        name="digits",
        train=train,
        test=test,
        classes=classes,
        mean=mean,
        std=std,
        crop_padding=1,
        flip=False,
    )


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``load_digits`` gives them: images (1797, 8, 8) of float64 values 0..16, targets.

    Read from the file scikit-learn ships (``sklearn/datasets/data/digits.csv.gz``: 64 pixels then the target per
    row, what ``load_digits`` parses) without importing scikit-learn: ``sklearn.datasets`` imports most of it and
    SciPy, about 2 s of CPU at the start of every command on this dataset, for a 100 kB file.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    folders = (spec.submodule_search_locations or []) if spec else []
    path = next((Path(f, "datasets", "data", "digits.csv.gz") for f in folders), None)
    if path is None or not path.is_file():  # another layout: scikit-learn's own loader
        from sklearn.datasets import load_digits

        raw = load_digits()
        return np.asarray(raw.images, dtype=np.float64), np.asarray(raw.target)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
