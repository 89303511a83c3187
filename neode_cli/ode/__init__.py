"""neode_cli.ode: the solver core, a stand-alone library (no Hydra, config or models).

Public surface (torchdiffeq 0.2.5 signatures plus ``backend``):

- :func:`odeint` / :func:`odeint_adjoint`: solve ``dy/dt = func(t, y)``; gradients by backpropagation through
  the solver's operations or by the continuous adjoint. :func:`odeint_checkpoint` (neode's own, see
  :mod:`.checkpoint`): backprop's gradient from checkpointed steps, replayed one at a time.
- Methods: fixed grid ``euler``, ``midpoint``, ``heun2``, ``heun3``, ``rk4``; adaptive ``adaptive_heun``,
  ``fehlberg2``, ``bosh3``, ``dopri5`` (default), ``tsit5``, ``dopri8`` (see :mod:`.tableaux`); fixed-grid
  linear multistep ``explicit_adams``, ``implicit_adams`` (alias ``fixed_adams``) (see :mod:`.adams`);
  adaptive variable-order ``adams`` (see :mod:`.adaptive_adams`);
  ``scipy_solver`` with ``options=dict(solver="LSODA"|"RK45"|"DOP853"|"BDF"|"Radau"|...)`` (forward through
  SciPy, no graph: gradients by ``odeint_adjoint``; see :mod:`.scipy_solver`).
- Errors: :class:`SolverError` > :class:`StepSizeUnderflowError`, :class:`TooManyStepsError`,
  :class:`NonFiniteStateError`; each message is one line with t, step size, NFE so far and remedies.
- Statistics: ``with collect_stats() as s: ...`` (see :mod:`.stats` for the definitions).
- Step-size control: ``options=dict(controller="pi")`` selects the PI controller (default ``"i"``, the integral
  controller torchdiffeq uses); see :mod:`.control`.
- ``backend="torchdiffeq"`` runs the same call through torchdiffeq, still counting NFE
  (:mod:`.torchdiffeq_backend`).

This module is the public face only: the loop is :mod:`.integrate`, the adjoint :mod:`.adjoint`.
"""

from __future__ import annotations

import torch

from .adjoint import AdjointSpec, adjoint_settings, adjoint_solve
from .checkpoint import odeint_checkpoint
from .errors import NonFiniteStateError, SolverError, StepSizeUnderflowError, TooManyStepsError
from .integrate import integrate
from .problem import make_settings, prepare
from .loops import LOOP_METHODS
from .stats import SolveStats, WorkCounts, active_collectors, backward_counter, collect_stats, record_work
from .tableaux import ADAPTIVE_METHODS as _RK_ADAPTIVE
from .tableaux import FIXED_METHODS as _RK_FIXED
from .tableaux import TABLEAUX
from .torchdiffeq_backend import torchdiffeq_odeint

__all__ = [
    "odeint",
    "odeint_adjoint",
    "odeint_checkpoint",
    "SolveStats",
    "collect_stats",
    "SolverError",
    "StepSizeUnderflowError",
    "TooManyStepsError",
    "NonFiniteStateError",
    "METHODS",
    "FIXED_METHODS",
    "ADAPTIVE_METHODS",
    "BACKENDS",
]

