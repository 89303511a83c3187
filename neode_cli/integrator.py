"""The integrator a model receives: a solver method plus a gradient method, built once from config.

Models call ``integrator(func, y0, t)`` and never see config, tolerances or counters. The option rules
(which options a method takes, valid tolerances, ...) are the solver core's alone: :meth:`Integrator.check`
asks the solver instead of repeating them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any

import torch

from . import ode

GRADIENT_METHODS = ("backprop", "adjoint", "adjoint_seminorm", "checkpoint")

#: With the neode backend the integrator keeps the error norms training has always used, so existing configs
#: give the same numbers: tuple states by the RMS over all their entries (``norm="rms"``; the solver's default
#: is now torchdiffeq's maximum of per-tensor RMS norms), and the adjoint by ``"block_rms"`` (state, adjoint
#: state, all parameters) or ``"block_rms_seminorm"`` for ``adjoint_seminorm`` (the solver's defaults are now
#: torchdiffeq's per-tensor ones). ``backend="torchdiffeq"`` keeps torchdiffeq's defaults, as it always had.
LEGACY_NORMS = {"forward_tuple": "rms", "adjoint": "block_rms", "adjoint_seminorm": "block_rms_seminorm"}


class _Still(torch.nn.Module):
    """``dy/dt = 0``: the field of :meth:`Integrator.check`'s empty solve."""

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(y)


def _leading_rms_norm(n: int):
    """Norm of a tuple of scaled errors: the RMS over all entries of its first ``n`` tensors (the solver's
    default norm, restricted to them, so the steps are chosen as if the other components were not there)."""
    def norm(errors: tuple[torch.Tensor, ...]) -> torch.Tensor:
        kept = errors[:n]
        return (sum(e.pow(2).sum() for e in kept) / sum(e.numel() for e in kept)).sqrt()
    return norm


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
        if self.backend not in ode.BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; valid: {', '.join(ode.BACKENDS)}")

    def check(self) -> None:
        """Raise the solver core's own ValueError if this method, these tolerances or options cannot run.

        It makes the call a model makes (``odeint`` or ``odeint_adjoint`` with the same arguments) on a problem
        with nothing to solve: ``dy/dt = 0`` for one scalar, asked for at its initial time only. So every rule
        the solver has is applied by the solver, before any work. The rules checked are neode's, whatever the
        backend (``torchdiffeq`` receives the same options). Call it outside ``collect_stats`` (it is a solve).
        """
        with torch.no_grad():
            replace(self, backend="neode")(_Still(), torch.zeros(1), torch.zeros(1))

    def __call__(self, func: torch.nn.Module, y0, t: torch.Tensor, *, error_components: int | None = None):
        """Return the solution at times ``t``: shape ``(len(t), *y0.shape)`` (a tuple for tuple ``y0``).

        ``error_components=n`` (tuple ``y0`` only): only the first ``n`` components enter the forward solve's
        error norm (the RMS over their entries); the others are accumulators that ride along, such as the
        RNODE integrals, whose size should not shorten the steps of the dynamics they measure.
        """
        options = dict(self.options) if self.options else {}
        if error_components is not None:
            if not isinstance(y0, tuple) or not 1 <= error_components <= len(y0):
                raise ValueError(f"error_components={error_components!r} needs a tuple state with at least that "
                                 "many components")
            if self.method in ode.ADAPTIVE_METHODS:  # a fixed grid has no error norm
                options["norm"] = _leading_rms_norm(error_components)
        legacy = self.backend == "neode"
        if legacy and isinstance(y0, tuple) and self.method in ode.ADAPTIVE_METHODS and \
                options.get("norm") is None:
            options["norm"] = LEGACY_NORMS["forward_tuple"]
        options = options or None
        if self.gradient == "backprop":
            return ode.odeint(func, y0, t, rtol=self.rtol, atol=self.atol, method=self.method,
                              options=options, backend=self.backend)
        if self.gradient == "checkpoint":
            return ode.odeint_checkpoint(func, y0, t, rtol=self.rtol, atol=self.atol, method=self.method,
                                         options=options, params=tuple(func.parameters()))
        if legacy:
            adjoint_options = {"norm": LEGACY_NORMS[self.gradient]}
        else:
            adjoint_options = {"norm": "seminorm"} if self.gradient == "adjoint_seminorm" else None
        return ode.odeint_adjoint(func, y0, t, rtol=self.rtol, atol=self.atol, method=self.method,
                                  options=options, adjoint_options=adjoint_options,
                                  adjoint_params=tuple(func.parameters()), backend=self.backend)
