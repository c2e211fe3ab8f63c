"""Tests for dard.data: datasets, splits, batched augmentation, the device loader, CIFAR reading/downloading."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
import sys
import tarfile
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import SYNTHETIC_PER_BATCH, SYNTHETIC_TEST, shared_folder

import dard.data as data
from dard.data import (
    DatasetBundle,
    DeviceLoader,
    ImageSet,
    augment_batch,
    cifar,
    download,
    list_datasets,
    load_dataset,
    split_train_val,
)
from dard.errors import DardError

# --------------------------------------------------------------------------------------------------------
# helpers


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def _indexed_images(n: int, c: int = 1, h: int = 4, w: int = 4, num_classes: int = 10) -> ImageSet:
    """Image i is constant i (so an index can be read back from any interior pixel); label i % num_classes."""
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, c, h, w).contiguous()
    y = torch.arange(n, dtype=torch.int64) % num_classes
    return ImageSet(x, y)


def _batch_ids(x: torch.Tensor) -> list[int]:
    """Sample ids of a batch from _indexed_images (centre pixel survives crops with padding 1 on 4x4)."""
    return [int(v) for v in torch.round(x[:, 0, 1, 1] * 255).long()]


def _reference_augment(x: torch.Tensor, p: int, flip: bool, seed: int) -> torch.Tensor:
    """Naive per-image crop/flip with the draw order documented by augment_batch."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * p + 1, (n, 2), generator=g) if p > 0 else torch.zeros(n, 2, dtype=torch.long)
    flips = torch.rand(n, generator=g) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    out = torch.empty_like(x)
    for i in range(n):
        padded = torch.zeros(c, h + 2 * p, w + 2 * p, dtype=x.dtype)
        padded[:, p : p + h, p : p + w] = x[i]
        oy, ox = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[:, oy : oy + h, ox : ox + w]
        out[i] = crop.flip(-1) if flips[i] else crop
    return out


# --------------------------------------------------------------------------------------------------------
# registry, containers


def test_registry_lists_datasets_and_rejects_unknown():
    assert {"cifar10", "cifar100", "digits", "folder"} <= set(list_datasets())
    with pytest.raises(DardError) as err:
        load_dataset("nope")
    assert "digits" in _one_line(err)


def test_imageset_validation_and_subset():
    with pytest.raises(DardError):
        ImageSet(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))  # float images
    with pytest.raises(DardError):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(DardError):
        ImageSet(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(DardError):
        ImageSet(torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))
    s = _indexed_images(10)
    sub = s.subset([3, 1])
    assert len(sub) == 2 and sub.y.tolist() == [3, 1] and int(sub.x[0, 0, 0, 0]) == 3
    assert s.to("cpu") is s
    with pytest.raises(DardError):
        DatasetBundle("t", s, s, classes=["a", "b"], mean=(0.5,), std=(0.5,))  # labels up to 9
    b = DatasetBundle("t", s, s, classes=[str(i) for i in range(10)], mean=(0.5,), std=(0.5,), crop_padding=1)
    assert b.num_classes == 10 and b.image_shape == (1, 4, 4)
    with pytest.raises(DardError):
        DatasetBundle("t", s, s, classes=[str(i) for i in range(10)], mean=(0.5, 0.5, 0.5), std=(0.5,) * 3)


# --------------------------------------------------------------------------------------------------------
# digits


def test_digits_loads():
    b = load_dataset("digits")
    assert b.name == "digits"
    assert len(b.train) == 1437 and len(b.test) == 360
    assert b.train.x.shape == (1437, 1, 8, 8) and b.test.x.shape == (360, 1, 8, 8)
    assert b.train.x.dtype == torch.uint8 and b.train.y.dtype == torch.int64
    assert int(b.train.x.max()) == 255 and int(b.train.x.min()) == 0
    assert b.classes == [str(i) for i in range(10)] and b.num_classes == 10
    assert b.image_shape == (1, 8, 8)
    assert b.crop_padding == 1 and b.flip is False
    assert len(b.mean) == 1 and len(b.std) == 1 and 0 < b.mean[0] < 1 and b.std[0] > 0
    counts = torch.bincount(b.test.y, minlength=10)
    assert int(counts.min()) >= 30  # every class represented in test
    again = load_dataset("digits", data_dir="/nonexistent", download=False)
    assert torch.equal(again.test.x, b.test.x) and torch.equal(again.train.y, b.train.y)


