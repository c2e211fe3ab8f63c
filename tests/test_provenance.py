"""Provenance in evaluation records: the data folder, a fingerprint of its files, whether they are the official
release (by the published MD5 of each file), and the cache that spares hashing them again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import dard.data.fingerprint as fingerprint
from dard.data import load_dataset
from dard.data.base import DatasetBundle, DataSource, ImageSet
from dard.data.cifar import CIFAR10, CIFAR100
from dard.data.fingerprint import data_provenance


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _bundle(folder: Path, files: dict[str, bytes], official: dict[str, str] | None) -> DatasetBundle:
    for name, data in files.items():
        (folder / name).write_bytes(data)
    images = ImageSet(torch.zeros((1, 1, 2, 2), dtype=torch.uint8), torch.zeros(1, dtype=torch.long))
    source = DataSource(folder, tuple(files), official)
    return DatasetBundle("x", images, images, ["a"], (0.5,), (0.5,), source=source)


def test_the_fingerprint_and_official_status(tmp_path, monkeypatch):
    files = {"a": b"first", "b": b"second"}
    md5 = {k: hashlib.md5(v).hexdigest() for k, v in files.items()}
    prov = data_provenance(_bundle(tmp_path, files, md5))
    lines = "".join(f"{k} {hashlib.sha256(v).hexdigest()}\n" for k, v in files.items())
    assert prov.fingerprint == hashlib.sha256(lines.encode()).hexdigest()  # by hand
    assert prov.official == "yes" and prov.folder == str(tmp_path.resolve())
    # one changed byte: another fingerprint, and no longer the official files
    changed = data_provenance(_bundle(tmp_path, {"a": b"firsT", "b": b"second"}, md5))
    assert changed.official == "no" and changed.fingerprint != prov.fingerprint
    assert data_provenance(_bundle(tmp_path, files, None)).official == "unknown"
    # data shipped inside the package (digits): no folder, no files
    packaged = _bundle(tmp_path, {}, None)
    packaged.source = None
    assert data_provenance(packaged).to_dict() == {"folder": None, "fingerprint": None, "official": "unknown"}


def test_digests_are_cached_by_path_size_and_time(tmp_path, monkeypatch):
    bundle = _bundle(tmp_path, {"a": b"first"}, None)
    first = data_provenance(bundle)
    assert fingerprint._cache_file(tmp_path.resolve()).is_file()
    calls = []
    real = fingerprint._hash
    monkeypatch.setattr(fingerprint, "_hash", lambda p: calls.append(p) or real(p))
    assert data_provenance(bundle) == first and calls == []  # from the cache
    (tmp_path / "a").write_bytes(b"other content")  # size and time change: hashed again
    assert data_provenance(bundle) != first and len(calls) == 1


def test_the_digest_cache_is_bounded_and_keeps_what_is_there(tmp_path):
    # one cache file held the digests of every file ever hashed (every dataset copy, every edit, every test's
    # folder), read and written whole by every run; a cache file of gigabytes was read whole
    import os

    cache = fingerprint._cache_dir()
    cache.mkdir(parents=True)
    for i in range(fingerprint.MAX_CACHED_FOLDERS + 3):  # other folders' caches, older than this one's
        (cache / f"{i:032x}.json").write_text("{}")
        os.utime(cache / f"{i:032x}.json", ns=(10**9 * (i + 1), 10**9 * (i + 1)))
    data = tmp_path / "data"
    data.mkdir()
    mine = fingerprint._cache_file(data.resolve())
    with open(mine, "wb") as fh:
        fh.truncate(fingerprint.MAX_ENTRY_BYTES * 3 + 1)  # sparse, over the bound for two files: not read
    first = data_provenance(_bundle(data, {"a": b"first", "b": b"second"}, None))
    kept = sorted(cache.glob("*.json"))
    assert len(kept) == fingerprint.MAX_CACHED_FOLDERS and mine in kept and cache / f"{0:032x}.json" not in kept
    assert len(json.loads(mine.read_text())) == 2
    assert data_provenance(_bundle(data, {"a": b"first", "b": b"second"}, None)) == first
    (data / "b").unlink()  # a file no longer read: its entry goes
    data_provenance(_bundle(data, {"a": b"first"}, None))
    assert [key.split("|")[0] for key in json.loads(mine.read_text())] == [str((data / "a").resolve())]


def test_the_digest_cache_of_older_versions_is_removed(tmp_path):
    # dard before the per-folder cache kept every digest ever made in one file beside it, left behind for good
    legacy = fingerprint._cache_dir().parent / "file-digests.json"
    legacy.parent.mkdir(parents=True)
    legacy.write_text('{"/gone/data_batch_1|1|1": ["a", "b"]}')
    data = tmp_path / "data"
    data.mkdir()
    data_provenance(_bundle(data, {"a": b"first"}, None))
    assert not legacy.exists() and fingerprint._cache_file(data.resolve()).is_file()


def test_the_official_cifar_checksums_cover_every_file():
    for spec in (CIFAR10, CIFAR100):
        assert set(spec.official_md5) == set(spec.all_files)


def test_a_copy_that_is_not_the_official_cifar_says_so(synthetic_cifar10_dir):
    prov = data_provenance(load_dataset("cifar10", synthetic_cifar10_dir))
    assert prov.official == "no" and prov.folder == str((synthetic_cifar10_dir / "cifar-10-batches-py").resolve())
    assert len(prov.fingerprint) == 64
