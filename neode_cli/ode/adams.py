"""Adams methods: fixed-grid Adams-Bashforth(-Moulton) and an adaptive variable-step, variable-order Adams.

Fixed grid (``explicit_adams``, ``implicit_adams`` = ``fixed_adams``), torchdiffeq 0.2.5's semantics:

- A history of the derivatives at the step starts (newest first), at most ``max_order - 1`` long
  (``max_order`` default 12, at most 12). While it holds fewer than 3 values (the first two steps) a step is
  one Runge-Kutta step of Kutta's 3/8 rule; then the order is ``min(len(history), max_order - 1)`` and the
  step is Adams-Bashforth of that order.
- ``implicit_adams`` corrects the Adams-Bashforth prediction with the Adams-Moulton formula of one order
  higher by functional iteration: at most ``max_iters`` (default 4) evaluations at the step end, stopping when
  the max-norm of the change of the increment, scaled by ``atol + rtol * max(|old|, |new|)``, is below 1. If
  it does not converge it warns and drops the oldest history value (the next step is one order lower). The
  corrector's evaluations never enter the history.
- Each step evaluates ``f`` at its start (one evaluation per step for ``explicit_adams``, plus 3 for each
  bootstrap step, plus the corrector iterations for ``implicit_adams``). Outputs strictly inside a step use
  the cubic Hermite interpolant through both ends (its ``f(t1, y1)`` is the next step's first evaluation),
  or with ``interp="linear"`` the straight line through them; in jump mode (the adjoint's backward solve) the history restarts after each jump of the state.

The coefficients are computed exactly (``fractions``) from their definition as integrals of the Newton
backward-difference interpolant (Hairer, Norsett & Wanner, Solving ODEs I, III.1).

The adaptive ``adams`` is :func:`adaptive_adams_loop`; see its docstring.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import deque
from fractions import Fraction
from typing import Sequence

import torch

from .errors import NonFiniteStateError, TooManyStepsError
from .integrate import SolveSettings, WorkCounts, _outputs_reached, _where, grid_points
from .stepping import StepPlan, check_interp, rk_stages
from .stops import landing_times
from .tableaux import _make

__all__ = ["adams_bashforth", "adams_moulton", "fixed_adams_loop", "MAX_ORDER"]

MAX_ORDER = 12          # the fixed-grid methods' largest max_order (as torchdiffeq)
_MIN_ADAMS_HISTORY = 3  # fewer derivatives in the history: bootstrap with the 3/8 rule
DEFAULT_MAX_ITERS = 4

# Kutta's 3/8 rule (Hairer, Norsett & Wanner I, II.1, Table 1.2): the bootstrap step, as torchdiffeq's rk4.
_RK38 = StepPlan(_make("rk38", [0, Fraction(1, 3), Fraction(2, 3), 1],
                       [[], [Fraction(1, 3)], [Fraction(-1, 3), 1], [1, -1, 1]],
                       [Fraction(1, 8), Fraction(3, 8), Fraction(3, 8), Fraction(1, 8)], 4))


# --- coefficients ---------------------------------------------------------------------------------------
def _rising_poly(j: int, shift: int = 0) -> list[Fraction]:
    """Ascending coefficients of ``(s+shift)(s+shift+1)...(s+shift+j-1) / j!`` in ``s``."""
    poly = [Fraction(1)]
    for m in range(j):
        c = shift + m
        poly = [(poly[i - 1] if i > 0 else 0) + (c * poly[i] if i < len(poly) else 0) for i in range(len(poly) + 1)]
    return [v / math.factorial(j) for v in poly]


def _integral(poly: Sequence[Fraction], a: int, b: int) -> Fraction:
    return sum(c * (Fraction(b) ** (i + 1) - Fraction(a) ** (i + 1)) / (i + 1) for i, c in enumerate(poly))


def _from_differences(gammas: Sequence[Fraction]) -> tuple[Fraction, ...]:
    """Weights of f_n, f_{n-1}, ... of ``sum_j gammas[j] * nabla^j f_n`` (backward differences)."""
    k = len(gammas)
    return tuple((-1) ** i * sum(gammas[j] * math.comb(j, i) for j in range(i, k)) for i in range(k))


@functools.lru_cache(maxsize=None)
def adams_bashforth(k: int) -> tuple[Fraction, ...]:
    """Adams-Bashforth weights of ``f_n, f_{n-1}, ..., f_{n-k+1}`` (k steps, order k):
    ``y_{n+1} = y_n + h * sum_i w_i f_{n-i}``, with ``gamma_j = int_0^1 s(s+1)...(s+j-1)/j! ds``."""
    return _from_differences([_integral(_rising_poly(j), 0, 1) for j in range(k)])


@functools.lru_cache(maxsize=None)
def adams_moulton(k: int) -> tuple[Fraction, ...]:
    """Adams-Moulton weights of ``f_{n+1}, f_n, ..., f_{n-k+2}`` (k values, order k):
    ``gamma*_j = int_{-1}^0 s(s+1)...(s+j-1)/j! ds`` on the backward differences at ``x_{n+1}``."""
    return _from_differences([_integral(_rising_poly(j), -1, 0) for j in range(k)])


def _weighted_sum(base: torch.Tensor | None, values: Sequence[torch.Tensor], weights: Sequence[float],
                  scale: float) -> torch.Tensor:
    """``base + scale * sum_i weights[i] values[i]`` as a chain of fused adds."""
    out = base
    for w, v in zip(weights, values):
        out = torch.mul(v, w * scale) if out is None else out.add(v, alpha=w * scale)
    return out


def _hermite(y0, f0, y1, f1, dt: float, thetas: Sequence[float]) -> torch.Tensor:
    """Cubic Hermite interpolant through ``(y0, f0)`` and ``(y1, f1)`` at step fractions: ``(m, N)``."""
    rows = []
    for th in thetas:
        h00 = (1 + 2 * th) * (1 - th) ** 2
        h10 = th * (1 - th) ** 2
        h01 = th * th * (3 - 2 * th)
        h11 = th * th * (th - 1)
        rows.append((y0 * h00).add_(f0, alpha=h10 * dt).add_(y1, alpha=h01).add_(f1, alpha=h11 * dt))
    return torch.stack(rows)


def _linear(y0, y1, thetas: Sequence[float]) -> torch.Tensor:
    """The straight line through ``y0`` and ``y1`` at step fractions (``interp="linear"``): ``(m, N)``."""
    return torch.stack([torch.lerp(y0, y1, th) for th in thetas])


def _fixed_interpolant(func, direction: float, st: SolveSettings, counts: WorkCounts, s: float, s1: float,
                      y: torch.Tensor, f0: torch.Tensor, y1: torch.Tensor, t_end: float):
    """One step's interpolant (as the outputs use it) as a function of step fractions, for the step hook
    (``f(t1, y1)`` evaluated at ``t_end``, the step's end time as the step's own stages see it)."""
    end: list = []

    def interpolate(thetas: Sequence[float]) -> torch.Tensor:
        if st.extra["interp"] == "linear":
            return _linear(y, y1, thetas)
        if not end:
            counts.nfe += 1
            end.append(func(t_end, y1))
        return _hermite(y, f0, y1, end[0], direction * (s1 - s), thetas)

    return interpolate


# --- fixed grid -----------------------------------------------------------------------------------------
def fixed_adams_options(opts: dict, implicit: bool) -> dict:
    """Validate ``max_order`` / ``max_iters``; returns the loop's ``extra`` settings."""
    max_order = opts.get("max_order", MAX_ORDER)
    if not isinstance(max_order, int) or isinstance(max_order, bool) or not 1 <= max_order <= MAX_ORDER:
        raise ValueError(f"options['max_order'] must be an integer in [1, {MAX_ORDER}]; got {max_order!r}")
    if max_order < _MIN_ADAMS_HISTORY + 1:
        warnings.warn(f"max_order={max_order} is below {_MIN_ADAMS_HISTORY + 1}: every step is a 3/8-rule "
                      "Runge-Kutta step (as rk4)", stacklevel=4)
    max_iters = opts.get("max_iters", DEFAULT_MAX_ITERS)
    if not isinstance(max_iters, int) or isinstance(max_iters, bool) or max_iters < 1:
        raise ValueError(f"options['max_iters'] must be a positive integer; got {max_iters!r}")
    return {"implicit": implicit, "max_order": max_order, "max_iters": max_iters,
            "interp": check_interp(opts.get("interp"))}


