"""ODE-Net (and RK-Net): downsampling stem, one ODE block integrated over t in [0, 1], classifier head.

ODE-Net and RK-Net are the same module; they differ only in the integrator's gradient method (adjoint for
ODE-Net, backprop through the Runge-Kutta solver for RK-Net), which the caller chooses.
"""

from __future__ import annotations

import torch
from torch import nn

from ..integrator import Integrator
from .augment import augment
from .blocks import ConcatConv2d, Downsampling, classifier_head, downsampling_stem, group_norm
from .regularization import Regularization, solve_regularized


class ODEFunc(nn.Module):
    """The vector field ``f(t, h)``: GN, ReLU, conv3x3 with time, GN, ReLU, conv3x3 with time, GN.

    75,392 parameters at 64 channels. Maps ``(B, C, H, W)`` to ``(B, C, H, W)``.
    """

    def __init__(self, channels: int = 64):
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = ConcatConv2d(channels, channels)
        self.norm2 = group_norm(channels)
        self.conv2 = ConcatConv2d(channels, channels)
        self.norm3 = group_norm(channels)

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, torch.relu(self.norm1(h)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class ODEBlock(nn.Module):
    """``h(1)`` for ``dh/dt = func(t, h)``, ``h(0) = [input, 0]``, solved by an integrator.

    ``augment_dim`` zero channels are appended to the input along dim 1 before the solve (:func:`augment`), so
    ``func`` works on ``C + augment_dim`` channels and the output has them too. The integrator given at
    construction is the default; :meth:`forward` accepts another one so the same trained block can be re-solved
    (e.g. at a reference tolerance to measure numerical error). With a ``regularization`` (RNODE terms), training
    solves also integrate the kinetic / Jacobian terms (``models/regularization.py``).
    """

    def __init__(self, func: nn.Module, integrator: Integrator, end_time: float = 1.0, augment_dim: int = 0,
                 regularization: Regularization | None = None):
        super().__init__()
        if augment_dim < 0:
            raise ValueError(f"augment_dim must be >= 0, got {augment_dim}")
        self.func = func
        self.integrator = integrator
        self.augment_dim = augment_dim
        self.regularization = regularization
        self.register_buffer("times", torch.tensor([0.0, end_time]), persistent=False)

    def forward(self, h: torch.Tensor, integrator: Integrator | None = None) -> torch.Tensor:
        solve = integrator or self.integrator
        h0 = augment(h, self.augment_dim)
        return solve_regularized(solve, self.func, h0, self.times.to(h.dtype), self.regularization, self.training)[-1]


class ODENet(nn.Module):
    """MNIST classifier with one ODE block in place of the ResNet's six residual blocks.

    ``integrator`` solves the block (its ``gradient`` makes this ODE-Net or RK-Net); ``downsampling`` is
    ``conv`` (208,266 parameters) or ``res`` (232,970); ``channels``, ``in_channels`` and ``num_classes``
    set the sizes. ``augment_dim`` > 0 makes it an augmented ODE-Net (Dupont et al. 2019): that many zero
    channels join the stem's features before the ODE block, the ODE function works on ``channels +
    augment_dim`` channels, and the head reads all of them. Input ``(B, in_channels, 28, 28)`` (or
    ``(B, 28, 28)``), output logits ``(B, num_classes)``. ``regularization``: RNODE weights (Finlay et al. 2020)
    whose terms the ODE block integrates while training.
    """

    # These defaults are the config's too (``model=odenet``): the schema is generated from this signature.
    def __init__(self, integrator: Integrator,
                 downsampling: Downsampling | str = "conv",  # conv: Conv3x3 + two strided Conv4x4 | res: ResBlocks
                 channels: int = 64,  # stem, ODE function and head (GroupNorm uses min(32, C) groups)
                 in_channels: int = 1,  # grayscale MNIST / Fashion-MNIST
                 num_classes: int = 10,
                 augment_dim: int = 0,  # > 0: zero channels join the ODE block's state (augmented ODE, Dupont et al. 2019)
                 regularization: Regularization | None = None):  # RNODE weights, passed in like the integrator
        super().__init__()
        self.stem = downsampling_stem(downsampling, in_channels, channels)
        self.ode_block = ODEBlock(ODEFunc(channels + augment_dim), integrator, augment_dim=augment_dim,
                                  regularization=regularization)
        self.head = classifier_head(channels + augment_dim, num_classes)

    @property
    def integrator(self) -> Integrator:
        """The integrator the ODE block uses by default."""
        return self.ode_block.integrator

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The stem's output (the ODE block's initial state before augmentation): ``(B, channels, 6 or 7, 6 or 7)``."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        return self.stem(x)

    def ode_block_output(self, x: torch.Tensor, integrator: Integrator | None = None) -> torch.Tensor:
        """``h(1)`` for inputs ``x``, solved with ``integrator`` (default: the model's own).

        Comparing this at the run's integrator against a tight reference solve gives the numerical error
        of the trained ODE block (paper Figure 3a).
        """
        return self.ode_block(self.features(x), integrator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ode_block(self.features(x)))
