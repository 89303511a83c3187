"""The one-hidden-layer MLP of Table 1 (784-300-10, as in LeCun et al. 1998)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, Linear(in_features, hidden), ReLU, Linear(hidden, num_classes): 238,510 parameters at
    784-300-10. Accepts images of any shape whose trailing dimensions multiply to ``in_features``.
    """

    # These defaults are the config's too (``model=mlp``): the schema is generated from this signature.
    def __init__(self, in_features: int = 784,  # 28 x 28 pixels, flattened
                 hidden: int = 300,
                 num_classes: int = 10):
        super().__init__()
        self.in_features = in_features
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.reshape(len(x), self.in_features))
