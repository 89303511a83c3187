"""neode_cli.ode: the solver core (TEMPORARY PLACEHOLDER delegating to torchdiffeq).

The public surface below is final; the implementation is being replaced by the project's own solver.
"""

from __future__ import annotations

import torch

from .stats import SolveStats, active_collectors, collect_stats

__all__ = [
    "odeint",
    "odeint_adjoint",
    "SolveStats",
    "collect_stats",
    "SolverError",
    "StepSizeUnderflowError",
    "TooManyStepsError",
    "NonFiniteStateError",
]


class SolverError(RuntimeError):
    """A solve could not proceed."""


class StepSizeUnderflowError(SolverError):
    """The adaptive step size fell below what floating point can resolve."""


class TooManyStepsError(SolverError):
    """The solve exceeded ``max_num_steps``."""


class NonFiniteStateError(SolverError):
    """The state or the vector field became NaN or infinite."""


class _Counted(torch.nn.Module):
    def __init__(self, func):
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.func(t, y)


def _solve(adjoint: bool, func, y0, t, **kwargs):
    import torchdiffeq

    counted = _Counted(func)
    collectors = active_collectors()
    if adjoint:
        kwargs.setdefault("adjoint_params", tuple(func.parameters()) if isinstance(func, torch.nn.Module) else ())
        out = torchdiffeq.odeint_adjoint(counted, y0, t, **kwargs)
    else:
        out = torchdiffeq.odeint(counted, y0, t, **kwargs)
    forward_calls = counted.calls
    for c in collectors:
        c.add(nfe_forward=forward_calls, solves=1)

    def _count_backward(grad):
        extra = counted.calls - forward_calls if adjoint else forward_calls
        for c in collectors:
            c.add(nfe_backward=extra)
        return grad

    tensors = out if isinstance(out, tuple) else (out,)
    if tensors[0].requires_grad:
        # Runs when the backward pass reaches the solution: approximate (placeholder only).
        tensors[0].register_hook(_count_backward)
    return out


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, backend="neode"):
    """Solve dy/dt = func(t, y) from y0 at times t; returns shape (len(t), *y0.shape)."""
    return _solve(False, func, y0, t, rtol=rtol, atol=atol, method=method, options=options)


def odeint_adjoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, adjoint_rtol=None,
                   adjoint_atol=None, adjoint_method=None, adjoint_options=None, adjoint_params=None,
                   backend="neode"):
    """As :func:`odeint`, with gradients by the continuous adjoint method."""
    return _solve(True, func, y0, t, rtol=rtol, atol=atol, method=method, options=options,
                  adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol, adjoint_method=adjoint_method,
                  adjoint_options=adjoint_options, adjoint_params=adjoint_params)
