"""Containers for image datasets: uint8 image tensors with int64 labels, plus per-dataset metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from dard.errors import DardError

__all__ = ["DataSource", "DatasetBundle", "ImageSet", "channel_stats"]


@dataclass
class ImageSet:
    """Images ``x`` (uint8, shape (N, C, H, W)) with labels ``y`` (int64, shape (N,))."""

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or not isinstance(self.y, Tensor):
            raise DardError("ImageSet needs torch tensors for x and y")
        if self.x.dtype != torch.uint8:
            raise DardError(f"ImageSet images must be uint8, got {self.x.dtype}")
        if self.x.dim() != 4:
            raise DardError(f"ImageSet images must have shape (N, C, H, W), got {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64:
            raise DardError(f"ImageSet labels must be int64, got {self.y.dtype}")
        if self.y.dim() != 1:
            raise DardError(f"ImageSet labels must have shape (N,), got {tuple(self.y.shape)}")
        if self.x.shape[0] != self.y.shape[0]:
            raise DardError(f"ImageSet has {self.x.shape[0]} images but {self.y.shape[0]} labels")
        if self.x.device != self.y.device:
            raise DardError(f"ImageSet images on {self.x.device} but labels on {self.y.device}")
        if self.y.numel() and int(self.y.min()) < 0:
            raise DardError("ImageSet labels must be non-negative")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def subset(self, idx: Tensor | Sequence[int]) -> ImageSet:
        """The images at ``idx`` (an index tensor, list of indices or boolean mask), as a new ImageSet."""
        if not isinstance(idx, Tensor):
            idx = torch.as_tensor(idx, dtype=torch.int64)
        idx = idx.to(self.x.device)
        if idx.dtype != torch.bool:
            idx = idx.long()
        return ImageSet(self.x[idx], self.y[idx])

    def to(self, device: torch.device | str) -> ImageSet:
        """A copy on ``device`` (the same object if it is already there)."""
        device = torch.device(device)
        if self.x.device == device:
            return self
        return ImageSet(self.x.to(device), self.y.to(device))


def channel_stats(images: ImageSet) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of the images scaled to [0, 1] (float64 accumulation)."""
    if len(images) == 0:
        raise DardError("cannot compute channel statistics of an empty image set")
    c = images.x.shape[1]
    x = images.x.transpose(0, 1).reshape(c, -1).to(torch.float64) / 255.0
    mean = x.mean(dim=1)
    std = x.std(dim=1, unbiased=False).clamp_min(1e-6)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


@dataclass(frozen=True)
class DataSource:
    """The files a dataset was read from, for the provenance of records (:mod:`dard.data.fingerprint`)."""

    folder: Path
    files: tuple[str, ...]  # every file the loader read, relative to ``folder``
    # the published MD5 of each file of the official release, where there is one (CIFAR's python version)
    official_md5: Mapping[str, str] | None = None


@dataclass
class DatasetBundle:
    """A dataset's train and test images with its class names, normalisation and augmentation defaults, and the
    files it came from (None for data shipped inside a package)."""

    name: str
    train: ImageSet
    test: ImageSet
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False
    source: DataSource | None = None

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        self.crop_padding = int(self.crop_padding)
        self.flip = bool(self.flip)
        if not self.classes:
            raise DardError(f"dataset '{self.name}' has no classes")
        if len(set(self.classes)) != len(self.classes):
            raise DardError(f"dataset '{self.name}' has duplicate class names")
        if self.train.x.shape[1:] != self.test.x.shape[1:]:
            raise DardError(
                f"dataset '{self.name}': train images {tuple(self.train.x.shape[1:])} and test images "
                f"{tuple(self.test.x.shape[1:])} differ in shape"
            )
        channels = self.train.x.shape[1]
        if len(self.mean) != channels or len(self.std) != channels:
            raise DardError(f"dataset '{self.name}': mean/std need {channels} values (one per channel)")
        if any(s <= 0 for s in self.std):
            raise DardError(f"dataset '{self.name}': std values must be positive")
        if self.crop_padding < 0:
            raise DardError(f"dataset '{self.name}': crop_padding must be >= 0")
        for split, images in (("train", self.train), ("test", self.test)):
            if len(images) and int(images.y.max()) >= len(self.classes):
                raise DardError(
                    f"dataset '{self.name}': {split} label {int(images.y.max())} out of range "
                    f"for {len(self.classes)} classes"
                )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def in_channels(self) -> int:
        return self.image_shape[0]

    def __repr__(self) -> str:
        return (
            f"DatasetBundle(name={self.name!r}, train={len(self.train)}, test={len(self.test)}, "
            f"classes={self.num_classes}, image_shape={self.image_shape}, crop_padding={self.crop_padding}, "
            f"flip={self.flip})"
        )
