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
- ``backend="torchdiffeq"`` runs the same call through torchdiffeq, still counting NFE.
"""

from __future__ import annotations

from typing import Any

import torch

from . import control
from .adjoint import AdjointSpec, adjoint_block_sizes, adjoint_solve
from .checkpoint import odeint_checkpoint
from .errors import NonFiniteStateError, SolverError, StepSizeUnderflowError, TooManyStepsError
from .integrate import WorkCounts, integrate
from .problem import make_settings, prepare
from .stats import SolveStats, active_collectors, collect_stats
from .loops import LOOP_METHODS
from .tableaux import ADAPTIVE_METHODS as _RK_ADAPTIVE
from .tableaux import FIXED_METHODS as _RK_FIXED
from .tableaux import TABLEAUX

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


def _backward_counter(collectors):
    """Hook counting one backward evaluation per differentiated ``func`` output (backprop's nfe_backward)."""
    if not collectors:
        return None

    def hook(grad):
        for c in collectors:
            c.nfe_backward += 1
        return None

    def attach(out: torch.Tensor) -> None:
        if out.requires_grad:
            out.register_hook(hook)

    return attach


def odeint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, backend="neode"):
    """Solve ``dy/dt = func(t, y)`` from ``y0`` at the times ``t``.

    ``y0``: a tensor or a tuple of tensors (then ``func`` takes and returns tuples); ``t``: 1-D, strictly
    increasing or decreasing, ``t[0]`` is the initial time. Returns ``(len(t), *y0.shape)`` (a tuple of such
    for tuple states). Gradients flow by backpropagation through the solver's operations (step sizes are
    treated as constants). ``method=None`` means dopri5. Options: fixed-grid methods ``step_size`` (without
    it, one step between consecutive output times), ``max_num_steps``, ``dtype``; adaptive methods
    ``first_step``, ``max_num_steps``, ``safety``, ``ifactor``, ``dfactor``, ``norm`` ("rms", "max" or a
    callable on the scaled error in the state's structure), ``dtype`` (dtype of the time passed to func).
    Raises ValueError for invalid arguments and :class:`SolverError` subclasses when the solve fails.
    """
    _check_backend(backend)
    if backend == "torchdiffeq":
        return _torchdiffeq_call(False, func, y0, t, dict(rtol=rtol, atol=atol, method=method,
                                                          options=_td_options(options)))
    problem = prepare(y0, t, options)
    settings = make_settings(method, rtol, atol, options, unflatten=problem.unflatten_state)
    collectors = active_collectors()
    attach = _backward_counter(collectors) if torch.is_grad_enabled() else None
    flat_func = problem.flat_func(func, on_output=attach)
    counts = WorkCounts()
    try:
        ys = integrate(flat_func, problem.y0, problem.s_times, problem.direction, settings, counts)
    finally:
        for c in collectors:
            c.add(nfe_forward=counts.nfe, steps_accepted=counts.accepted, steps_rejected=counts.rejected, solves=1)
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
        return _torchdiffeq_call(True, func, y0, t, dict(
            rtol=rtol, atol=atol, method=method, options=_td_options(options), adjoint_rtol=adjoint_rtol,
            adjoint_atol=adjoint_atol, adjoint_method=adjoint_method,
            adjoint_options=_td_options(adjoint_options), adjoint_params=adjoint_params))

    problem = prepare(y0, t, options)
    settings = make_settings(method, rtol, atol, options, unflatten=problem.unflatten_state)
    params = tuple(p for p in adjoint_params if isinstance(p, torch.Tensor) and p.requires_grad)
    # The backward solve inherits the forward options (minus the norm, which is about the forward state)
    # when it uses the same method; adjoint_options override them key by key.
    same_method = adjoint_method is None or adjoint_method == (method or "dopri5")
    inherited = {k: v for k, v in (options or {}).items() if k != "norm"} if same_method else {}
    adjoint_options = {**inherited, **(adjoint_options or {})}
    sizes = adjoint_block_sizes(problem.numel, params)
    norm = adjoint_options.pop("norm", None)
    if norm == "seminorm":
        default_norm = control.block_rms_norm(sizes, keep=2)
    elif norm is None:
        default_norm = control.block_rms_norm(sizes)
    else:
        default_norm = None
        adjoint_options["norm"] = norm

    def unflatten_augmented(z: torch.Tensor):
        return (problem.unflatten_state(z[:sizes[0]]), problem.unflatten_state(z[sizes[0]:2 * sizes[0]]),
                z[2 * sizes[0]:])

    adjoint_settings = make_settings(
        adjoint_method if adjoint_method is not None else method,
        rtol if adjoint_rtol is None else adjoint_rtol, atol if adjoint_atol is None else adjoint_atol,
        adjoint_options, default_norm=default_norm, unflatten=unflatten_augmented)
    spec = AdjointSpec(func=problem.flat_func(func), s_times=problem.s_times, direction=problem.direction,
                       settings=settings, adjoint_settings=adjoint_settings, params=params,
                       collectors=active_collectors())
    ys = adjoint_solve(spec, problem.y0)
    return problem.unflatten(ys)


# --- the reference backend ------------------------------------------------------------------------------
def _td_options(options: dict | None) -> dict | None:
    """Translate neode's norm names for torchdiffeq (which takes callables, or "seminorm" for the adjoint)."""
    if not options:
        return options
    options = dict(options)
    norm = options.get("norm")
    if norm == "rms":
        options.pop("norm")
    elif norm == "max":
        options["norm"] = lambda x: x.abs().max() if isinstance(x, torch.Tensor) else max(v.abs().max() for v in x)
    return options


class _CountedFunc(torch.nn.Module):
    """Wraps the user's func for torchdiffeq: counts forward calls, then backward ones (see stats.py)."""

    def __init__(self, func, collectors):
        super().__init__()
        self.func = func
        self.collectors = collectors
        self.phase = "forward"
        self.forward_calls = 0
        self.count_vjps = False

    def forward(self, t, y):
        out = self.func(t, y)
        if self.phase == "forward":
            self.forward_calls += 1
            if self.count_vjps and self.collectors:
                attach = _backward_counter(self.collectors)
                for o in (out if isinstance(out, (tuple, list)) else (out,)):
                    attach(o)
                    break  # one count per evaluation
        else:
            for c in self.collectors:
                c.nfe_backward += 1
        return out


def _torchdiffeq_call(adjoint: bool, func, y0, t, kwargs: dict[str, Any]):
    import torchdiffeq

    collectors = active_collectors()
    counted = _CountedFunc(func, collectors)
    try:
        if adjoint:
            out = torchdiffeq.odeint_adjoint(counted, y0, t, **kwargs)
        else:
            counted.count_vjps = torch.is_grad_enabled()
            out = torchdiffeq.odeint(counted, y0, t, **kwargs)
    finally:
        for c in collectors:
            c.add(nfe_forward=counted.forward_calls, solves=1)
        counted.phase = "backward"
    return out
