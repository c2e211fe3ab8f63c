"""Dataset ``folder``: your own images in ``data_dir/train/<class>/*`` and ``data_dir/test/<class>/*``.

Images (.png, .jpg, .jpeg, .bmp, any case) are read with Pillow's PNG, JPEG and BMP decoders only, must have 8
bits per channel (a 16-bit image is refused, not clipped) and must all have the same size; they are not resized.
If every image is grayscale ('L') they stay single-channel, otherwise all are converted to RGB. Classes are the
sorted sub-folder names of ``train/``; ``test/`` must have the same ones. Normalisation statistics are computed
from the training images.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from dard.data.base import DatasetBundle, DataSource, ImageSet, channel_stats
from dard.errors import DardError
from dard.names import check_path
from dard.registry import register_dataset

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
# The decoders Pillow may use: those of the extensions above, whatever a file's content claims (Pillow picks a
# decoder by content; its EPS decoder runs Ghostscript on the file, others are rarely used and rarely audited).
_FORMATS = ("PNG", "JPEG", "BMP")
# Pillow modes of more than 8 bits per pixel (16-bit grayscale PNG: I;16; 32-bit int: I; float: F): convert()
# clips them to 0..255 instead of scaling, so a 16-bit image would load as a silently saturated one.
_WIDE_MODES = ("I", "F")


def class_dirs(split_dir: Path) -> list[str]:
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for name in names:  # class names go into records and reports, which are UTF-8 JSON
        check_path(split_dir / name, "class folder", components=False)
    return names


def _image_files(class_dir: Path) -> list[Path]:
    files = sorted(
        p
        for p in class_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    for path in files:  # the data's fingerprint hashes every name as UTF-8 (a name that is not failed there)
        check_path(path, "image file", components=False)
    return files


def split_counts(root: Path) -> tuple[int, int] | None:
    """The training and test images the loader would read from the folder ``root`` (the files it lists, none
    decoded), or None where its layout is not one it reads (the load says what is wrong)."""
    try:
        classes = class_dirs(root / "train")
        train, test = (sum(len(_image_files(root / split / c)) for c in classes) for split in ("train", "test"))
    except (DardError, OSError):
        return None
    return train, test


def _read(path: Path) -> np.ndarray:
    """Pixels as uint8 (H, W) for grayscale 'L' images, (H, W, 3) for everything else (converted to RGB)."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow's warnings about a file it reads anyway (a large image, a palette with transparency) would add
        # lines around dard's own output; a file it cannot read is the one-line error below
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path, formats=_FORMATS) as img:
                if img.mode.startswith(_WIDE_MODES):
                    raise DardError(
                        f"image {path} has more than 8 bits per pixel (Pillow mode {img.mode}); dard reads 8-bit "
                        "images: convert it to 8 bits (e.g. mode L or RGB) first"
                    )
                img.load()
                pixels: Image.Image = img if img.mode == "L" else img.convert("RGB")
                return np.asarray(pixels, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise DardError(f"cannot read image {path}: {' '.join(str(exc).split())}") from None


def _read_split(
    split_dir: Path, classes: list[str], size: list[tuple[int, int] | None]
) -> tuple[list[np.ndarray], list[int]]:
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        files = _image_files(split_dir / name)
        if not files:
            raise DardError(f"class folder {split_dir / name} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        for path in files:
            arr = _read(path)
            hw = (int(arr.shape[0]), int(arr.shape[1]))
            if size[0] is None:
                size[0] = hw
            elif hw != size[0]:
                raise DardError(
                    f"image {path} is {hw[1]}x{hw[0]} but the others are {size[0][1]}x{size[0][0]} "
                    f"(width x height); all images must have the same size"
                )
            arrays.append(arr)
            labels.append(label)
    return arrays, labels


def _to_imageset(arrays: list[np.ndarray], labels: list[int], gray: bool) -> ImageSet:
    if gray:
        stacked = np.stack(arrays)[:, None, :, :]
    else:
        stacked = np.stack([a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays])
        stacked = stacked.transpose(0, 3, 1, 2)
    x = torch.from_numpy(np.ascontiguousarray(stacked))
    y = torch.tensor(labels, dtype=torch.int64)
    return ImageSet(x, y)


@register_dataset("folder")
def image_folder(data_dir: Path | None = None, download: bool = False) -> DatasetBundle:
    """Images from ``data_dir/train/<class>/`` and ``data_dir/test/<class>/`` (``download`` is ignored)."""
    hint = "expected <data-dir>/train/<class>/*.png|jpg|jpeg|bmp and <data-dir>/test/<class>/*"
    if data_dir is None:
        raise DardError(f"dataset 'folder' needs a data folder (--data-dir); {hint}")
    root = Path(data_dir)
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"  # a file or FIFO given as --data-dir
        raise DardError(f"image folder {root} {what}; {hint}")
    train_dir, test_dir = root / "train", root / "test"
    for split_dir in (train_dir, test_dir):
        if not split_dir.is_dir():
            raise DardError(f"image folder {root} has no '{split_dir.name}/' sub-folder; {hint}")
    classes = class_dirs(train_dir)
    if not classes:
        raise DardError(f"{train_dir} has no class sub-folders; {hint}")
    test_classes = class_dirs(test_dir)
    if test_classes != classes:
        missing = sorted(set(classes) - set(test_classes))
        extra = sorted(set(test_classes) - set(classes))
        detail = "; ".join(
            part
            for part in (
                f"missing in test: {', '.join(missing)}" if missing else "",
                f"not in train: {', '.join(extra)}" if extra else "",
            )
            if part
        )
        raise DardError(f"{test_dir} must have the same class folders as {train_dir} ({detail})")
    size: list[tuple[int, int] | None] = [None]
    train_arrays, train_labels = _read_split(train_dir, classes, size)
    test_arrays, test_labels = _read_split(test_dir, classes, size)
    gray = all(a.ndim == 2 for a in train_arrays) and all(a.ndim == 2 for a in test_arrays)
    train = _to_imageset(train_arrays, train_labels, gray)
    test = _to_imageset(test_arrays, test_labels, gray)
    mean, std = channel_stats(train)
    h, w = train.x.shape[2:]
    return DatasetBundle(
        name="folder",
        train=train,
        test=test,
        classes=classes,
        mean=mean,
        std=std,
        crop_padding=max(1, min(int(h), int(w)) // 8),
        flip=True,
        source=DataSource(root, tuple(_relative_files(root, classes))),
    )


def _relative_files(root: Path, classes: list[str]) -> list[str]:
    """Every image file the loader reads, relative to ``root``, in reading order."""
    return [
        p.relative_to(root).as_posix()
        for split in ("train", "test")
        for name in classes
        for p in _image_files(root / split / name)
    ]
