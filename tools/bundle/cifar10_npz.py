"""CIFAR-10 in a compact form for the offline bundle, and back to the official python-pickle layout.

    python cifar10_npz.py pack SOURCE OUT_DIR   # SOURCE: a folder holding cifar-10-batches-py, or the .tar.gz
    python cifar10_npz.py build NPZ_DIR OUT     # writes OUT/cifar-10-batches-py/ (numpy and Pillow only)

The official files (163 MB) do not fit a job that may carry tens of MiB, and CIFAR-10 pixels hardly compress
losslessly. The compact form (a development copy may come in it too): ``jpeg.npz`` holds every image as JPEG
(quality 75, 4:2:0) with offsets and labels, in the official order; ``exact.npz`` the exact pixels of the first
1,000 images of each batch (so the usual 1,000-image AutoAttack subset of the test set is exact). ``build``
overlays the exact rows on the decoded ones. Packing reads the official files through dard's own loader (a
restricted unpickler) and checks the archive's MD5 first.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
EXACT_PER_BATCH = 1000
QUALITY = 75


def encode(rows: np.ndarray, quality: int = QUALITY) -> tuple[np.ndarray, np.ndarray]:
    """JPEG bytes of official rows (N, 3072; CHW flattened), concatenated, and their offsets (N + 1)."""
    blobs = []
    for row in rows:
        buf = io.BytesIO()
        Image.fromarray(row.reshape(3, 32, 32).transpose(1, 2, 0)).save(buf, "JPEG", quality=quality)
        blobs.append(buf.getvalue())
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


def decode(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Official rows (N, 3072) from :func:`encode`'s output."""
    rows = np.empty((len(offsets) - 1, 3072), dtype=np.uint8)
    for i in range(len(offsets) - 1):
        img = Image.open(io.BytesIO(blob[offsets[i] : offsets[i + 1]].tobytes())).convert("RGB")
        rows[i] = np.asarray(img).transpose(2, 0, 1).reshape(-1)
    return rows


def pack_rows(splits: dict[str, tuple[np.ndarray, np.ndarray]], out_dir: Path) -> None:
    """Write jpeg.npz and exact.npz from ``{"train": (rows, labels), "test": (rows, labels)}``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jpeg, exact = {}, {}
    for split, (rows, labels) in splits.items():
        blob, offsets = encode(rows)
        jpeg.update({f"{split}_jpeg": blob, f"{split}_offsets": offsets, f"{split}_labels": labels.astype(np.uint8)})
        batches = rows.reshape(len(SPLITS[split]), -1, 3072)
        exact[f"{split}_exact_rows"] = batches[:, :EXACT_PER_BATCH].copy()
    np.savez_compressed(out_dir / "jpeg.npz", **jpeg)
    np.savez_compressed(out_dir / "exact.npz", **exact)


def read_official(source: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The official train and test rows and labels from a data folder or the official .tar.gz."""
    from dard.data import load_dataset
    from dard.data.cifar import CIFAR10_MD5

    with tempfile.TemporaryDirectory(prefix="dard-cifar-") as tmp:
        if source.is_file():
            md5 = hashlib.md5(source.read_bytes()).hexdigest()
            if md5 != CIFAR10_MD5:
                raise SystemExit(f"{source}: MD5 {md5} is not the official CIFAR-10 archive's")
            with tarfile.open(source, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
            source = Path(tmp)
        bundle = load_dataset("cifar10", source)
        return {
            split: (s.x.reshape(len(s), -1).numpy(), s.y.numpy())
            for split, s in (("train", bundle.train), ("test", bundle.test))
        }


def build(npz_dir: Path, out: Path) -> Path:
    """Write ``out/cifar-10-batches-py/`` in the official layout from jpeg.npz (+ exact.npz if present)."""
    src = np.load(npz_dir / "jpeg.npz")
    exact = np.load(npz_dir / "exact.npz") if (npz_dir / "exact.npz").is_file() else None
    folder = out / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for split, names in SPLITS.items():
        rows = decode(src[f"{split}_jpeg"], src[f"{split}_offsets"])
        labels = src[f"{split}_labels"].astype(np.int64)
        per = len(rows) // len(names)
        for k, name in enumerate(names):
            data = rows[k * per : (k + 1) * per].copy()
            if exact is not None:
                ex = exact[f"{split}_exact_rows"][k]
                data[: len(ex)] = ex
            label = "testing batch 1 of 1" if split == "test" else f"training batch {k + 1} of 5"
            record = {"batch_label": label, "labels": labels[k * per : (k + 1) * per].tolist(), "data": data}
            with open(folder / name, "wb") as fh:
                pickle.dump(record, fh, protocol=4)
    per_batch = (len(src["train_offsets"]) - 1) // len(SPLITS["train"])
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": CLASSES, "num_vis": 3072}, fh, protocol=4)
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack", help="official CIFAR-10 (folder or .tar.gz) -> jpeg.npz + exact.npz")
    pk.add_argument("source", type=Path)
    pk.add_argument("out_dir", type=Path)
    bd = sub.add_parser("build", help="jpeg.npz (+ exact.npz) -> OUT/cifar-10-batches-py/")
    bd.add_argument("npz_dir", type=Path)
    bd.add_argument("out", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack_rows(read_official(args.source), args.out_dir)
        print(f"packed {args.source} into {args.out_dir}")
    else:
        print(f"built {build(args.npz_dir, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
