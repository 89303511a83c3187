"""Building blocks shared by the MNIST classifiers (ODE-Net, RK-Net, ResNet).

The architecture is the authors' PyTorch example (see shared/reference/paper.md, Table 1): 64 channels,
GroupNorm with min(32, C) groups, a downsampling stem (``conv`` or ``res``), pre-activation residual
blocks, and a GroupNorm-ReLU-average-pool-linear head.
"""

from __future__ import annotations

import enum
import math

import torch
from torch import nn


class Downsampling(str, enum.Enum):
    """How the stem reduces 28x28 inputs to 7x7 feature maps before the residual/ODE part."""

    conv = "conv"  # Conv3x3, then two strided Conv4x4 (stride 2), with GN+ReLU between
    res = "res"  # Conv3x3, then two strided pre-activation ResBlocks


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with ``min(32, channels)`` groups, as in the authors' example.

    When that does not divide ``channels`` (e.g. 64 + 3 augmented channels) the largest common divisor of the
    two is used, so augmented ODE blocks (:class:`neode_cli.models.odenet.ODEBlock`) get a valid norm.
    """
    return nn.GroupNorm(math.gcd(min(32, channels), channels), channels)


class ConcatConv2d(nn.Module):
    """A 2-D convolution whose input gets the time ``t`` as one extra constant channel.

    Lets an ODE vector field depend on ``t`` at the cost of ``out_channels * k * k`` extra weights.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, kernel_size, padding=padding)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        time_channel = torch.ones_like(x[:, :1]) * t  # (B, 1, H, W)
        return self.conv(torch.cat([time_channel, x], dim=1))


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(relu(gn(conv(relu(gn(x))))))``, convolutions without bias.

    With ``stride=2`` the block halves the spatial size and its shortcut is a strided 1x1 convolution
    applied to the pre-activated input.
    """

    def __init__(self, channels: int, stride: int = 1):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.norm2 = group_norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.shortcut = nn.Conv2d(channels, channels, 1, stride=stride, bias=False) if stride != 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(torch.relu(self.norm2(out)))
        return out + skip


def downsampling_stem(kind: Downsampling | str, in_channels: int = 1, channels: int = 64) -> nn.Sequential:
    """The stem mapping ``(B, in_channels, 28, 28)`` images to ``(B, channels, 7, 7)`` features.

    ``kind`` is ``conv`` (132,096 parameters at 64 channels) or ``res`` (156,800); raises ValueError
    naming the valid kinds otherwise.
    """
    try:
        kind = Downsampling(kind)
    except ValueError:
        raise ValueError(f"unknown downsampling {kind!r}; valid: "
                         f"{', '.join(d.value for d in Downsampling)}") from None
    first = nn.Conv2d(in_channels, channels, 3, stride=1)  # 28 -> 26
    if kind is Downsampling.conv:
        return nn.Sequential(
            first,
            group_norm(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 4, stride=2, padding=1),  # 26 -> 13
            group_norm(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 4, stride=2, padding=1),  # 13 -> 6
        )
    return nn.Sequential(first, ResBlock(channels, stride=2), ResBlock(channels, stride=2))  # 26 -> 13 -> 7


def classifier_head(channels: int = 64, num_classes: int = 10) -> nn.Sequential:
    """GroupNorm, ReLU, global average pool, linear: ``(B, channels, H, W)`` -> logits ``(B, num_classes)``."""
    return nn.Sequential(
        group_norm(channels), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(channels, num_classes),
    )

