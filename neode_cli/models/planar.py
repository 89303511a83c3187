"""Discrete planar normalizing flow (Rezende & Mohamed 2015): the baseline of Figures 4-5.

K layers ``f_k(z) = z + u_k tanh(w_k^T z + b_k)`` map base samples z0 ~ N(0, base_std^2 I) to data, with
``log q(x) = log p0(z0) - sum_k log|1 + u_k^T psi_k(z_{k-1})|``, ``psi = tanh'(w^T z + b) w``. Invertibility
is enforced by using ``u_hat = u + (m(w^T u) - w^T u) w / |w|^2`` with ``m(a) = -1 + softplus(a)``, so
``w^T u_hat > -1``.

A planar layer has no closed-form inverse, but it is invertible along one direction: with
``a = w^T z`` the equation ``w^T y = a + (w^T u_hat) tanh(a + b)`` is strictly increasing in ``a`` with the
root inside ``w^T y +- |w^T u_hat|``; bisection finds it, and one Newton step taken inside the autograd
graph from the (detached) root gives exactly the implicit-function gradient. That is how ``log_prob``
(maximum likelihood, Figure 5) works.

Implements the density-model protocol described in :mod:`neode_cli.models.cnf`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .cnf import standard_normal_log_prob

_BISECTION_STEPS = 24  # bracket (width 2|w^T u_hat|) shrinks by 2^-24 ~ 6e-8; a Newton step then squares that


class PlanarFlow(nn.Module):
    """``units`` = K planar layers (one unit each) on ``R^dim``; ``init_std``: std of the initial w, u (b = 0).

    The size is called ``units`` as in the paper, which matches K one-unit layers against a CNF with M units
    (Figures 4-5); it is also what lets one sweep set both models' size (``model.units=2,8,32``).
    """

    # These defaults are the config's too (``model=planar_nf``): the schema is generated from this signature.
    def __init__(self, dim: int = 2,
                 units: int = 8,  # K layers of one planar unit each (Figure 4 sweeps 2, 8, 32; Figure 5: 64)
                 base_std: float = 1.0,  # base density N(0, base_std^2 I)
                 init_std: float = 0.1):  # std of the initial w and u (b starts at 0): close to the identity
        super().__init__()
        if units < 1 or base_std <= 0:
            raise ValueError(f"need units >= 1 and base_std > 0, got units={units}, base_std={base_std}")
        layers = units
        self.dim, self.base_std = dim, float(base_std)
        w = init_std * torch.randn(layers, dim)
        # Start near the identity: w^T u = log(e - 1) makes m(w^T u) = 0, so u_hat = (small noise) and each
        # layer's Jacobian is ~1. (u ~ N(0, init_std^2) alone gives w^T u_hat ~ m(0) = -0.31: every layer
        # would contract by ~0.7, and 64 of them squeeze the base to a point.)
        u = math.log(math.e - 1) * w / (w * w).sum(dim=1, keepdim=True) + init_std * torch.randn(layers, dim)
        self.w = nn.Parameter(w)
        self.u = nn.Parameter(u)
        self.b = nn.Parameter(torch.zeros(layers))

    @property
    def num_layers(self) -> int:
        return self.w.shape[0]

    def constrained_params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(w, u_hat, b)`` of all K layers, ``(K, d), (K, d), (K,)``, with ``w_k^T u_hat_k > -1``."""
        wu = (self.w * self.u).sum(dim=1, keepdim=True)
        u_hat = self.u + (F.softplus(wu) - 1 - wu) * self.w / (self.w * self.w).sum(dim=1, keepdim=True).clamp_min(1e-12)
        return self.w, u_hat, self.b

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the base N(0, base_std^2 I): ``(n, d) -> (n,)``."""
        return standard_normal_log_prob(z, self.base_std)

    def forward_layers(self, z: torch.Tensor, start: int = 0,
                       stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Push ``z`` (n, d) through layers ``start..stop-1`` (all by default): ``(x, sum log|det|)``."""
        w, u_hat, b = self.constrained_params()
        c = (w * u_hat).sum(dim=1)                               # (K,): w_k^T u_hat_k
        logdet = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for k in range(start, self.num_layers if stop is None else stop):
            h = torch.tanh(z @ w[k] + b[k])                      # (n,)
            logdet = logdet + torch.log((1 + (1 - h ** 2) * c[k]).abs())
            z = z + h[:, None] * u_hat[k]
        return z, logdet

    @staticmethod
    def _invert_layer(w: torch.Tensor, u_hat: torch.Tensor, b: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z, log|det|)`` with ``z + u_hat tanh(w^T z + b) = y``; differentiable (implicit-function gradient)."""
        c = w @ u_hat                                            # > -1
        target = y @ w                                           # (n,)
        with torch.no_grad():
            c64, t64, b64 = c.double(), target.double(), b.double()
            lo, hi = t64 - c64.abs(), t64 + c64.abs()
            for _ in range(_BISECTION_STEPS):
                mid = 0.5 * (lo + hi)
                above = mid + c64 * torch.tanh(mid + b64) > t64
                hi = torch.where(above, mid, hi)
                lo = torch.where(above, lo, mid)
            root = (0.5 * (lo + hi)).to(y.dtype)
        # One Newton step inside the graph: it removes the bisection's remaining error (quadratically) and
        # gives exactly the implicit-function gradient da/dtheta = -(dg/dtheta) / g'(a).
        slope = 1 + c * (1 - torch.tanh(root + b) ** 2)
        a = root - (root + c * torch.tanh(root + b) - target) / slope
        h = torch.tanh(a + b)
        z = y - h[:, None] * u_hat
        return z, torch.log((1 + c * (1 - h ** 2)).abs())

    def log_prob(self, x: torch.Tensor, fraction: float = 1.0) -> torch.Tensor:
        """``log q(x)`` of the marginal after ``round(fraction * K)`` layers (1 = the model density): ``(n,)``."""
        num = round(fraction * self.num_layers)
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        z = x
        w, u_hat, b = self.constrained_params()
        for k in reversed(range(num)):
            z, ld = self._invert_layer(w[k], u_hat[k], b[k], z)
            logdet = logdet + ld
        return self.base_log_prob(z) - logdet

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples of the model and their log-density ``(x (n, d), log_q (n,))``, differentiable."""
        z0 = self._base_sample(n, generator)
        x, logdet = self.forward_layers(z0)
        return x, self.base_log_prob(z0) - logdet

    def trajectory(self, n: int, fractions: Sequence[float],
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples after ``round(f * K)`` layers for each ``f`` in ``fractions``: ``(len(fractions), n, d)``."""
        z = self._base_sample(n, generator)
        out, done = [], 0
        for f in fractions:
            num = round(f * self.num_layers)
            z, _ = self.forward_layers(z, done, num)
            done = max(done, num)
            out.append(z)
        return torch.stack(out)

    def _base_sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        return self.base_std * torch.randn(n, self.dim, dtype=self.w.dtype, device=self.w.device,
                                           generator=generator)
