"""RNODE regularisers (Finlay, Jacobsen, Nurbekyan & Oberman 2020, "How to train your neural ODE: the world of
Jacobian and kinetic regularization", ICML 2020, arXiv:2002.02798), integrated by the solver with the state.

Two terms per sample, both integrals along the trajectory that the solver computes as extra state components:

- kinetic energy ``K = int ||f(t, z)||^2 dt``;
- Jacobian Frobenius norm ``J = int ||df/dz||_F^2 dt``, estimated with Hutchinson's trick ``||e^T df/dz||^2``
  (``E[e e^T] = I``) with one Gaussian probe ``e`` per solve, as in the authors' code (a CNF with a Hutchinson
  trace shares its probe; with the exact trace the CNF computes ``J`` exactly, see ``models/cnf.py``).

The loss adds ``kinetic_weight * mean(K) + jacobian_weight * mean(J)`` over the batch. Who does what:
:class:`Regularization` (the weights) is passed into a model like its integrator; the model's dynamics integrate
the terms while it trains and report their batch means to :func:`collect_regularization`, which the task opens
around its forward pass and whose :meth:`RegularizationTerms.add_to` adds the weighted penalty to the loss.
Evaluation (``model.eval()``) integrates no extra terms.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Iterator

import torch
from torch import nn

__all__ = ["Regularization", "RegularizationTerms", "collect_regularization", "report_regularization",
           "RegularizedDynamics", "solve_regularized", "TERMS"]

#: The regulariser names, in the order their states follow the model's state.
TERMS = ("kinetic", "jacobian")


@dataclasses.dataclass(frozen=True)
class Regularization:
    """Weights of the RNODE terms; a term with weight 0 is not integrated at all."""

    kinetic_weight: float = 0.0
    jacobian_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.kinetic_weight < 0 or self.jacobian_weight < 0:
            raise ValueError(f"regulariser weights must be >= 0, got kinetic_weight={self.kinetic_weight}, "
                             f"jacobian_weight={self.jacobian_weight}")

    @property
    def terms(self) -> tuple[str, ...]:
        """The active terms (weight > 0), in :data:`TERMS` order."""
        return tuple(name for name in TERMS if self.weight(name) > 0)

    def weight(self, name: str) -> float:
        """The weight of term ``name``."""
        return float(getattr(self, f"{name}_weight"))


class RegularizationTerms:
    """The terms reported inside one :func:`collect_regularization` block (tensors that carry gradients)."""

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.penalty: torch.Tensor | None = None

    def add(self, regularization: Regularization, values: dict[str, torch.Tensor]) -> None:
        """Add one solve's batch-mean terms and their weighted sum to the penalty."""
        for name, value in values.items():
            self.values[name] = self.values[name] + value if name in self.values else value
            weighted = regularization.weight(name) * value
            self.penalty = weighted if self.penalty is None else self.penalty + weighted

    def add_to(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` plus the weighted penalty (``loss`` itself when nothing was reported)."""
        return loss if self.penalty is None else loss + self.penalty

    def metrics(self) -> dict[str, float]:
        """``{"reg_kinetic": ..., "reg_jacobian": ...}`` for the terms reported (floats, for the run record)."""
        return {f"reg_{name}": float(value.detach()) for name, value in self.values.items()}


_local = threading.local()


@contextlib.contextmanager
def collect_regularization() -> Iterator[RegularizationTerms]:
    """Collect the regulariser terms reported by the solves inside the block (innermost block only)."""
    terms = RegularizationTerms()
    stack = list(getattr(_local, "stack", ()))
    _local.stack = stack + [terms]
    try:
        yield terms
    finally:
        _local.stack = stack


def report_regularization(regularization: Regularization, values: dict[str, torch.Tensor]) -> None:
    """Hand one solve's terms to the innermost open :func:`collect_regularization` (dropped when none is open)."""
    stack = getattr(_local, "stack", ())
    if stack:
        stack[-1].add(regularization, values)


def squared_norm(x: torch.Tensor) -> torch.Tensor:
    """``||x_i||^2`` per sample: ``(B, ...) -> (B,)``."""
    return x.pow(2).flatten(1).sum(dim=1)


class RegularizedDynamics(nn.Module):
    """``d/dt (z, K, J) = (f(t, z), ||f||^2, ||e^T df/dz||^2)`` per sample, for the active ``terms``.

    ``field``: ``f(t, z)`` on a batch ``(B, ...)`` whose samples are independent; ``noise``: the Hutchinson
    probe ``e`` shaped like ``z`` (needed for ``jacobian``). Built per solve so the probe is fixed for the whole
    solve, including a backward solve or replay. The graph through the Jacobian term is kept only when the
    call is differentiated (``torch.is_grad_enabled()``), as for the CNF's trace.
    """

    def __init__(self, field: nn.Module, terms: tuple[str, ...], noise: torch.Tensor | None = None):
        super().__init__()
        if "jacobian" in terms and noise is None:
            raise ValueError("the jacobian term needs a Hutchinson probe (noise)")
        self.field, self.terms, self.noise = field, terms, noise

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        z = state[0]
        differentiate = torch.is_grad_enabled()
        with torch.enable_grad():
            if "jacobian" in self.terms and not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.field(t, z)
            rates = []
            for name in self.terms:
                if name == "kinetic":
                    rates.append(squared_norm(dz))
                else:
                    vjp = torch.autograd.grad(dz, z, self.noise, create_graph=differentiate, allow_unused=True)[0]
                    rates.append(squared_norm(vjp) if vjp is not None else dz.new_zeros(dz.shape[0]))
        if not differentiate:
            return (dz.detach(), *(r.detach() for r in rates))
        return (dz, *rates)


def solve_regularized(integrator, field: nn.Module, z0: torch.Tensor, t: torch.Tensor,
                      regularization: Regularization | None, training: bool):
    """``integrator(field, z0, t)``; while ``training`` with active terms, also integrates them and reports their
    batch means (:func:`report_regularization`). Returns the states ``(len(t), *z0.shape)`` either way."""
    terms = regularization.terms if regularization is not None and training else ()
    if not terms:
        return integrator(field, z0, t)
    noise = torch.randn_like(z0) if "jacobian" in terms else None
    zeros = tuple(z0.new_zeros(z0.shape[0]) for _ in terms)
    # The integrals ride along: they do not enter the error norm (they would shorten the steps they measure).
    out = integrator(RegularizedDynamics(field, terms, noise), (z0, *zeros), t, error_components=1)
    report_regularization(regularization, {name: out[k + 1][-1].mean() for k, name in enumerate(terms)})
    return out[0]
