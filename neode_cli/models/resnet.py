"""ResNet baseline: the ODE-Net's stem and head around six pre-activation residual blocks."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import Downsampling, ResBlock, classifier_head, downsampling_stem


class ResNet(nn.Module):
    """MNIST classifier: stem (``conv``: 576,778 parameters in all; ``res``: 601,482), ``num_blocks``
    residual blocks, head. Input ``(B, in_channels, 28, 28)`` (or ``(B, 28, 28)``), logits ``(B, num_classes)``.
    """

    # These defaults are the config's too (``model=resnet``): the schema is generated from this signature.
    def __init__(self, downsampling: Downsampling | str = "conv",  # conv | res (see ODENet)
                 num_blocks: int = 6,  # the paper's 6 blocks
                 channels: int = 64,
                 in_channels: int = 1,
                 num_classes: int = 10):
        super().__init__()
        self.stem = downsampling_stem(downsampling, in_channels, channels)
        self.blocks = nn.Sequential(*(ResBlock(channels) for _ in range(num_blocks)))
        self.head = classifier_head(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.head(self.blocks(self.stem(x)))
