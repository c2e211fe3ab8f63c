"""Held-out splits, batched augmentation and a loader that serves batches from tensors on the compute device.

All randomness (split, shuffle order, crop offsets, flips) comes from ``torch.Generator`` objects on the CPU
seeded from the caller's seed (and epoch), so the same seed gives the same batches on CPU and GPU, after a
resume, and on every rank of a multi-GPU run.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from dard.data.base import ImageSet
from dard.errors import DardError

__all__ = ["split_train_val", "augment_batch", "DeviceLoader"]


def _derive_seed(*parts: object) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (stable across processes and platforms)."""
    text = ":".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & ((1 << 63) - 1)


def _cpu_generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


def val_count(n: int, val_size: int | float) -> int:
    """The images of ``n`` that ``val_size`` holds out (a count, or a fraction in (0, 1)); a DardError when it
    leaves none on either side."""
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise DardError(f"val_size must be an int (count) or a float (fraction), got {val_size!r}")
    if isinstance(val_size, float):
        if not 0.0 < val_size < 1.0:
            raise DardError(f"val_size as a fraction must lie in (0, 1), got {val_size}")
        count = int(round(n * val_size))
    else:
        count = int(val_size)
    if not 0 < count < n:
        raise DardError(f"val_size {val_size!r} leaves no training or no validation images out of {n}")
    return count


