"""Gradients with respect to the output times ``t`` (backprop and adjoint alike).

For the solution ``y(t_i) = phi(t_i; t_0, y_0)`` of ``dy/dt = f(t, y)`` and a loss with ``g_i = dL/dy(t_i)``:

- an output time moves its output along the trajectory: ``dy(t_i)/dt_i = f(t_i, y_i)``, so
  ``dL/dt_i = <g_i, f(t_i, y_i)>`` (i >= 1);
- the initial time moves the whole trajectory: the flow identity ``dphi(t; t_0, y_0)/dt_0 =
  -(dphi/dy_0) f(t_0, y_0)`` (differentiate ``phi(t; t_0, phi(t_0; s, x)) = phi(t; s, x)`` in ``t_0``; it holds
  for time-dependent ``f``) gives ``dL/dt_0 = -<dL/dy_0 through the later outputs, f(t_0, y_0)>``.

torchdiffeq 0.2.5's adjoint gets the ``t_0`` gradient by integrating a time adjoint ``-a^T df/dt`` backwards;
in exact arithmetic that is the same number (``d(a.f)/dt = a.df/dt`` along the adjoint). The identity costs one
evaluation instead of a vector-Jacobian product with respect to ``t`` in every backward step, and stays right
when ``f`` jumps in time (where ``df/dt`` misses the jump). With backprop torchdiffeq differentiates its time
arithmetic; the formulas above are the exact derivatives of the solution that arithmetic approximates.

Two identity autograd nodes carry this: :meth:`TimeGradient.start` sits between ``y0`` and the solver and
adds ``-<incoming gradient, f(t_0, y_0)>`` to ``t_0``; :meth:`TimeGradient.outputs` sits on the solution and
adds ``<g_i, f(t_i, y_i)>`` to ``t_i``, including row 0 (``y(t_0) = y_0``), whose term cancels the part of the
start node's incoming gradient that came straight from output 0. Both are only inserted when ``t`` requires
grad; each backward evaluation of ``f`` counts as one ``nfe_backward``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .stats import SolveStats

__all__ = ["TimeGradient", "time_gradient"]


class TimeGradient:
    """The time-gradient nodes of one solve (see the module docstring).

    ``func(t: float, y: (N,)) -> (N,)`` is the flat vector field, ``t`` the user's output-time tensor,
    ``times`` the real times (floats) of ``t``'s entries.
    """

    def __init__(self, func: Callable, t: torch.Tensor, times: Sequence[float],
                 collectors: Sequence[SolveStats]):
        self.func, self.t, self.times, self.collectors = func, t, list(times), tuple(collectors)
        self._f0: torch.Tensor | None = None  # f(t_0, y_0), shared by both nodes

    def start(self, y0: torch.Tensor) -> torch.Tensor:
        """``y0`` (flat) through the start node: identity forward, ``t_0``'s flow term backward."""
        return _StartNode.apply(y0, self.t, self)

    def outputs(self, ys: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        """The solution ``(T, N)`` through the output node; ``rows[k]`` is the index of ``t`` that row ``k`` was
        computed at (default: row k at ``t[k]``; event mode passes ``[0]``, as only ``t_0`` gets a gradient there,
        and the event row is left out)."""
        rows = list(range(ys.shape[0])) if rows is None else list(rows)
        return _OutputNode.apply(ys, self.t, self, rows)

    def f_at(self, index: int, y: torch.Tensor) -> torch.Tensor:
        """``f(t[index], y)`` without a graph, counted as backward work (``f(t_0, y_0)`` made once)."""
        if index == 0 and self._f0 is not None:
            return self._f0
        with torch.no_grad():
            f = self.func(self.times[index], y)
        for c in self.collectors:
            c.add(nfe_backward=1)
        if index == 0:
            self._f0 = f
        return f


def time_gradient(func: Callable, t: torch.Tensor, times: Sequence[float],
                  collectors: Sequence[SolveStats]) -> TimeGradient | None:
    """A :class:`TimeGradient` when ``t`` requires grad (and grad mode is on), else ``None`` (no cost)."""
    if not (torch.is_grad_enabled() and t.requires_grad):
        return None
    return TimeGradient(func, t, times, collectors)


class _StartNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y0: torch.Tensor, t: torch.Tensor, owner: TimeGradient) -> torch.Tensor:
        ctx.owner = owner
        ctx.save_for_backward(y0)
        return y0.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (y0,) = ctx.saved_tensors
        owner: TimeGradient = ctx.owner
        grad_t = torch.zeros_like(owner.t)
        f0 = owner.f_at(0, y0.detach())
        grad_t[0] = -torch.dot(grad.reshape(-1), f0.reshape(-1)).to(grad_t.dtype)
        return grad, grad_t, None


class _OutputNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ys: torch.Tensor, t: torch.Tensor, owner: TimeGradient, rows: list[int]) -> torch.Tensor:
        ctx.owner, ctx.rows = owner, rows
        ctx.save_for_backward(ys)
        return ys.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (ys,) = ctx.saved_tensors
        owner: TimeGradient = ctx.owner
        grad_t = torch.zeros_like(owner.t)
        # only rows the loss reaches cost an evaluation: one host read for all of them
        reached = (grad[:len(ctx.rows)] != 0).flatten(1).any(dim=1).tolist()
        for k, (index, hit) in enumerate(zip(ctx.rows, reached)):
            if hit:
                f = owner.f_at(index, ys[k].detach())
                grad_t[index] += torch.dot(grad[k].reshape(-1), f.reshape(-1)).to(grad_t.dtype)
        return grad, grad_t, None, None