def _digest(*arrays) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


# The split of scikit-learn's load_digits(), as dard has always made it (train x, y, then test x, y)
DIGITS_SPLIT = "55b44a55d1ab163940ddb24cb6dd8f9b12d350e8760d29108a3495a9d1352c3c"


def test_digits_are_read_from_scikit_learns_file_without_importing_it(monkeypatch):
    # sklearn.datasets imports most of scikit-learn and SciPy: about 2 s of CPU at every start on digits
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # importing it now fails
    b = load_dataset("digits")
    assert _digest(b.train.x, b.train.y, b.test.x, b.test.y) == DIGITS_SPLIT
    # where scikit-learn keeps the file elsewhere, its own loader gives the same arrays
    raw = types.SimpleNamespace(images=np.zeros((1797, 8, 8)), target=np.arange(1797) % 10)
    fake = types.SimpleNamespace(load_digits=lambda: raw)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", fake)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    other = load_dataset("digits")
    assert int(other.train.x.max()) == 0 and sorted(set(other.test.y.tolist())) == list(range(10))


# --------------------------------------------------------------------------------------------------------
# split_train_val


def test_split_train_val_deterministic_disjoint_sizes():
    s = _indexed_images(200, num_classes=4)
    tr, va = split_train_val(s, 50, seed=1)
    assert len(tr) == 150 and len(va) == 50
    ids_tr, ids_va = set(tr.x[:, 0, 0, 0].tolist()), set(va.x[:, 0, 0, 0].tolist())
    assert not ids_tr & ids_va and len(ids_tr | ids_va) == 200
    assert sorted(torch.bincount(va.y).tolist()) == [12, 12, 13, 13]  # stratified
    tr2, va2 = split_train_val(s, 50, seed=1)
    assert torch.equal(va.x, va2.x) and torch.equal(tr.y, tr2.y)
    _, va3 = split_train_val(s, 50, seed=2)
    assert not torch.equal(va.x, va3.x)
    tr4, va4 = split_train_val(s, 0.1, seed=0)
    assert len(va4) == 20 and len(tr4) == 180
    for bad in (0, 200, 1.0, 0.0, -3, "5"):
        with pytest.raises(DardError):
            split_train_val(s, bad, seed=0)


# --------------------------------------------------------------------------------------------------------
# augment_batch


def test_augment_identity():
    x = torch.rand(5, 3, 6, 6)
    out = augment_batch(x, 0, False, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


def test_augment_flip_only():
    x = torch.rand(64, 2, 5, 7)
    out = augment_batch(x, 0, True, torch.Generator().manual_seed(3))
    same = [torch.equal(out[i], x[i]) for i in range(64)]
    mirrored = [torch.equal(out[i], x[i].flip(-1)) for i in range(64)]
    assert all(a or b for a, b in zip(same, mirrored))
    assert any(same) and any(mirrored)


@pytest.mark.parametrize("p,flip", [(1, False), (2, True), (3, True)])
def test_augment_matches_naive_reference(p, flip):
    x = torch.rand(16, 2, 5, 6)
    out = augment_batch(x, p, flip, torch.Generator().manual_seed(11))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, _reference_augment(x, p, flip, seed=11))


def test_augment_output_is_a_valid_crop():
    # Independent of the draw order: every output must be one of the (2p+1)^2 * 2 crops/mirrors.
    p = 2
    x = torch.rand(8, 1, 4, 4)
    out = augment_batch(x, p, True, torch.Generator().manual_seed(5))
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    for i in range(8):
        candidates = [padded[i, :, a : a + 4, b : b + 4] for a in range(2 * p + 1) for b in range(2 * p + 1)]
        candidates += [c.flip(-1) for c in candidates]
        assert any(torch.equal(out[i], c) for c in candidates)


