"""A small CNN for tiny images (the embedded 8x8 grayscale digits) and quick CPU experiments."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from dard.models.base import ImageClassifier, init_weights
from dard.registry import register_model


class SmallCNN(ImageClassifier):
    """conv32 - conv64 - maxpool(2) - conv128 - adaptive avg-pool to 2x2 - linear.

    All convolutions are 3x3 with padding 1, each followed by BN and ReLU. The adaptive pool makes the
    head independent of the input size: an 8x8 digit and a 32x32 CIFAR image give the same 512 features.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__(num_classes, in_channels)
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.fc = nn.Linear(128 * 2 * 2, num_classes)
        self.feature_dim = 128 * 2 * 2
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = F.max_pool2d(out, 2)
        out = F.relu(self.bn3(self.conv3(out)))
        # Keep a coarse 2x2 spatial layout: digits are only 8x8, global pooling would lose too much.
        return F.adaptive_avg_pool2d(out, 2).flatten(1)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc(features)


@register_model("small_cnn")
def small_cnn(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """Small CNN (~0.1M parameters) for 8x8 digits or other small images of any channel count."""
    return SmallCNN(num_classes=num_classes, in_channels=in_channels)


class MLP(ImageClassifier):
    """average-pool to 8x8 - flatten - linear(256) - ReLU - linear.

    No BatchNorm, so a batch's loss is a plain mean of per-image losses: training split across processes is
    then exactly one process on the global batch, which the multi-process test checks. Also the quickest
    baseline for tiny images (8x8 digits pass the pool unchanged).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, hidden: int = 256) -> None:
        super().__init__(num_classes, in_channels)
        self.fc1 = nn.Linear(in_channels * 64, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)
        self.feature_dim = hidden
        init_weights(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return F.relu(self.fc1(F.adaptive_avg_pool2d(x, 8).flatten(1)))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.fc2(features)


@register_model("mlp")
def mlp(num_classes: int = 10, in_channels: int = 3) -> ImageClassifier:
    """Two-layer perceptron on an 8x8 average-pooled input (hidden 256, BatchNorm-free)."""
    return MLP(num_classes=num_classes, in_channels=in_channels)
