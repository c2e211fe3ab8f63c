"""The CIFAR ResNets of He et al. (2016): depth 6n+2, three stages of n blocks with widths 16, 32, 64.

Shortcuts are the identity except where the width or resolution changes; there we use the 1x1
convolution + BatchNorm projection (the paper's option B) rather than option A's zero-padded identity.
That adds ~2.7K parameters (ResNet-20: ~0.272M instead of 0.270M) and keeps every block a plain
``BasicBlock`` shared with ResNet-18.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from dard.errors import DardError
from dard.models.base import ImageClassifier, init_weights
from dard.models.resnet import BasicBlock, make_stage
from dard.registry import register_model


class CifarResNet(ImageClassifier):
    """ResNet-(6n+2) for small images: 3x3 stem (16), stages of n BasicBlocks at 16/32/64, global pool, linear."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        if depth < 8 or (depth - 2) % 6 != 0:
            raise DardError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, ...), got {depth}")
        super().__init__(num_classes, in_channels)
        n = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = make_stage(BasicBlock, 16, 16, n, 1)
        self.layer2 = make_stage(BasicBlock, 16, 32, n, 2)
        self.layer3 = make_stage(BasicBlock, 32, 64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        self.feature_dim = 64
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.linear(features)


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """Build a He et al. CIFAR ResNet of the given depth (6n+2)."""
    return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels)


@register_model("resnet8")
def resnet8(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """ResNet-8 (n=1, ~0.08M parameters); tiny, for fast tests."""
    return cifar_resnet(8, num_classes, in_channels)


@register_model("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """ResNet-20 (n=3, ~0.27M parameters, ~41M multiply-adds at 32x32)."""
    return cifar_resnet(20, num_classes, in_channels)


@register_model("resnet32")
def resnet32(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """ResNet-32 (n=5, ~0.46M parameters)."""
    return cifar_resnet(32, num_classes, in_channels)


@register_model("resnet44")
def resnet44(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """ResNet-44 (n=7, ~0.66M parameters)."""
    return cifar_resnet(44, num_classes, in_channels)


@register_model("resnet56")
def resnet56(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """ResNet-56 (n=9, ~0.86M parameters, ~126M multiply-adds at 32x32)."""
    return cifar_resnet(56, num_classes, in_channels)
