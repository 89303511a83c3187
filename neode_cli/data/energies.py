"""The four unnormalised 2-D target densities of Rezende & Mohamed (2015), Table 1, for density matching.

Each energy ``U`` maps points ``z`` of shape ``(n, 2)`` to ``(n,)``; the target density is
``p(z) = exp(-U(z)) / Z`` with ``Z`` unknown. Log-sum-exp keeps the mixture energies finite far from the
modes (the paper's formula written as ``-log(exp(a) + exp(b))`` underflows there).

Caveat (kept as published): U2, U3 and U4 do not confine z1, so ``exp(-U)`` is not normalisable on R^2 (Rezende
& Mohamed show them on [-4, 4]^2); the reverse KL to them has no lower bound, and part of a lower loss is a
wider spread along z1. Only U1 is a proper density.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Energy = Callable[[torch.Tensor], torch.Tensor]


def _w1(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(2 * math.pi * z[:, 0] / 4)


def _w2(z: torch.Tensor) -> torch.Tensor:
    return 3 * torch.exp(-0.5 * ((z[:, 0] - 1) / 0.6) ** 2)


def _w3(z: torch.Tensor) -> torch.Tensor:
    return 3 * torch.sigmoid((z[:, 0] - 1) / 0.3)


def _neg_log_sum_exp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return -torch.logsumexp(torch.stack([a, b]), dim=0)


def u1(z: torch.Tensor) -> torch.Tensor:
    """Ring with two lobes: ``0.5((|z|-2)/0.4)^2 - log(exp(-0.5((z1-2)/0.6)^2) + exp(-0.5((z1+2)/0.6)^2))``."""
    ring = 0.5 * ((z.norm(dim=1) - 2) / 0.4) ** 2
    return ring + _neg_log_sum_exp(-0.5 * ((z[:, 0] - 2) / 0.6) ** 2, -0.5 * ((z[:, 0] + 2) / 0.6) ** 2)


def u2(z: torch.Tensor) -> torch.Tensor:
    """Sine wave: ``0.5((z2 - w1(z))/0.4)^2`` with ``w1 = sin(2 pi z1 / 4)``."""
    return 0.5 * ((z[:, 1] - _w1(z)) / 0.4) ** 2


def u3(z: torch.Tensor) -> torch.Tensor:
    """Two sine waves split by a bump: ``-log(exp(-0.5((z2-w1)/0.35)^2) + exp(-0.5((z2-w1+w2)/0.35)^2))``."""
    a = z[:, 1] - _w1(z)
    return _neg_log_sum_exp(-0.5 * (a / 0.35) ** 2, -0.5 * ((a + _w2(z)) / 0.35) ** 2)


def u4(z: torch.Tensor) -> torch.Tensor:
    """Two sine waves split by a step: ``-log(exp(-0.5((z2-w1)/0.4)^2) + exp(-0.5((z2-w1+w3)/0.35)^2))``."""
    a = z[:, 1] - _w1(z)
    return _neg_log_sum_exp(-0.5 * (a / 0.4) ** 2, -0.5 * ((a + _w3(z)) / 0.35) ** 2)


#: Name -> energy; the names are the values of ``data.target`` in ``conf/data/energy*.yaml``.
ENERGIES: dict[str, Energy] = {"u1": u1, "u2": u2, "u3": u3, "u4": u4}


def get_energy(name: str) -> Energy:
    """The energy function called ``name`` (``u1`` .. ``u4``); ``ValueError`` listing valid names otherwise."""
    if name not in ENERGIES:
        raise ValueError(f"unknown target energy {name!r}; valid: {', '.join(ENERGIES)}")
    return ENERGIES[name]
