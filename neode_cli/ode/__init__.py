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
- Discontinuities: ``step_t``, ``jump_t``, ``min_step``, ``max_step`` (adaptive Runge-Kutta), ``grid_constructor``,
  ``perturb`` (fixed grids); see :mod:`.stops`.
- ``backend="torchdiffeq"`` runs the same call through torchdiffeq, still counting NFE
  (:mod:`.torchdiffeq_backend`).
- Step callbacks: ``func.callback_step`` / ``callback_accept_step`` / ``callback_reject_step`` (and ``*_adjoint``
  for the adjoint's backward solve), torchdiffeq's (see :mod:`.callbacks`).

This module is the public face only: the loop is :mod:`.integrate`, the adjoint :mod:`.adjoint`.
"""

from __future__ import annotations

import warnings

import torch

from .adjoint import AdjointSpec, adjoint_callbacks, adjoint_settings, adjoint_solve
from .callbacks import attach_callbacks
from .checkpoint import odeint_checkpoint
from .events import combine_event_fn, event_mode, solve_until_event, through_event_time
from .errors import NonFiniteStateError, SolverError, StepSizeUnderflowError, TooManyStepsError
from .integrate import integrate
from .problem import make_settings, prepare
from .loops import LOOP_METHODS
from .stats import SolveStats, WorkCounts, active_collectors, backward_counter, collect_stats, record_work
from .tableaux import ADAPTIVE_METHODS as _RK_ADAPTIVE
from .tableaux import FIXED_METHODS as _RK_FIXED
from .tableaux import TABLEAUX
from .time_grad import time_gradient
from .torchdiffeq_backend import torchdiffeq_odeint

__all__ = [
    "odeint",
    "odeint_adjoint",
    "odeint_checkpoint",
    "odeint_event",
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


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None, backend="neode"):
    """Solve ``dy/dt = func(t, y)`` from ``y0`` at the times ``t``.

    ``y0``: a tensor or a tuple of tensors (then ``func`` takes and returns tuples); ``t``: 1-D, strictly
    increasing or decreasing, ``t[0]`` is the initial time. Returns ``(len(t), *y0.shape)`` (a tuple of such
    for tuple states). Gradients flow by backpropagation through the solver's operations (step sizes are
    treated as constants). ``method=None`` means dopri5. Options: fixed-grid methods ``step_size`` (without
    it, one step between consecutive output times), ``max_num_steps``, ``dtype``, ``interp`` (outputs between
    grid points: ``"cubic"``, the default, the cubic Hermite interpolant; ``"linear"``, torchdiffeq's),
    ``grid_constructor`` (``(func, y0, t) -> grid`` from ``t[0]`` to ``t[-1]``, instead of ``step_size``),
    ``perturb`` (evaluate each step's ends one ulp inside it); adaptive methods
    ``first_step``, ``max_num_steps``, ``safety``, ``ifactor``, ``dfactor``, ``norm`` ("mixed", the default as
    torchdiffeq: RMS, and for tuple states the maximum of the tensors' RMS norms; "rms" over all components;
    "max"; or a callable on the scaled error in the state's structure), ``controller`` ("i", the default, or "pi"),
    ``dtype`` (dtype of the time passed to func), ``step_t``/``jump_t`` (times to step to exactly; at a jump
    ``f`` is evaluated one ulp either side), ``min_step``/``max_step`` (see :mod:`.stops`).
    Step callbacks on ``func`` are called as torchdiffeq calls them (see :mod:`.callbacks`).
    When ``t`` requires grad, every output time gets ``dL/dt_i = <dL/dy_i, f(t_i, y_i)>`` and ``t_0`` the flow
    term (see :mod:`.time_grad`).
    ``event_fn(t, y) -> tensor``: solve until its first zero crossing instead (see :mod:`.events`): ``t`` must
    have two entries (``t[0]`` the start, ``t[1]`` only the direction; the solve runs past it), fixed grids need
    ``step_size``; returns ``(event_t, solution)`` with ``solution`` = ``[y0, y(event_t)]``; ``event_t`` has no
    gradient here (use :func:`odeint_event` for that).
    Raises ValueError for invalid arguments and :class:`SolverError` subclasses when the solve fails.
    """
    _check_backend(backend)
    if backend == "torchdiffeq":
        extra = {} if event_fn is None else {"event_fn": event_fn}
        return torchdiffeq_odeint(False, func, y0, t, dict(rtol=rtol, atol=atol, method=method, options=options,
                                                           **extra))
    problem = prepare(y0, t, options)
    settings = make_settings(method, rtol, atol, options, unflatten=problem.unflatten_state,
                             t_dtype=problem.t_dtype, grid_inputs=(func, y0, t), blocks=problem.block_sizes)
    attach_callbacks(func, settings, problem, t, method)
    events = None if event_fn is None else event_mode(event_fn, problem, t, options, settings)
    collectors = active_collectors()
    attach = backward_counter(collectors) if torch.is_grad_enabled() else None
    flat_func = problem.flat_func(func, on_output=attach)
    times = time_gradient(flat_func, t, problem.times, collectors)
    y_start = problem.y0 if times is None else times.start(problem.y0)
    counts = WorkCounts()
    try:
        if events is None:
            ys = integrate(flat_func, y_start, problem.s_times, problem.direction, settings, counts)
        else:
            s_event, y_event = solve_until_event(flat_func, y_start, problem.s_times[0], problem.direction,
                                                 events.settings, counts, events.value)
            ys = torch.stack([y_start, y_event])
    finally:
        record_work(collectors, counts)
    if times is not None and ys.requires_grad:  # (scipy_solver's solution has no graph: no gradients at all)
        ys = times.outputs(ys, rows=None if events is None else [0])
    if events is None:
        return problem.unflatten(ys)
    return events.time(s_event), problem.unflatten(ys)


def odeint_adjoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, event_fn=None,
                   adjoint_rtol=None, adjoint_atol=None, adjoint_method=None, adjoint_options=None,
                   adjoint_params=None, backend="neode"):
    """As :func:`odeint`, with gradients by the continuous adjoint (memory constant in the number of steps).

    ``adjoint_params``: the tensors to differentiate (default: ``func.parameters()`` for an ``nn.Module``,
    else none). ``adjoint_rtol/atol/method`` default to the forward ones; with the same method the backward
    solve inherits the forward options except ``norm`` (so a fixed grid keeps its ``step_size``), and
    ``adjoint_options`` override them key by key; the backward error norm is torchdiffeq's (the maximum of the
    forward norm of state and adjoint state and the RMS norm of each parameter's adjoint),
    ``adjoint_options=dict(norm="seminorm")`` leaves the parameter adjoints out, a callable norm receives
    ``(t_adj, y, a, *param_adjoints)`` with tuple states spread out, ``"block_rms"``/``"block_rms_seminorm"``
    are neode's earlier defaults (see :func:`.adjoint.adjoint_settings`). Gradients with respect to ``t`` as
    :func:`odeint` (``t_0``'s by the flow identity from the adjoint state at ``t_0``). ``event_fn`` as :func:`odeint`; the backward solve runs from the event back
    to ``t_0``, and ``event_t`` is in the graph with no gradient of its own (use :func:`odeint_event`).
    """
    _check_backend(backend)
    if adjoint_params is None:
        adjoint_params = tuple(func.parameters()) if isinstance(func, torch.nn.Module) else ()
    adjoint_params = tuple(adjoint_params)
    if backend == "torchdiffeq":
        extra = {} if event_fn is None else {"event_fn": event_fn}
        return torchdiffeq_odeint(True, func, y0, t, dict(
            rtol=rtol, atol=atol, method=method, options=options, adjoint_rtol=adjoint_rtol,
            adjoint_atol=adjoint_atol, adjoint_method=adjoint_method, adjoint_options=adjoint_options,
            adjoint_params=adjoint_params, **extra))

    problem = prepare(y0, t, options)
    settings = make_settings(method, rtol, atol, options, unflatten=problem.unflatten_state,
                             t_dtype=problem.t_dtype, grid_inputs=(func, y0, t), blocks=problem.block_sizes)
    attach_callbacks(func, settings, problem, t, method)
    events = None if event_fn is None else event_mode(event_fn, problem, t, options, settings)
    params = tuple(p for p in adjoint_params if isinstance(p, torch.Tensor) and p.requires_grad)
    if len(params) != len(adjoint_params) and callable((adjoint_options or {}).get("norm")):
        warnings.warn("An adjoint parameter was passed without requiring gradient: it is left out of the adjoint "
                      "pass and of the tuple the adjoint norm receives", stacklevel=2)
    backward = adjoint_settings(problem, params, method=method, rtol=rtol, atol=atol, options=options,
                                adjoint_method=adjoint_method, adjoint_rtol=adjoint_rtol,
                                adjoint_atol=adjoint_atol, adjoint_options=adjoint_options,
                                grid_inputs=(func, y0, t.flip(0)))
    collectors = active_collectors()
    flat_func = problem.flat_func(func)
    spec = AdjointSpec(func=flat_func, s_times=problem.s_times, direction=problem.direction,
                       settings=settings if events is None else events.settings, adjoint_settings=backward,
                       params=params, collectors=collectors, event=None if events is None else events.value,
                       event_t_like=t, backward_callbacks=lambda: adjoint_callbacks(
                           func, backward, problem, params, t, adjoint_method or method))
    times = time_gradient(flat_func, t, problem.times, collectors)
    out = adjoint_solve(spec, problem.y0 if times is None else times.start(problem.y0))
    ys, event_t = (out, None) if events is None else out
    if times is not None:
        ys = times.outputs(ys, rows=None if events is None else [0])
    if events is None:
        return problem.unflatten(ys)
    return event_t, problem.unflatten(ys)


def odeint_event(func, y0, t0, *, event_fn, reverse_time=False, odeint_interface=odeint, **kwargs):
    """Solve from ``(t0, y0)`` until ``event_fn(t, y)`` first crosses zero: ``(event_t, solution)``.

    ``solution`` is ``[y0, y(event_t)]`` (as :func:`odeint` with ``event_fn``); integrates forward in time, or
    backward with ``reverse_time=True``. ``odeint_interface`` is :func:`odeint` (backprop) or
    :func:`odeint_adjoint`, called with ``kwargs`` (``rtol``, ``method``, ``options``, ``adjoint_params``, ...).
    Unlike those, gradients flow through the event time: the implicit function theorem on
    ``event_fn(event_t, y(event_t)) = 0`` (see :func:`.events.through_event_time`), to ``y0``, the parameters,
    ``t0`` and ``event_fn``'s own parameters; ``y(event_t)`` moves with ``event_t`` along ``func``.
    """
    t0 = torch.as_tensor(t0)
    start = t0.reshape(-1)
    t = torch.cat([start, start.detach() + (-1.0 if reverse_time else 1.0)])
    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
    if isinstance(solution, tuple):
        state = tuple(part[-1] for part in solution)
        combined = combine_event_fn(event_fn, start[0].to(y0[0].dtype).detach(), y0)
    else:
        state = solution[-1]
        combined = combine_event_fn(event_fn, start[0].to(y0.dtype).detach(), y0)
    event_t, state = through_event_time(func, combined, event_t, state)
    if isinstance(solution, tuple):
        return event_t, tuple(torch.cat([part[:-1], s.unsqueeze(0)]) for part, s in zip(solution, state))
    return event_t, torch.cat([solution[:-1], state.unsqueeze(0)])
