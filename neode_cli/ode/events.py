"""Events: solve until an event function crosses zero, and the gradient through the event time.

Semantics of torchdiffeq 0.2.5's ``event_fn`` (https://github.com/rtqichen/torchdiffeq, ``odeint``,
``odeint_event``):

- ``event_fn(t, y)`` takes the user's time and state structure and returns a tensor of any shape. The signs of
  its components at ``(t_0, y_0)`` are recorded once; the *combined* event value is the minimum over components
  of value times initial sign, so the event is the first zero crossing of any component (combined value
  ``<= 0``). If it is 0 at the start, the event is the start.
- The solve takes its ordinary accepted steps (fixed grid: ``step_size`` steps) past any end time and checks the
  combined value at the end of each accepted step (one host read per step). In the step where it stops being
  positive, the event time is found by bisection on the step's own interpolant (the one the outputs use: the
  method's dense output; ``interp`` for fixed grids) until the bracket is below ``atol`` (at least 2**-50 of the
  time scale): ``ceil(log2(h / atol))`` halvings, event time = midpoint of the last bracket, event state = the
  interpolant there.
- Gradients: the bisection runs without a graph, so in ``odeint`` the event time carries no gradient and the
  event state is differentiated as the state at that (fixed) time, through the interpolant. ``odeint_event``
  adds the gradient through the event time by the implicit function theorem (:func:`through_event_time`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import torch

from .errors import NonFiniteStateError, SolverError, TooManyStepsError
from .integrate import SolveSettings, integrate
from .stats import WorkCounts

__all__ = ["EventMode", "event_mode", "combine_event_fn", "solve_until_event", "through_event_time",
           "FIXED_GRID_EVENT_STEPS"]

#: Step limit of an event solve when ``options['max_num_steps']`` is not given (torchdiffeq's fixed-grid
#: limit; it also stops an adaptive solve whose event never comes before the step size overflows).
FIXED_GRID_EVENT_STEPS = 20000

_MAX_HALVINGS = 200


@dataclasses.dataclass
class EventMode:
    """An event solve as the public API sets it up (:func:`event_mode`)."""

    value: Callable[[float, torch.Tensor], torch.Tensor]  # combined event value at (solver time, flat state)
    combined: Callable                                      # the same in the user's time and structure
    settings: SolveSettings                                 # the forward settings with the event step limit
    direction: float
    t_like: torch.Tensor                                    # the user's t: dtype and device of the event time

    def time(self, s_event: float) -> torch.Tensor:
        """The event time as torchdiffeq returns it: 0-dim, in the user's time, ``t``'s dtype and device."""
        return torch.tensor(self.direction * s_event, dtype=self.t_like.dtype, device=self.t_like.device)


def event_mode(event_fn: Callable, problem, t: torch.Tensor, options: dict | None,
               settings: SolveSettings) -> EventMode:
    """Validate an ``event_fn`` call (``len(t) == 2``: ``t[0]`` is the start and ``t[1]`` only sets the
    direction; fixed grids need ``step_size``; SciPy cannot) and build its :class:`EventMode`."""
    if not callable(event_fn):
        raise ValueError(f"event_fn must be callable (t, y) -> tensor; got {type(event_fn).__name__}")
    if len(problem.s_times) != 2:
        raise ValueError(f"event handling needs len(t) == 2 (t[0] is the start, t[1] only sets the direction); "
                         f"got len(t)={len(problem.s_times)}")
    controller = settings.controller
    if not controller.needs_error and controller.step is None:
        raise ValueError("event handling with a fixed-grid method needs options['step_size'] (the grid is "
                         "open-ended until the event)")
    if "max_num_steps" not in {k for k, v in (options or {}).items() if v is not None} and \
            not controller.needs_error:
        settings = dataclasses.replace(settings, max_num_steps=FIXED_GRID_EVENT_STEPS)
    if not controller.needs_error:  # torchdiffeq's fixed-grid event loop calls no step callbacks
        settings = dataclasses.replace(settings, callbacks=None)
    t_dtype, device, direction = problem.t_dtype, problem.device, problem.direction
    unflatten = problem.unflatten_state

    def time(s: float) -> torch.Tensor:
        return torch.full((), direction * s, dtype=t_dtype, device=device)

    combined = combine_event_fn(event_fn, time(problem.s_times[0]), unflatten(problem.y0))
    return EventMode(value=lambda s, y: combined(time(s), unflatten(y)), combined=combined, settings=settings,
                     direction=direction, t_like=t)


def combine_event_fn(event_fn: Callable, t0: torch.Tensor, y0) -> Callable:
    """``(t, y) -> 0-dim tensor``: the minimum over ``event_fn``'s components of value times its sign at
    ``(t0, y0)`` (positive until the first component crosses zero). ``y`` in the user's structure."""
    with torch.no_grad():
        signs = torch.sign(_as_tensor(event_fn(t0, y0)))

    def combined(t, y) -> torch.Tensor:
        return torch.min(_as_tensor(event_fn(t, y)) * signs)

    return combined


def _as_tensor(value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"event_fn must return a tensor; got {type(value).__name__}")
    return value.real if value.is_complex() else value


