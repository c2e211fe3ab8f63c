"""CIFAR-10 and CIFAR-100 from the official "python version" archives.

Only the official layout is read: ``<data_dir>/cifar-10-batches-py/{data_batch_1..5, test_batch,
batches.meta}`` and ``<data_dir>/cifar-100-python/{train, test, meta}`` (fine labels). Those files are
Python pickles, so they are read with a restricted unpickler that can only rebuild numpy arrays (no other
classes or functions), and only numpy arrays and lists are taken from the result after checking their
types and shapes. Do not point the loader at pickle files from untrusted sources all the same.

With ``download=True`` a missing folder is fetched from the official URL (module constants, so tests can
point them elsewhere), checked against its MD5 and extracted without letting any path leave the data folder.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dard.data.base import DatasetBundle, DataSource, ImageSet
from dard.data.download import default_data_dir, download_archive, extract_folder
from dard.errors import DardError, one_line
from dard.io import check_writable
from dard.registry import register_dataset

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"

_ROW = 3 * 32 * 32


@dataclass(frozen=True)
class _Spec:
    name: str  # registry name
    title: str  # for messages
    folder: str  # folder inside the archive and inside data_dir
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    url_const: str  # name of the module constant holding the URL
    md5_const: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # MD5 of each file of the official python-version release, as torchvision checks them
    official_md5: dict[str, str]

    @property
    def all_files(self) -> tuple[str, ...]:
        return (*self.train_files, *self.test_files, self.meta_file)

    @property
    def url(self) -> str:
        return str(globals()[self.url_const])

    @property
    def md5(self) -> str:
        return str(globals()[self.md5_const])


CIFAR10 = _Spec(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
    url_const="CIFAR10_URL",
    md5_const="CIFAR10_MD5",
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2471, 0.2435, 0.2616),
    official_md5={
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
)

CIFAR100 = _Spec(
    name="cifar100",
    title="CIFAR-100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    url_const="CIFAR100_URL",
    md5_const="CIFAR100_MD5",
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    official_md5={
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
)


# --------------------------------------------------------------------------------------------------------
# Reading the pickle files


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and scalars, and nothing else."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if module == "numpy.core" or module.startswith("numpy.core."):
            module = "numpy._core" + module[len("numpy.core") :]  # pre-2.0 numpy pickles
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")
        return super().find_class(module, name)


def _corrupt(path: Path, reason: object) -> DardError:
    return DardError(
        f"cannot read {path}: {one_line(reason)}; the file looks corrupt or truncated, "
        f"delete {path.parent} and fetch it again (--download)"
    )


def _load_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            obj = _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except DardError:
        raise
    except OSError as exc:
        raise DardError(f"cannot open {path}: {one_line(exc.strerror or exc)}") from None
    except Exception as exc:  # truncated or garbled pickle: EOFError, UnpicklingError, ValueError, ...
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise _corrupt(path, f"expected a dict, found {type(obj).__name__}")
    return obj


def _get(record: dict, key: str, path: Path) -> Any:
    """``record[key]`` for str or bytes keys (the official files have bytes keys under encoding='bytes')."""
    if key in record:
        return record[key]
    bkey = key.encode()
    if bkey in record:
        return record[bkey]
    raise _corrupt(path, f"missing key '{key}'")


def _read_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    record = _load_pickle(path)
    data = _get(record, "data", path)
    labels = _get(record, label_key, path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _corrupt(path, f"'data' must be a uint8 array of shape (N, {_ROW}), found {desc}")
    if isinstance(labels, list):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
            raise _corrupt(path, f"'{label_key}' must hold integers")
        if not all(0 <= v < num_classes for v in labels):  # before the int64 conversion: 2**70 would overflow it
            raise _corrupt(path, f"labels outside 0..{num_classes - 1}")
        labels = np.asarray(labels, dtype=np.int64)
    elif isinstance(labels, np.ndarray) and np.issubdtype(labels.dtype, np.integer):
        labels = labels.astype(np.int64)
    else:
        raise _corrupt(path, f"'{label_key}' must be a list or integer array, found {type(labels).__name__}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise _corrupt(path, f"{data.shape[0]} images but {labels.shape} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise _corrupt(path, f"labels outside 0..{num_classes - 1}")
    return data, labels


def _read_names(path: Path, key: str) -> list[str]:
    record = _load_pickle(path)
    names = _get(record, key, path)
    if not isinstance(names, list) or not all(isinstance(n, (str, bytes)) for n in names):
        raise _corrupt(path, f"'{key}' must be a list of strings")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _read_split(folder: Path, files: tuple[str, ...], spec: _Spec) -> ImageSet:
    parts = [_read_batch(folder / f, spec.label_key, spec.num_classes) for f in files]
    data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
    x = torch.from_numpy(np.ascontiguousarray(data.reshape(-1, 3, 32, 32)))
    return ImageSet(x, torch.from_numpy(labels))


def download_cifar(spec: _Spec, root: Path) -> Path:
    """Fetch, verify and extract ``spec``'s archive into ``root``; returns the extracted folder."""
    # a file, FIFO or read-only file system there is the user's to fix: one line before any download, not an
    # OSError from mkdir or the temporary file (an internal error)
    check_writable(root, folder=True, what=f"{spec.title} data folder (--data-dir)")
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    try:
        archive = download_archive(spec.url, spec.md5, root, spec.title)
        try:
            extract_folder(archive, root, spec.folder, spec.title)
        finally:
            archive.unlink(missing_ok=True)
    except BaseException:
        if created and not any(root.iterdir()):
            root.rmdir()  # leave no empty folder behind after a failed download
        raise
    folder = root / spec.folder
    missing = [f for f in spec.all_files if not (folder / f).is_file()]
    if missing:
        raise DardError(f"the downloaded {spec.title} archive lacks {', '.join(missing)} in {folder}")
    return folder


