"""Augmented neural ODEs (Dupont, Doucet & Teh 2019, "Augmented Neural ODEs", arXiv:1904.01681).

A neural ODE's flow is a homeomorphism of its state space: trajectories never cross, so e.g. ``x -> -x`` on the
real line cannot be represented. Appending zero dimensions to the initial state lets the flow use them to move
points past each other. ODE-Net (``augment_dim`` zero channels) and the latent ODE (zero latent dimensions) use
:func:`augment`.
"""

from __future__ import annotations

import torch

__all__ = ["augment"]


def augment(h: torch.Tensor, extra: int) -> torch.Tensor:
    """``h`` with ``extra`` zero channels appended along dim 1: ``(B, C, ...) -> (B, C + extra, ...)``.

    The augmented neural ODE of Dupont, Doucet & Teh 2019 (arXiv:1904.01681): the flow runs in a larger space,
    where trajectories that would have to cross in the original one (e.g. ``x -> -x`` in 1-D) can pass each other.
    """
    if extra == 0:
        return h
    return torch.cat([h, h.new_zeros(h.shape[0], extra, *h.shape[2:])], dim=1)
