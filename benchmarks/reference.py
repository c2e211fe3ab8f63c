"""A DARD training step and a PGD-20 evaluation written the way the peer repositories (ARD, RSLAD, the DARD
authors' code) write them, as the baseline of the benchmark.

Same maths as ``dard``'s DARD loss and PGD-20, different mechanics:
- fp32 only; data through ``torch.utils.data.DataLoader`` with per-image crop and flip in Python;
- the attack calls ``loss.backward()``, so every step also computes (and discards) parameter gradients;
- the teacher is called twice, on ``x`` and on ``x_adv``, without ``torch.no_grad()``'s graph saving for the
  first call.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dard.attacks.dpgd import dpgd_loss


class PerImageCIFAR(Dataset):
    """uint8 NCHW images; each ``__getitem__`` pads, crops and flips one image with NumPy."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, padding: int = 4, seed: int = 0) -> None:
        self.x, self.y, self.padding = x.numpy(), y.numpy(), padding
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = self.x[i].astype(np.float32) / 255.0
        p = self.padding
        padded = np.pad(img, ((0, 0), (p, p), (p, p)))
        top, left = self.rng.integers(0, 2 * p + 1, size=2)
        img = padded[:, top : top + img.shape[1], left : left + img.shape[2]]
        if self.rng.random() < 0.5:
            img = img[:, :, ::-1]
        return torch.from_numpy(np.ascontiguousarray(img)), int(self.y[i])


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> DataLoader:
    return DataLoader(PerImageCIFAR(x, y), batch_size=batch_size, shuffle=True, drop_last=True, num_workers=0)


def dpgd_peer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int) -> torch.Tensor:
    model.eval()
    x_adv = x.clone().detach()
    for t in range(steps):
        x_adv.requires_grad_()
        loss = dpgd_loss(model(x_adv), y, t, steps)
        model.zero_grad()
        loss.backward()  # parameter gradients computed too
        x_adv = x_adv.detach() + step * x_adv.grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1).detach()
    model.train()
    return x_adv


def dard_step(
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step: float,
    steps: int,
    lam: float = 0.5,
    alpha: float = 0.3,
    tau: float = 1.0,
) -> float:
    x_adv = dpgd_peer(student, x, y, eps, step, steps)
    t_nat = teacher(x)  # two separate teacher calls
    t_adv = teacher(x_adv)
    q = (lam * F.softmax(t_nat / tau, dim=1) + (1 - lam) * F.softmax(t_adv / tau, dim=1)).detach()
    out = student(x_adv)
    loss = alpha * F.cross_entropy(out, y) + (1 - alpha) * tau * tau * F.kl_div(
        F.log_softmax(out / tau, dim=1), q, reduction="batchmean"
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def pgd20_peer(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int = 20
) -> torch.Tensor:
    model.eval()
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1).detach()
    for _ in range(steps):
        x_adv.requires_grad_()
        loss = F.cross_entropy(model(x_adv), y)
        model.zero_grad()
        loss.backward()
        x_adv = x_adv.detach() + step * x_adv.grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0, 1).detach()
    return x_adv