def solve_until_event(func: Callable, y0: torch.Tensor, s0: float, direction: float, settings: SolveSettings,
                      counts: WorkCounts, event_value: Callable[[float, torch.Tensor], torch.Tensor]
                      ) -> tuple[float, torch.Tensor]:
    """Integrate from solver time ``s0`` until the event (module docstring): ``(event solver time, state (N,))``.

    ``func(t: float, y: (N,))`` as for :func:`.integrate`; ``event_value(s, y)`` is the combined event value at
    solver time ``s`` for a flat state. The state keeps the graph of the solve in the caller's grad mode.
    """
    with torch.no_grad():
        c0 = float(event_value(s0, y0))
    if c0 == 0.0:
        return s0, y0
    if not math.isfinite(c0):
        raise ValueError(f"event_fn is not finite at the initial state (t={direction * s0:.6g}): {c0}")
    found: dict = {}

    def check(s, h, s1, y, y1, interpolate) -> bool:
        with torch.no_grad():
            c1 = float(event_value(s1, y1))  # the one host read of the event check
        if math.isnan(c1):
            raise NonFiniteStateError(
                f"the event function became NaN at t={direction * s1:.6g} after {counts.nfe} function evaluations "
                "(the state blew up?); use a smaller step_size or tighter tolerances, or regularise the dynamics")
        if c1 > 0.0:
            if not math.isfinite(s1 + (s1 - s)):
                raise SolverError(f"no event: event_fn stayed positive up to t={direction * s1:.3g}, where the "
                                  "step size overflows; check the event function's sign change")
            return False
        found.update(s=s, s1=s1, interpolate=interpolate)
        return True

    try:
        integrate(func, y0, [s0, math.inf], direction, settings, counts, on_accept=check)
    except TooManyStepsError as exc:
        raise TooManyStepsError(f"no event found: {exc}") from None
    if not found:  # (integrate only returns early through check)
        raise SolverError("the event solve ended without an event")
    s, s1, interpolate = found["s"], found["s1"], found["interpolate"]
    h = s1 - s
    interpolate([1.0])  # makes f(t1, y1) (if the interpolant needs it) in the caller's grad mode
    tol = max(settings.atol, 2.0 ** -50 * max(1.0, abs(s1)))
    halvings = min(_MAX_HALVINGS, max(0, math.ceil(math.log2(h / tol))))
    lo, hi = s, s1
    with torch.no_grad():
        for _ in range(halvings):
            mid = 0.5 * (lo + hi)
            if float(event_value(mid, interpolate([(mid - s) / h])[0])) > 0.0:
                lo = mid
            else:
                hi = mid
    s_event = 0.5 * (lo + hi)
    return s_event, interpolate([(s_event - s) / h])[0]


def through_event_time(func: Callable, combined: Callable, event_t: torch.Tensor, state):
    """``(event_t, state)`` with the gradient through the event time added (implicit function theorem).

    The event time ``tau`` solves ``c(tau, y(tau; theta)) = 0`` (``c`` = ``combined``, ``y`` the flow, ``theta``
    everything upstream: ``y0``, parameters, ``t0``, ``c``'s own parameters), so
    ``dtau = -dc / (dc/dt)`` with ``dc = dc/dy . dy + dc/dtheta`` at fixed ``tau`` and the total rate
    ``dc/dt = partial_t c + dc/dy . f(tau, y)``; the state at the event moves by ``dy + f dtau``. ``state`` (the
    solution at ``tau`` as a function of ``theta`` at fixed ``tau``, tensor or tuple) must carry that graph. The
    returned values equal the inputs; only their gradients change. ``func`` and ``combined`` take the user's
    time and structure.
    """
    if not torch.is_grad_enabled():
        return event_t, state
    parts = state if isinstance(state, tuple) else (state,)
    tau = event_t.detach()
    tau_f = tau.to(parts[0].dtype)
    with torch.no_grad():
        f = func(tau_f, _restore(tuple(p.detach() for p in parts), state))
        f_parts = f if isinstance(f, (tuple, list)) else (f,)
    with torch.enable_grad():
        t_probe = tau_f.clone().requires_grad_(True)
        y_probe = tuple(p.detach().requires_grad_(True) for p in parts)
        c = combined(t_probe, _restore(y_probe, state))
        dc = torch.autograd.grad(c, (t_probe, *y_probe), allow_unused=True)
    rate = dc[0] if dc[0] is not None else torch.zeros_like(t_probe)
    for g, fp in zip(dc[1:], f_parts):
        if g is not None:
            rate = rate + torch.sum(g * fp)
    rate = float(rate)
    if rate == 0.0:  # grazing the zero level: the event time is not differentiable there (as torchdiffeq: 1e-12)
        rate = 1e-12
    c_graph = combined(tau_f, state)
    tau_out = tau - ((c_graph - c_graph.detach()) / rate).to(tau.dtype)
    shift = (tau_out - tau).to(parts[0].dtype)
    new_parts = tuple(p + fp.detach() * shift for p, fp in zip(parts, f_parts))
    return tau_out, _restore(new_parts, state)


def _restore(parts: tuple, like):
    return parts if isinstance(like, tuple) else parts[0]