def split_train_val(images: ImageSet, val_size: int | float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Split ``images`` into (train, val), stratified by label and fixed by ``seed``.

    ``val_size`` is a count (int) or a fraction of the images (float in (0, 1)). Each class contributes
    to the validation set in proportion to its size (up to rounding; the total is exact). Both parts keep
    the original order of the images.
    """
    n = len(images)
    n_val = val_count(n, val_size)
    g = _cpu_generator(_derive_seed("dard-split", seed))
    perm = torch.randperm(n, generator=g)
    labels = images.y.detach().cpu()[perm]
    # Rank of each (permuted) sample within its class, then its fractional position in that class:
    # taking the n_val smallest fractions takes the same share of every class.
    order = torch.sort(labels, stable=True).indices
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.int64)
    rank[order] = torch.arange(n) - starts[labels[order]]
    frac = (rank.to(torch.float64) + 0.5) / counts[labels].to(torch.float64)
    chosen = torch.sort(frac, stable=True).indices[:n_val]  # ties broken by the random permutation
    is_val = torch.zeros(n, dtype=torch.bool)
    is_val[perm[chosen]] = True
    val_idx = torch.nonzero(is_val).flatten()
    train_idx = torch.nonzero(~is_val).flatten()
    return images.subset(train_idx), images.subset(val_idx)


def _draw_augment_params(
    n: int, crop_padding: int, flip: bool, generator: torch.Generator | None
) -> tuple[Tensor | None, Tensor | None]:
    """Crop offsets (n, 2) in [0, 2 * crop_padding] and flip flags (n,), drawn from ``generator``."""
    offsets = None
    flips = None
    dev = generator.device if generator is not None else torch.device("cpu")
    if crop_padding > 0:
        offsets = torch.randint(0, 2 * crop_padding + 1, (n, 2), generator=generator, device=dev)
    if flip:
        flips = torch.rand(n, generator=generator, device=dev) < 0.5
    return offsets, flips


def _apply_augment(x: Tensor, crop_padding: int, offsets: Tensor | None, flips: Tensor | None) -> Tensor:
    """Zero-pad by ``crop_padding``, crop at per-sample ``offsets`` (row, col) and mirror where ``flips``.

    One gather over the whole batch; works for any dtype and stays on ``x``'s device.
    """
    if offsets is None and flips is None:
        return x
    n, c, h, w = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).expand(n, h)
    cols = torch.arange(w, device=dev).expand(n, w)
    if flips is not None:
        flips = flips.to(dev)
        cols = torch.where(flips[:, None], (w - 1) - cols, cols)
    src = x
    if offsets is not None and crop_padding > 0:
        offsets = offsets.to(dev)
        src = F.pad(x, (crop_padding, crop_padding, crop_padding, crop_padding))
        rows = rows + offsets[:, 0:1]
        cols = cols + offsets[:, 1:2]
    n_idx = torch.arange(n, device=dev)[:, None, None, None]
    c_idx = torch.arange(c, device=dev)[None, :, None, None]
    return src[n_idx, c_idx, rows[:, None, :, None], cols[:, None, None, :]]


def augment_batch(x: Tensor, crop_padding: int, flip: bool, generator: torch.Generator | None) -> Tensor:
    """Random crop (zero padding ``crop_padding``) and random horizontal flip of a whole batch.

    ``x`` has shape (N, C, H, W) on any device; the random parameters come from ``generator`` (a CPU
    generator, so results match across devices) and the work is done in a few tensor operations on
    ``x``'s device. ``crop_padding=0`` and ``flip=False`` return ``x`` unchanged.

    Draw order (part of the contract, for reproducibility): first the crop offsets
    ``randint(0, 2 * crop_padding + 1, (N, 2))`` as (row, col) into the padded image (only when
    ``crop_padding > 0``), then the flips ``rand(N) < 0.5`` (only when ``flip``). A flipped sample is the
    mirror image of its crop.
    """
    if x.dim() != 4:
        raise ValueError(f"augment_batch expects (N, C, H, W), got {tuple(x.shape)}")
    if crop_padding < 0:
        raise ValueError("crop_padding must be >= 0")
    offsets, flips = _draw_augment_params(x.shape[0], int(crop_padding), bool(flip), generator)
    return _apply_augment(x, int(crop_padding), offsets, flips)


class DeviceLoader:
    """Batches of ``(x float32 in [0, 1], y int64)`` served from uint8 images held on ``device``.

    The shuffle order and augmentation of an epoch are a pure function of ``(seed, epoch)``: call
    :meth:`set_epoch` before iterating each epoch (the epoch is not advanced automatically). Augmentation
    parameters are drawn per position of the epoch's global order, so a sample gets the same crop and flip
    whatever ``world_size`` is.

    With ``world_size > 1`` the epoch's permutation is cut to a multiple of ``world_size`` and rank ``r``
    takes positions ``r, r + world_size, ...``; each rank's batch holds ``batch_size // world_size`` images,
    so batch ``b`` of all ranks together is one global batch, and every rank has the same number of batches.

    :meth:`iter_from` resumes an epoch mid-way with exactly the batches a full iteration would yield.
    """

    def __init__(
        self,
        images: ImageSet,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        shuffle: bool,
        augment: bool,
        crop_padding: int = 0,
        flip: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise DardError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DardError(f"invalid rank {rank} for world_size {world_size}")
        if batch_size < world_size:
            raise DardError(f"batch_size {batch_size} is smaller than world_size {world_size}")
        if crop_padding < 0:
            raise DardError(f"crop_padding must be >= 0, got {crop_padding}")
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device)
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.per_rank_batch = self.batch_size // self.world_size
        self.shuffle = bool(shuffle)
        self.augment = bool(augment)
        self.crop_padding = int(crop_padding)
        self.flip = bool(flip)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.epoch = 0
        n = len(self.images)
        # Samples seen by this rank per epoch (equal on all ranks).
        self.num_samples = n // self.world_size if self.world_size > 1 else n
        self._plan_epoch: int | None = None
        self._plan: tuple[Tensor, Tensor | None, Tensor | None] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.per_rank_batch
        return math.ceil(self.num_samples / self.per_rank_batch)

    def _epoch_plan(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """This rank's sample indices, crop offsets and flips for the current epoch, on the device."""
        if self._plan_epoch == self.epoch and self._plan is not None:
            return self._plan
        n = len(self.images)
        g = _cpu_generator(_derive_seed("dard-loader", self.seed, self.epoch))
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        offsets = flips = None
        if self.augment:
            offsets, flips = _draw_augment_params(n, self.crop_padding, self.flip, g)
        positions = torch.arange(self.rank, self.num_samples * self.world_size, self.world_size)
        idx = order[positions].to(self.device)
        if offsets is not None:
            offsets = offsets[positions].to(self.device)
        if flips is not None:
            flips = flips[positions].to(self.device)
        self._plan_epoch, self._plan = self.epoch, (idx, offsets, flips)
        return self._plan

    def iter_from(self, start_batch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Iterate the current epoch from batch ``start_batch`` on (0 gives the full epoch)."""
        total = len(self)
        if not 0 <= start_batch <= total:
            raise DardError(f"start batch {start_batch} out of range for an epoch of {total} batches")
        return self._iterate(int(start_batch), total)

    def _iterate(self, start: int, total: int) -> Iterator[tuple[Tensor, Tensor]]:
        idx, offsets, flips = self._epoch_plan()
        pb = self.per_rank_batch
        x_all, y_all = self.images.x, self.images.y
        for b in range(start, total):
            sl = slice(b * pb, min((b + 1) * pb, self.num_samples))
            bidx = idx[sl]
            xb = x_all[bidx]
            if self.augment:
                xb = _apply_augment(
                    xb,
                    self.crop_padding,
                    None if offsets is None else offsets[sl],
                    None if flips is None else flips[sl],
                )
            yield xb.to(torch.float32).div_(255.0), y_all[bidx]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.iter_from(0)

    def __repr__(self) -> str:
        return (
            f"DeviceLoader(n={len(self.images)}, batch_size={self.batch_size}, batches={len(self)}, "
            f"device={self.device}, shuffle={self.shuffle}, augment={self.augment}, "
            f"crop_padding={self.crop_padding}, flip={self.flip}, rank={self.rank}/{self.world_size})"
        )
