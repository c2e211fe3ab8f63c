"""MobileNetV2 (Sandler et al., 2018) adapted to 32x32 inputs.

Adaptations as in the usual CIFAR code: a stride-1 3x3 stem and a stride-1 second stage, so a 32x32
image reaches the last stage at 4x4 (total stride 8 instead of 32). Inverted residual blocks at stride
1 always add a shortcut: the identity when the width is unchanged, otherwise a 1x1 conv + BN.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from dard.models.base import ImageClassifier, init_weights
from dard.registry import register_model

# (expansion, out_planes, num_blocks, stride of the first block)
CIFAR_CONFIG: list[tuple[int, int, int, int]] = [
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 in the ImageNet model; 1 keeps resolution for 32x32 inputs
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection, each followed by BN (ReLU on the first two)."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        hidden = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(ImageClassifier):
    """CIFAR MobileNetV2 (~2.30M parameters with 10 classes)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(num_classes, in_channels)
        self.conv1 = nn.Conv2d(in_channels, 32, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        blocks: list[nn.Module] = []
        in_planes = 32
        for expansion, out_planes, num_blocks, stride in CIFAR_CONFIG:
            for i in range(num_blocks):
                blocks.append(InvertedResidual(in_planes, out_planes, expansion, stride if i == 0 else 1))
                in_planes = out_planes
        self.layers = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, num_classes)
        self.feature_dim = 1280
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.relu(self.bn2(self.conv2(out)))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.linear(features)


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """CIFAR MobileNetV2 (stride-1 stem and second stage; ~2.30M parameters, 10 classes)."""
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels)
