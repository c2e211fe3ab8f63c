"""CIFAR-style ResNet-18 and PreAct ResNet-18.

Both use a 3x3 stride-1 stem without max-pooling (32x32 inputs keep full resolution in the first stage)
and global adaptive average pooling, so they also run on other input sizes (>= 8x8). Parameter and
buffer names follow the widely used CIFAR training code, so its checkpoints load with strict matching.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from dard.models.base import ImageClassifier, init_weights
from dard.registry import register_model


class BasicBlock(nn.Module):
    """Post-activation residual block: conv-BN-ReLU-conv-BN plus shortcut, then ReLU.

    Where the stride or width changes the shortcut is a 1x1 convolution followed by BatchNorm
    (projection shortcut); otherwise it is the identity (an empty ``nn.Sequential``).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv-BN-ReLU-conv plus shortcut.

    The projection shortcut (a bare 1x1 convolution) takes the pre-activated input, as in He et al. (2016b).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.has_projection = stride != 1 or in_planes != planes
        if self.has_projection:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.has_projection else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


BlockFactory = Callable[[int, int, int], nn.Module]


def make_stage(block: BlockFactory, in_planes: int, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
    """A stage of ``num_blocks`` blocks; only the first one may downsample."""
    layers = []
    for i in range(num_blocks):
        layers.append(block(in_planes if i == 0 else planes, planes, stride if i == 0 else 1))
    return nn.Sequential(*layers)


class ResNet(ImageClassifier):
    """CIFAR ResNet with four stages (widths 64, 128, 256, 512) of post-activation blocks."""

    def __init__(self, num_blocks: list[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(num_classes, in_channels)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = make_stage(BasicBlock, 64, 64, num_blocks[0], 1)
        self.layer2 = make_stage(BasicBlock, 64, 128, num_blocks[1], 2)
        self.layer3 = make_stage(BasicBlock, 128, 256, num_blocks[2], 2)
        self.layer4 = make_stage(BasicBlock, 256, 512, num_blocks[3], 2)
        self.linear = nn.Linear(512, num_classes)
        self.feature_dim = 512
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        # Adaptive pooling equals the usual 4x4 average pool at 32x32 and also handles other sizes.
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.linear(features)


class PreActResNet(ImageClassifier):
    """CIFAR PreAct ResNet: pre-activation blocks and a final BN-ReLU (``bn``) before pooling."""

    def __init__(self, num_blocks: list[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__(num_classes, in_channels)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.layer1 = make_stage(PreActBlock, 64, 64, num_blocks[0], 1)
        self.layer2 = make_stage(PreActBlock, 64, 128, num_blocks[1], 2)
        self.layer3 = make_stage(PreActBlock, 128, 256, num_blocks[2], 2)
        self.layer4 = make_stage(PreActBlock, 256, 512, num_blocks[3], 2)
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)
        self.feature_dim = 512
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.linear(features)


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """CIFAR ResNet-18 (BasicBlock [2, 2, 2, 2], ~11.17M parameters with 10 classes)."""
    return ResNet([2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels)


@register_model("preactresnet18")
def preactresnet18(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """CIFAR PreAct ResNet-18 (PreActBlock [2, 2, 2, 2], ~11.17M parameters with 10 classes)."""
    return PreActResNet([2, 2, 2, 2], num_classes=num_classes, in_channels=in_channels)