def test_augment_hand_computed_tiny_crop():
    # 1 image 1x2x2, padding 1: offsets (0, 0) means the crop's top-left is the padding corner.
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    g = torch.Generator().manual_seed(0)
    off = torch.randint(0, 3, (1, 2), generator=torch.Generator().manual_seed(0))
    out = augment_batch(x, 1, False, g)
    padded = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 2.0, 0.0], [0.0, 3.0, 4.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    oy, ox = int(off[0, 0]), int(off[0, 1])
    assert torch.equal(out[0, 0], padded[oy : oy + 2, ox : ox + 2])


def test_augment_uint8_same_as_float():
    x8 = torch.randint(0, 256, (6, 3, 5, 5), dtype=torch.uint8)
    a = augment_batch(x8, 2, True, torch.Generator().manual_seed(9))
    b = augment_batch(x8.float(), 2, True, torch.Generator().manual_seed(9))
    assert a.dtype == torch.uint8 and torch.equal(a.float(), b)


# --------------------------------------------------------------------------------------------------------
# DeviceLoader


def _epoch_ids(loader: DeviceLoader, start: int = 0) -> list[list[int]]:
    return [_batch_ids(x) for x, _ in loader.iter_from(start)]


def test_loader_covers_each_sample_once():
    s = _indexed_images(103)
    loader = DeviceLoader(s, 10, device="cpu", shuffle=True, augment=True, crop_padding=1, flip=True, seed=3)
    assert len(loader) == 11
    batches = list(loader)
    assert [len(x) for x, _ in batches] == [10] * 10 + [3]
    ids = [i for x, _ in batches for i in _batch_ids(x)]
    assert sorted(ids) == list(range(103))
    for x, y in batches:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert y.tolist() == [i % 10 for i in _batch_ids(x)]
    dl = DeviceLoader(s, 10, device="cpu", shuffle=True, augment=False, drop_last=True)
    assert len(dl) == 10 and sum(len(x) for x, _ in dl) == 100


def test_loader_no_shuffle_keeps_order():
    s = _indexed_images(25)
    loader = DeviceLoader(s, 10, device="cpu", shuffle=False, augment=False)
    assert [i for b in _epoch_ids(loader) for i in b] == list(range(25))
    x, _ = next(iter(loader))
    assert torch.equal(x, s.x[:10].float() / 255)


def test_loader_order_is_function_of_seed_and_epoch():
    s = _indexed_images(64)
    kw = dict(device="cpu", shuffle=True, augment=True, crop_padding=1, flip=True)
    a = DeviceLoader(s, 8, seed=7, **kw)
    b = DeviceLoader(s, 8, seed=7, **kw)
    a.set_epoch(2)
    b.set_epoch(2)
    xa = [x for x, _ in a]
    xb = [x for x, _ in b]
    assert all(torch.equal(u, v) for u, v in zip(xa, xb))
    order2 = _epoch_ids(a)
    a.set_epoch(3)
    assert _epoch_ids(a) != order2
    a.set_epoch(2)
    assert _epoch_ids(a) == order2  # going back reproduces it
    c = DeviceLoader(s, 8, seed=8, **kw)
    c.set_epoch(2)
    assert _epoch_ids(c) != order2


def test_loader_iter_from_matches_tail():
    s = _indexed_images(50)
    loader = DeviceLoader(s, 6, device="cpu", shuffle=True, augment=True, crop_padding=1, flip=True, seed=1)
    loader.set_epoch(4)
    full = list(loader)
    fresh = DeviceLoader(s, 6, device="cpu", shuffle=True, augment=True, crop_padding=1, flip=True, seed=1)
    fresh.set_epoch(4)
    for k in (0, 3, len(full) - 1, len(full)):
        tail = list(fresh.iter_from(k))
        assert len(tail) == len(full) - k
        for (x1, y1), (x2, y2) in zip(full[k:], tail):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    with pytest.raises(DardError):
        fresh.iter_from(len(full) + 1)


@pytest.mark.parametrize("n", [100, 101, 97])
def test_loader_two_ranks_partition_global_batches(n):
    s = _indexed_images(n)
    kw = dict(device="cpu", shuffle=True, augment=True, crop_padding=1, flip=True, seed=5)
    ranks = [DeviceLoader(s, 10, rank=r, world_size=2, **kw) for r in range(2)]
    single = DeviceLoader(s, 10, **kw)
    for ld in (*ranks, single):
        ld.set_epoch(1)
    assert len(ranks[0]) == len(ranks[1])
    b0, b1 = list(ranks[0]), list(ranks[1])
    ids0 = [i for x, _ in b0 for i in _batch_ids(x)]
    ids1 = [i for x, _ in b1 for i in _batch_ids(x)]
    assert len(ids0) == len(ids1) == n // 2
    assert not set(ids0) & set(ids1)
    assert all(len(x) <= 5 for x, _ in b0)
    # Batch b of the two ranks together is global batch b of the single-process order (the same
    # permutation), with the same augmentation per sample.
    glob = list(single)
    for b, ((x0, _), (x1, _), (xg, _)) in enumerate(zip(b0, b1, glob)):
        merged = torch.cat([x0, x1])
        gids = _batch_ids(xg)
        mids = _batch_ids(merged)
        assert set(mids) <= set(gids)
        assert len(mids) == len(gids) or b == len(b0) - 1  # only the tail batch may be cut
        for j, i in enumerate(mids):
            assert torch.equal(merged[j], xg[gids.index(i)])


def test_loader_rejects_bad_arguments():
    s = _indexed_images(10)
    with pytest.raises(DardError):
        DeviceLoader(s, 0, device="cpu", shuffle=False, augment=False)
    with pytest.raises(DardError):
        DeviceLoader(s, 4, device="cpu", shuffle=False, augment=False, rank=2, world_size=2)
    with pytest.raises(DardError):
        DeviceLoader(s, 1, device="cpu", shuffle=False, augment=False, rank=0, world_size=2)


# --------------------------------------------------------------------------------------------------------
# CIFAR: fake official layout


def _rows(n: int, start: int) -> np.ndarray:
    rng = np.random.default_rng(start)
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _dump(path: Path, obj: object) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _write_fake_cifar10(root: Path, n: int = 4, bytes_keys: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Write ``root/cifar-10-batches-py`` with n images per batch; returns all train rows and labels."""
    k = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows, labels = [], []
    for i in range(1, 6):
        r = _rows(n, i)
        lab = [(i + j) % 10 for j in range(n)]
        rows.append(r)
        labels += lab
        _dump(
            folder / f"data_batch_{i}",
            {
                k("batch_label"): k(f"training batch {i} of 5"),
                k("labels"): lab,
                k("data"): r,
                k("filenames"): [b"x.png"] * n,
            },
        )
    _dump(folder / "test_batch", {k("labels"): np.arange(n) % 10, k("data"): _rows(n, 99)})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _dump(folder / "batches.meta", {k("label_names"): [k(s) for s in names], k("num_vis"): 3072})
    return np.concatenate(rows), np.asarray(labels)


@pytest.mark.parametrize("bytes_keys", [True, False])
def test_cifar10_reads_official_layout(tmp_path, bytes_keys):
    rows, labels = _write_fake_cifar10(tmp_path, bytes_keys=bytes_keys)
    b = load_dataset("cifar10", data_dir=tmp_path)
    assert b.train.x.shape == (20, 3, 32, 32) and b.test.x.shape == (4, 3, 32, 32)
    assert b.train.x.dtype == torch.uint8 and b.train.y.dtype == torch.int64
    assert np.array_equal(b.train.x.reshape(20, -1).numpy(), rows)
    assert np.array_equal(b.train.x[3].numpy(), rows[3].reshape(3, 32, 32))
    assert b.train.y.tolist() == labels.tolist()
    assert b.classes[0] == "airplane" and b.num_classes == 10
    assert b.mean == (0.4914, 0.4822, 0.4465) and b.std == (0.2471, 0.2435, 0.2616)
    assert b.crop_padding == 4 and b.flip is True


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _dump(folder / "train", {b"data": _rows(6, 1), b"fine_labels": [0, 5, 99, 1, 2, 3], b"coarse_labels": [0] * 6})
    _dump(folder / "test", {b"data": _rows(2, 2), b"fine_labels": [7, 8], b"coarse_labels": [0, 0]})
    _dump(
        folder / "meta",
        {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": [b"x"] * 20},
    )
    b = load_dataset("cifar100", data_dir=tmp_path)
    assert b.train.y.tolist() == [0, 5, 99, 1, 2, 3] and b.test.y.tolist() == [7, 8]
    assert b.num_classes == 100 and b.classes[99] == "c99"
    assert b.mean == (0.5071, 0.4865, 0.4409)


def test_cifar_missing_folder_names_path(tmp_path):
    where = tmp_path / "nothing here"
    with pytest.raises(DardError) as err:
        load_dataset("cifar10", data_dir=where)
    msg = _one_line(err)
    assert str(where / "cifar-10-batches-py") in msg and "--download" in msg
    assert not where.exists()
    with pytest.raises(DardError) as err:
        load_dataset("cifar100", data_dir=where)
    assert "cifar-100-python" in _one_line(err)


def test_data_dir_that_is_not_a_folder_is_one_line(tmp_path):
    # --download on a file or FIFO given as --data-dir (or a folder under a file) was an internal error: mkdir's
    # FileExistsError / NotADirectoryError; an image folder that is a FIFO was said not to exist
    afile, fifo = tmp_path / "file", tmp_path / "fifo"
    afile.write_text("x")
    os.mkfifo(fifo)
    for where in (afile, fifo, afile / "sub"):
        with pytest.raises(DardError) as err:
            load_dataset("cifar10", data_dir=where, download=True)
        msg = _one_line(err)
        assert str(where.parent if where.name == "sub" else where) in msg and "not a folder" in msg
        with pytest.raises(DardError) as err:
            load_dataset("folder", data_dir=where)
        assert ("not a folder" if where.exists() else "does not exist") in _one_line(err)
    assert afile.read_text() == "x" and not (afile.parent / "sub").exists()


def test_cifar_incomplete_folder(tmp_path):
    _write_fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DardError) as err:
        load_dataset("cifar10", data_dir=tmp_path, download=True)
    assert "data_batch_4" in _one_line(err)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong_type", "bad_labels", "bad_shape"])
def test_cifar_corrupt_batch(tmp_path, damage):
    _write_fake_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01not a pickle at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "wrong_type":
        _dump(path, [1, 2, 3])
    elif damage == "bad_labels":
        _dump(path, {b"data": _rows(4, 0), b"labels": [0, 1, 2, 10]})
    else:
        _dump(path, {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]})
    with pytest.raises(DardError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "data_batch_3" in _one_line(err)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_cifar_pickle_refuses_other_objects(tmp_path):
    _write_fake_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    _dump(tmp_path / "cifar-10-batches-py" / "data_batch_1", {b"data": _Evil(str(marker)), b"labels": [0]})
    with pytest.raises(DardError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "data_batch_1" in _one_line(err)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------
# CIFAR: download from a local file:// URL


def _make_archive(tmp: Path, members: dict[str, bytes] | None = None) -> Path:
    src = tmp / "src"
    _write_fake_cifar10(src)
    archive = tmp / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        for name, payload in (members or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_download_file_url(tmp_path, monkeypatch):
    archive = _make_archive(tmp_path)
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", _md5(archive))
    dest = tmp_path / "data"
    b = load_dataset("cifar10", data_dir=dest, download=True)
    assert len(b.train) == 20 and len(b.test) == 4
    assert sorted(p.name for p in dest.iterdir()) == ["cifar-10-batches-py"]  # no partial/staging files
    # a second call reads the extracted folder without downloading
    monkeypatch.setattr(cifar, "CIFAR10_URL", (tmp_path / "gone.tar.gz").as_uri())
    assert len(load_dataset("cifar10", data_dir=dest, download=True).train) == 20


def test_cifar_download_wrong_md5(tmp_path, monkeypatch):
    archive = _make_archive(tmp_path)
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", "0" * 32)
    dest = tmp_path / "data"
    with pytest.raises(DardError) as err:
        load_dataset("cifar10", data_dir=dest, download=True)
    assert "md5" in _one_line(err).lower()
    assert not dest.exists() or list(dest.iterdir()) == []  # no partial file left


def test_cifar_download_rejects_html(tmp_path, monkeypatch):
    page = tmp_path / "page.tar.gz"
    page.write_bytes(b"<!DOCTYPE html><html><body>Please log in</body></html>")
    monkeypatch.setattr(cifar, "CIFAR10_URL", page.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", _md5(page))
    dest = tmp_path / "data"
    with pytest.raises(DardError) as err:
        load_dataset("cifar10", data_dir=dest, download=True)
    assert "html" in _one_line(err).lower()
    assert not dest.exists() or list(dest.iterdir()) == []  # no partial file left


def test_cifar_download_unreachable(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "CIFAR10_URL", (tmp_path / "missing.tar.gz").as_uri())
    dest = tmp_path / "data"
    with pytest.raises(DardError) as err:
        load_dataset("cifar10", data_dir=dest, download=True)
    assert "could not download" in _one_line(err)
    assert not dest.exists() or list(dest.iterdir()) == []  # no partial file left


def test_cifar_download_urlopen_monkeypatched(tmp_path, monkeypatch):
    archive = _make_archive(tmp_path)
    payload = archive.read_bytes()

    class _Resp(io.BytesIO):
        headers = {"Content-Length": str(len(payload)), "Content-Type": "application/x-gzip"}

    seen = []

    def fake_urlopen(url, timeout=None):
        seen.append(url)
        return _Resp(payload)

    monkeypatch.setattr(download.urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr(cifar, "CIFAR10_MD5", _md5(archive))
    b = load_dataset("cifar10", data_dir=tmp_path / "data", download=True)
    assert seen == [cifar.CIFAR10_URL] and len(b.train) == 20


@pytest.mark.parametrize("evil", ["../escape.txt", "/abs/escape.txt", "cifar-10-batches-py/../../escape.txt"])
def test_cifar_download_rejects_escaping_paths(tmp_path, monkeypatch, evil):
    archive = _make_archive(tmp_path, {evil: b"boom"})
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", _md5(archive))
    dest = tmp_path / "deep" / "data"
    with pytest.raises(DardError) as err:
        load_dataset("cifar10", data_dir=dest, download=True)
    assert "escape" in _one_line(err)
    assert not (tmp_path / "deep" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()
    assert not dest.exists() or list(dest.iterdir()) == []  # no partial file left


def test_cifar_download_bounds_extended_headers(tmp_path, monkeypatch):
    # the download's tar open read a pax header whole, however large (its MD5 is of whatever the URL gives): the
    # bound of dard's own archive reader (dard.io.open_tar_gz) applies, before any member is read
    from dard.io import MAX_TAR_HEADER_BYTES

    src = tmp_path / "src"
    _write_fake_cifar10(src)
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tar.gettarinfo(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        info.pax_headers = {"comment": "x" * MAX_TAR_HEADER_BYTES}
        tar.addfile(info)
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", _md5(archive))
    dest = tmp_path / "data"
    with pytest.raises(DardError) as err:
        load_dataset("cifar10", data_dir=dest, download=True)
    assert "cannot extract the CIFAR-10 archive" in _one_line(err) and "extended header" in _one_line(err)
    assert not dest.exists() or list(dest.iterdir()) == []


def test_cifar_download_rejects_symlinks(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _write_fake_cifar10(src)
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        link = tarfile.TarInfo("cifar-10-batches-py/link")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
    monkeypatch.setattr(cifar, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar, "CIFAR10_MD5", _md5(archive))
    dest = tmp_path / "data"
    with pytest.raises(DardError):
        load_dataset("cifar10", data_dir=dest, download=True)
    assert not dest.exists() or list(dest.iterdir()) == []  # no partial file left


# --------------------------------------------------------------------------------------------------------
# image folder


def _save(path: Path, arr: np.ndarray, fmt: str | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def _make_folder(root: Path, gray: bool = False, size: tuple[int, int] = (16, 16)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    saved = {}
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("dog", "cat"):
            for i in range(n):
                shape = size if gray else (*size, 3)
                arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
                p = root / split / cls / f"{i}.png"
                _save(p, arr)
                saved[f"{split}/{cls}/{i}"] = arr
    return saved


def test_image_folder_loads_rgb(tmp_path):
    saved = _make_folder(tmp_path)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("ignored")
    b = load_dataset("folder", data_dir=tmp_path)
    assert b.classes == ["cat", "dog"]
    assert b.train.x.shape == (6, 3, 16, 16) and b.test.x.shape == (4, 3, 16, 16)
    assert b.train.y.tolist() == [0, 0, 0, 1, 1, 1] and b.test.y.tolist() == [0, 0, 1, 1]
    assert np.array_equal(b.train.x[0].numpy(), saved["train/cat/0"].transpose(2, 0, 1))
    assert b.crop_padding == 2 and b.flip is True
    expected_mean = b.train.x.double().div(255).mean(dim=(0, 2, 3))
    assert np.allclose(b.mean, expected_mean.numpy())


def test_image_folder_gray_and_mixed(tmp_path):
    _make_folder(tmp_path / "g", gray=True)
    b = load_dataset("folder", data_dir=tmp_path / "g")
    assert b.image_shape == (1, 16, 16) and len(b.mean) == 1
    _make_folder(tmp_path / "m", gray=True)
    _save(tmp_path / "m" / "test" / "dog" / "rgb.jpg", np.zeros((16, 16, 3), np.uint8), fmt="JPEG")
    m = load_dataset("folder", data_dir=tmp_path / "m")
    assert m.image_shape == (3, 16, 16) and len(m.test) == 5


def test_image_folder_bad_layouts(tmp_path):
    def expect(root: Path, fragment: str) -> None:
        with pytest.raises(DardError) as err:
            load_dataset("folder", data_dir=root)
        assert fragment in _one_line(err)

    with pytest.raises(DardError):
        load_dataset("folder")  # no data_dir
    expect(tmp_path / "absent", "does not exist")

    r = tmp_path / "no_test"
    _make_folder(r)
    import shutil

    shutil.rmtree(r / "test")
    expect(r, "test/")

    r = tmp_path / "no_classes"
    (r / "train").mkdir(parents=True)
    (r / "test").mkdir()
    expect(r, "no class")

    r = tmp_path / "empty_class"
    _make_folder(r)
    (r / "train" / "emu").mkdir()
    (r / "test" / "emu").mkdir()
    expect(r, "emu")

    r = tmp_path / "class_mismatch"
    _make_folder(r)
    (r / "test" / "extra").mkdir()
    _save(r / "test" / "extra" / "0.png", np.zeros((16, 16, 3), np.uint8))
    expect(r, "extra")

    r = tmp_path / "unreadable"
    _make_folder(r)
    (r / "train" / "dog" / "broken.png").write_bytes(b"not an image")
    expect(r, "broken.png")

    # a 16-bit grayscale PNG: Pillow's convert() clipped it to 0..255, a saturated image loaded in silence
    r = tmp_path / "sixteen_bit"
    _make_folder(r, gray=True)
    wide = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257).astype(np.uint16)
    _save(r / "train" / "dog" / "0.png", wide)
    expect(r, "more than 8 bits")

    # content of a format the folder does not take, under an image's name (Pillow picks decoders by content)
    r = tmp_path / "gif_as_png"
    _make_folder(r)
    _save(r / "train" / "dog" / "0.png", np.zeros((16, 16, 3), np.uint8), fmt="GIF")
    expect(r, "0.png")

    r = tmp_path / "odd_size"
    _make_folder(r)
    _save(r / "test" / "cat" / "big.png", np.zeros((20, 16, 3), np.uint8))
    expect(r, "big.png")

    # names that are not UTF-8: the data's fingerprint (records, reports) failed on them as an internal error
    r = tmp_path / "bytes_name"
    _make_folder(r)
    os.rename(r / "train" / "dog" / "0.png", os.fsencode(r / "train" / "dog") + b"/\xff.png")
    expect(r, "image file")
    r = tmp_path / "bytes_class"
    _make_folder(r)
    for split in ("train", "test"):
        os.rename(r / split / "dog", os.fsencode(r / split) + b"/d\xffg")
    expect(r, "class folder")


# --------------------------------------------------------------------------------------------------------
# CIFAR-10 in the official layout: $DARD_DATA_DIR's copy (CI: its development copy), else the synthetic set


@pytest.mark.slow
def test_real_cifar10(cifar10):
    b = load_dataset("cifar10", data_dir=cifar10.root)
    n_train, n_test = (50000, 10000) if cifar10.real else (5 * SYNTHETIC_PER_BATCH, SYNTHETIC_TEST)
    assert b.train.x.shape == (n_train, 3, 32, 32) and b.test.x.shape == (n_test, 3, 32, 32)
    assert torch.bincount(b.train.y).tolist() == [n_train // 10] * 10
    assert torch.bincount(b.test.y).tolist() == [n_test // 10] * 10
    assert b.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    # official first test labels: cat, ship, ship, airplane, frog
    assert b.test.y[:5].tolist() == [3, 8, 8, 0, 6]
    assert b.train.y[:3].tolist() == [6, 9, 9]
    mean = b.train.x[:5000].double().div(255).mean(dim=(0, 2, 3))
    assert np.allclose(mean.numpy(), b.mean, atol=0.02)


def test_the_cifar10_build_is_made_once_for_all_the_xdist_workers(tmp_path, monkeypatch):
    # tests/conftest.py's shared_folder, which the `cifar10` fixture builds $DARD_DATA_DIR's compact copy with
    class Factory:  # the part of pytest's tmp_path_factory it uses: each worker's folder is under a common one
        def __init__(self, worker: str) -> None:
            self.base = tmp_path / "session" / f"popen-{worker}"

        def getbasetemp(self) -> Path:  # made on first use, as pytest's is
            self.base.mkdir(parents=True, exist_ok=True)
            return self.base

        def mktemp(self, name: str) -> Path:
            (self.base / name).mkdir(parents=True)
            return self.base / name

    made: list[Path] = []

    def make(folder: Path) -> None:
        made.append(folder)
        (folder / "n").write_text(str(len(made)))

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    first = shared_folder(Factory("gw0"), "data", make)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    assert shared_folder(Factory("gw1"), "data", make) == first and made == [first]  # made once, read by both
    (first / "half").write_text("")
    (tmp_path / "session" / "shared-data.done").unlink()  # a worker died while making it: made again, afresh
    assert shared_folder(Factory("gw1"), "data", make) == first and len(made) == 2
    assert sorted(p.name for p in first.iterdir()) == ["n"] and (first / "n").read_text() == "2"
    monkeypatch.delenv("PYTEST_XDIST_WORKER")  # no workers: the session's own folder
    assert shared_folder(Factory("main"), "data", make) == tmp_path / "session" / "popen-main" / "data"


def test_default_data_dir_from_environment(tmp_path, monkeypatch):
    _write_fake_cifar10(tmp_path)
    monkeypatch.setenv("DARD_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == tmp_path
    assert len(load_dataset("cifar10").train) == 20