def _corrector_converged(dy_old: torch.Tensor, dy: torch.Tensor, rtol: float, atol: float) -> bool:
    tol = torch.maximum(dy_old.abs(), dy.abs()).mul_(rtol).add_(atol)
    return bool(((dy_old - dy).abs_() / tol).max() < 1)


def _endless_grid(s0: float, step: float):
    """Grid points ``s0 + n * step``, n = 0, 1, ... (event mode: the solve ends when the hook says so)."""
    n = 0
    while True:
        yield s0 + n * step
        n += 1


def fixed_adams_loop(func, y0: torch.Tensor, s_times: list[float], direction: float, st: SolveSettings,
                     counts: WorkCounts, on_output=None, on_accept=None) -> torch.Tensor:
    """The fixed-grid Adams loop (module docstring); signature and return value as :func:`.integrate`."""
    implicit, max_order, max_iters = st.extra["implicit"], st.extra["max_order"], st.extra["max_iters"]
    n_times = len(s_times)
    jump_mode = on_output is not None
    if n_times == 1:
        return y0 if jump_mode else y0.unsqueeze(0)
    step = st.controller.step
    endless = math.isinf(s_times[-1])
    if endless:  # event mode: on_accept ends the solve
        if step is None:
            raise ValueError("a fixed-grid solve without an end needs options['step_size']")
        grid = _endless_grid(s_times[0], step)
    elif st.stops_t:  # options['grid_constructor'] (in jump mode the output times join the grid)
        inner = landing_times(st.stops_t, direction, s_times[0], s_times[-1])
        grid = [s_times[0]] + sorted(set(inner).union(s_times[1:] if jump_mode else ()))
    elif step is None:
        grid = list(s_times)
    elif jump_mode:
        grid = [s_times[0]]
        for a, b in zip(s_times[:-1], s_times[1:]):
            grid += grid_points(a, b, step)[1:]
    else:
        grid = grid_points(s_times[0], s_times[-1], step)
    if not endless and len(grid) - 1 > st.max_num_steps:
        raise TooManyStepsError(
            f"the fixed grid needs {len(grid) - 1} steps > max_num_steps={st.max_num_steps} "
            f"{_where(direction * s_times[0], step or 0.0, counts.nfe)}; raise step_size or max_num_steps")

    perturb, nudge = st.perturb, st.nudge
    history: deque[torch.Tensor] = deque(maxlen=max(max_order - 1, 1))  # f at step starts, newest first
    outputs = [y0.unsqueeze(0)]
    y, f0, i = y0, None, 1
    points = iter(grid)
    s1 = next(points)
    for s1_next in points:
        s, s1 = s1, s1_next
        if endless and counts.accepted >= st.max_num_steps:
            raise TooManyStepsError(
                f"reached max_num_steps={st.max_num_steps} {_where(direction * s, step, counts.nfe)}; raise "
                "options['max_num_steps'] or step_size")
        h = s1 - s
        dt = direction * h
        if st.callbacks is not None:
            st.callbacks.step(s, y, h)
        # perturb: f is evaluated one ulp inside the step at its start and its end (see .stops)
        t_end = nudge(direction * s1, -direction) if perturb else direction * s1
        if f0 is None:
            f0 = func(nudge(direction * s, direction) if perturb else direction * s, y)
            counts.nfe += 1
        history.appendleft(f0)
        order = min(len(history), max_order - 1)
        if order < _MIN_ADAMS_HISTORY:
            y1, ks = rk_stages(func, direction * s, dt, y, f0, _RK38, t_end if perturb else None)
            counts.nfe += len(ks) - 1
        else:
            dy = _weighted_sum(None, history, [float(w) for w in adams_bashforth(order)], dt)
            if implicit:
                moulton = [float(w) for w in adams_moulton(order + 1)]
                delta = _weighted_sum(None, list(history)[:order], moulton[1:], dt)
                converged = False
                for _ in range(max_iters):
                    f_end = func(t_end, y + dy)
                    counts.nfe += 1
                    dy_old, dy = dy, delta.add(f_end, alpha=moulton[0] * dt)
                    converged = _corrector_converged(dy_old, dy, st.rtol, st.atol)
                    if converged:
                        break
                if not converged:
                    warnings.warn(f"implicit_adams: the corrector did not converge in {max_iters} iterations at "
                                  f"t={direction * s1:.6g}; lowering the order (a smaller step_size or more "
                                  "max_iters help)", RuntimeWarning, stacklevel=3)
                    history.pop()
            y1 = y + dy
        counts.accepted += 1
        if on_accept is not None and on_accept(s, h, s1, y, y1, _fixed_interpolant(func, direction, st, counts, s, s1,
                                                                                    y, f0, y1, t_end)):
            break
        f1 = None
        j, n_inside = _outputs_reached(s_times, i, s1)
        if j > i:
            if n_inside:
                thetas = [(s_times[m] - s) / h for m in range(i, i + n_inside)]
                if st.extra["interp"] == "linear":
                    outputs.append(_linear(y, y1, thetas))
                else:
                    f1 = func(t_end, y1)
                    counts.nfe += 1
                    outputs.append(_hermite(y, f0, y1, f1, dt, thetas))
                    if perturb:  # f just before the step's end is not f at the next step's start
                        f1 = None
            for m in range(i + n_inside, j):
                if jump_mode:
                    y1 = on_output(m, y1)
                    f1 = None
                    history.clear()  # the state jumped: past derivatives belong to another trajectory
                else:
                    outputs.append(y1.unsqueeze(0))
            i = j
        y, f0 = y1, f1
    result = y if jump_mode else torch.cat(outputs, dim=0)
    with torch.no_grad():
        finite = bool(torch.isfinite(result).all())
    if not finite:
        raise NonFiniteStateError(
            f"the state became non-finite by {_where(direction * s_times[-1], step or 0.0, counts.nfe)} "
            "(fixed-grid Adams); use a smaller step_size or an adaptive method, or regularise the dynamics")
    return result