# --------------------------------------------------------------------------------------------------------
# Datasets


def _layout_hint(spec: _Spec) -> str:
    return (
        ", ".join(spec.all_files)
        if len(spec.all_files) < 5
        else (f"{spec.train_files[0]}..{spec.train_files[-1][-1]}, {', '.join(spec.test_files)}, {spec.meta_file}")
    )


def load_cifar(spec: _Spec, data_dir: Path | None, download: bool) -> DatasetBundle:
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = root / spec.folder
    if not folder.exists():
        if not download:
            raise DardError(
                f"{spec.title} not found: expected the official python version extracted at {folder} "
                f"({_layout_hint(spec)}); extract {spec.url} into {root} or pass --download to fetch it"
            )
        download_cifar(spec, root)
    if not folder.is_dir():
        raise DardError(f"{folder} is not a folder; expected the extracted {spec.title} python version there")
    missing = [f for f in spec.all_files if not (folder / f).is_file()]
    if missing:
        raise DardError(
            f"{spec.title} folder {folder} is incomplete (missing {', '.join(missing)}); delete it and fetch "
            f"it again (--download)"
        )
    classes = _read_names(folder / spec.meta_file, spec.names_key)
    if len(classes) != spec.num_classes:
        raise _corrupt(folder / spec.meta_file, f"{len(classes)} class names, expected {spec.num_classes}")
    train = _read_split(folder, spec.train_files, spec)
    test = _read_split(folder, spec.test_files, spec)
    return DatasetBundle(
        name=spec.name,
        train=train,
        test=test,
        classes=classes,
        mean=spec.mean,
        std=spec.std,
        crop_padding=4,
        flip=True,
        source=DataSource(folder, spec.all_files, spec.official_md5),
    )


@register_dataset("cifar10")
def cifar10(data_dir: Path | None = None, download: bool = False) -> DatasetBundle:
    """CIFAR-10 (50,000 train / 10,000 test, 3x32x32) from ``data_dir/cifar-10-batches-py``."""
    return load_cifar(CIFAR10, data_dir, download)


@register_dataset("cifar100")
def cifar100(data_dir: Path | None = None, download: bool = False) -> DatasetBundle:
    """CIFAR-100 with fine labels (50,000 train / 10,000 test, 3x32x32) from ``data_dir/cifar-100-python``."""
    return load_cifar(CIFAR100, data_dir, download)
