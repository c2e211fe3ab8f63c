"""Wide ResNets (Zagoruyko & Komodakis, 2016) as used in adversarial-robustness work on CIFAR.

WRN-d-k: depth d = 6n+4, three stages of n pre-activation blocks with widths 16k, 32k, 64k. Where the
width changes the shortcut is a bare 1x1 convolution on the pre-activated input. Names follow the common
robustness code (``block1.layer.0.convShortcut``, final ``bn1``, ``fc``) so its checkpoints load; note
that some of those checkpoints also carry an unused ``sub_block1``, which is not part of this model.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from dard.errors import DardError
from dard.models.base import ImageClassifier, init_weights
from dard.registry import register_model


class WideBlock(nn.Module):
    """Pre-activation block BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 with identity or 1x1 shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        # With a projection, the shortcut sees the pre-activated input (as in the reference WRN code).
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        out = F.relu(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return self.conv2(out) + shortcut


class WideStage(nn.Module):
    """``n`` WideBlocks held in ``.layer`` (the attribute name keeps checkpoint keys compatible)."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(n)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(ImageClassifier):
    """WRN-depth-widen_factor for small images, with global adaptive average pooling."""

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        if depth < 10 or (depth - 4) % 6 != 0:
            raise DardError(f"Wide ResNet depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth}")
        if widen_factor < 1:
            raise DardError(f"Wide ResNet widen_factor must be >= 1, got {widen_factor}")
        super().__init__(num_classes, in_channels)
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.depth = depth
        self.widen_factor = widen_factor
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WideStage(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = WideStage(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = WideStage(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self.feature_dim = widths[3]
        init_weights(self)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(features)


def wide_resnet(
    depth: int, widen_factor: int, num_classes: int = 10, in_channels: int = 3, drop_rate: float = 0.0
) -> ImageClassifier:
    """Build WRN-``depth``-``widen_factor`` (depth = 6n+4)."""
    return WideResNet(depth, widen_factor, num_classes=num_classes, in_channels=in_channels, drop_rate=drop_rate)


@register_model("wrn34_10")
def wrn34_10(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """WRN-34-10 (~46.16M parameters), the usual adversarial-training teacher on CIFAR."""
    return wide_resnet(34, 10, num_classes, in_channels)


@register_model("wrn28_10")
def wrn28_10(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """WRN-28-10 (~36.48M parameters)."""
    return wide_resnet(28, 10, num_classes, in_channels)


@register_model("wrn16_4")
def wrn16_4(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """WRN-16-4 (~2.75M parameters); a small teacher for CPU experiments."""
    return wide_resnet(16, 4, num_classes, in_channels)
