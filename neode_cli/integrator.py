"""The integrator a model receives: a solver method plus a gradient method, built once from config.

Models call ``integrator(func, y0, t)`` and never see config, tolerances or counters.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from . import ode

GRADIENT_METHODS = ("backprop", "adjoint", "adjoint_seminorm", "checkpoint")


@dataclasses.dataclass(frozen=True)
class Integrator:
    """Solve ``dy/dt = func(t, y)`` with a fixed method, tolerances and gradient method.

    ``gradient`` is one of :data:`GRADIENT_METHODS`: ``backprop`` differentiates through the solver's
    operations; ``adjoint`` solves the adjoint ODE backwards (memory independent of the number of steps);
    ``adjoint_seminorm`` is the adjoint with the parameter components dropped from its error norm;
    ``checkpoint`` gives backprop's gradient by replaying checkpointed steps (Zhuang et al. 2020; saved memory
    of the step states plus one step's activations; neode backend only).
    ``options`` are the solver options (``step_size`` for fixed-grid methods, ...).
    """

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    gradient: str = "adjoint"
    options: dict[str, Any] | None = None
    backend: str = "neode"

    def __post_init__(self) -> None:
        if self.gradient not in GRADIENT_METHODS:
            raise ValueError(f"unknown gradient method {self.gradient!r}; valid: {', '.join(GRADIENT_METHODS)}")
        if self.gradient == "checkpoint" and self.backend != "neode":
            raise ValueError("the checkpoint gradient needs the neode backend (solver.backend=neode)")

    def __call__(self, func: torch.nn.Module, y0, t: torch.Tensor):
        """Return the solution at times ``t``: shape ``(len(t), *y0.shape)`` (a tuple for tuple ``y0``)."""
        options = dict(self.options) if self.options else None
        if self.gradient == "backprop":
            return ode.odeint(func, y0, t, rtol=self.rtol, atol=self.atol, method=self.method,
                              options=options, backend=self.backend)
        if self.gradient == "checkpoint":
            return ode.odeint_checkpoint(func, y0, t, rtol=self.rtol, atol=self.atol, method=self.method,
                                         options=options, params=tuple(func.parameters()))
        adjoint_options = {"norm": "seminorm"} if self.gradient == "adjoint_seminorm" else None
        return ode.odeint_adjoint(func, y0, t, rtol=self.rtol, atol=self.atol, method=self.method,
                                  options=options, adjoint_options=adjoint_options,
                                  adjoint_params=tuple(func.parameters()), backend=self.backend)