FIXED_METHODS = _RK_FIXED + tuple(name for name, m in LOOP_METHODS.items() if not m.adaptive)
ADAPTIVE_METHODS = _RK_ADAPTIVE + tuple(name for name, m in LOOP_METHODS.items() if m.adaptive)
METHODS = tuple(TABLEAUX) + tuple(LOOP_METHODS)
BACKENDS = ("neode", "torchdiffeq")


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, backend="neode"):
    """Solve ``dy/dt = func(t, y)`` from ``y0`` at the times ``t``.

    ``y0``: a tensor or a tuple of tensors (then ``func`` takes and returns tuples); ``t``: 1-D, strictly
    increasing or decreasing, ``t[0]`` is the initial time. Returns ``(len(t), *y0.shape)`` (a tuple of such
    for tuple states). Gradients flow by backpropagation through the solver's operations (step sizes are
    treated as constants). ``method=None`` means dopri5. Options: fixed-grid methods ``step_size`` (without
    it, one step between consecutive output times), ``max_num_steps``, ``dtype``, ``interp`` (outputs between
    grid points: ``"cubic"``, the default, the cubic Hermite interpolant; ``"linear"``, torchdiffeq's); adaptive methods
    ``first_step``, ``max_num_steps``, ``safety``, ``ifactor``, ``dfactor``, ``norm`` ("rms", "max" or a
    callable on the scaled error in the state's structure), ``controller`` ("i", the default, or "pi"),
    ``dtype`` (dtype of the time passed to func).
    Raises ValueError for invalid arguments and :class:`SolverError` subclasses when the solve fails.
    """
    _check_backend(backend)
    if backend == "torchdiffeq":
        return torchdiffeq_odeint(False, func, y0, t, dict(rtol=rtol, atol=atol, method=method, options=options))
    problem = prepare(y0, t, options)
    settings = make_settings(method, rtol, atol, options, unflatten=problem.unflatten_state)
    collectors = active_collectors()
    attach = backward_counter(collectors) if torch.is_grad_enabled() else None
    flat_func = problem.flat_func(func, on_output=attach)
    counts = WorkCounts()
    try:
        ys = integrate(flat_func, problem.y0, problem.s_times, problem.direction, settings, counts)
    finally:
        record_work(collectors, counts)
    return problem.unflatten(ys)


def odeint_adjoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, adjoint_rtol=None,
                   adjoint_atol=None, adjoint_method=None, adjoint_options=None, adjoint_params=None,
                   backend="neode"):
    """As :func:`odeint`, with gradients by the continuous adjoint (memory constant in the number of steps).

    ``adjoint_params``: the tensors to differentiate (default: ``func.parameters()`` for an ``nn.Module``,
    else none). ``adjoint_rtol/atol/method`` default to the forward ones; with the same method the backward
    solve inherits the forward options except ``norm`` (so a fixed grid keeps its ``step_size``), and
    ``adjoint_options`` override them key by key; ``adjoint_options=dict(norm="seminorm")`` leaves the parameter
    adjoint out of the backward error norm (default: maximum of the RMS norms of state, adjoint state and
    parameter adjoint). No gradient flows to ``t``.
    """
    _check_backend(backend)
    if adjoint_params is None:
        adjoint_params = tuple(func.parameters()) if isinstance(func, torch.nn.Module) else ()
    adjoint_params = tuple(adjoint_params)
    if backend == "torchdiffeq":
        return torchdiffeq_odeint(True, func, y0, t, dict(
            rtol=rtol, atol=atol, method=method, options=options, adjoint_rtol=adjoint_rtol,
            adjoint_atol=adjoint_atol, adjoint_method=adjoint_method, adjoint_options=adjoint_options,
            adjoint_params=adjoint_params))

    problem = prepare(y0, t, options)
    settings = make_settings(method, rtol, atol, options, unflatten=problem.unflatten_state)
    params = tuple(p for p in adjoint_params if isinstance(p, torch.Tensor) and p.requires_grad)
    backward = adjoint_settings(problem, params, method=method, rtol=rtol, atol=atol, options=options,
                                adjoint_method=adjoint_method, adjoint_rtol=adjoint_rtol,
                                adjoint_atol=adjoint_atol, adjoint_options=adjoint_options)
    spec = AdjointSpec(func=problem.flat_func(func), s_times=problem.s_times, direction=problem.direction,
                       settings=settings, adjoint_settings=backward, params=params,
                       collectors=active_collectors())
    return problem.unflatten(adjoint_solve(spec, problem.y0))
