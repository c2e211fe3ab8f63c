"""The embedded default dataset: scikit-learn's 8x8 handwritten digits (no files, no download)."""

from __future__ import annotations

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
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = np.asarray(raw.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    pixels = np.clip(np.rint(images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    x = torch.from_numpy(np.ascontiguousarray(pixels[:, None, :, :]))
    y = torch.from_numpy(np.asarray(raw.target, dtype=np.int64))
    train, test = split_train_val(ImageSet(x, y), TEST_SIZE, seed=SPLIT_SEED)
    mean, std = channel_stats(train)
    classes = [str(int(c)) for c in raw.target_names]
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
