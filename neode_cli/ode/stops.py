"""Times a solve must step to exactly, and the one-ulp nudge of ``t`` at discontinuities.

torchdiffeq 0.2.5's options (https://github.com/rtqichen/torchdiffeq, README "Solver options"):

- ``step_t`` (adaptive Runge-Kutta): times the steps must land on (a proposed step that would cross one is
  shortened to end on it); ``jump_t``: the same, for times where ``func`` jumps. The step that ends on a jump
  evaluates its stages at the step's end with ``t`` one ulp before the jump, and the step after it starts
  with a fresh evaluation one ulp after the jump (no first-same-as-last reuse across the discontinuity), so
  every step sees one smooth side of ``f`` only.
- ``grid_constructor`` (fixed grids): ``grid_constructor(func, y0, t) -> grid`` replaces ``step_size``; the
  grid must run from ``t[0]`` to ``t[-1]`` (those exact values) and the steps are its intervals.
- ``perturb`` (fixed grids): every step makes its first evaluation one ulp after its start and its
  evaluations at its end one ulp before that end, so a field with jumps on the grid points is only seen from
  inside each step.

One choice of neode's: with ``perturb`` the cubic Hermite output inside a step takes ``f`` at the step's end one
ulp before it too (torchdiffeq evaluates it at the end itself), so no evaluation of ``f`` sees the far side.

"One ulp" is :func:`math.nextafter` in the dtype of the time ``func`` receives, towards the inside of the step
(in the direction of integration after the start, against it before the end). The loop (:mod:`.integrate`)
merges these times into its list of stops; nothing here runs per step except :func:`make_nudge`'s function,
and only when one of these options is on.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Sequence

import torch

__all__ = ["make_nudge", "parse_times", "landing_times", "resolve_grid"]

#: ``nudge(t, sign)``: the neighbouring representable time of ``t`` towards ``sign * inf`` (user's time).
Nudge = Callable[[float, float], float]


def make_nudge(t_dtype: torch.dtype) -> Nudge:
    """The one-ulp nudge in ``t_dtype`` (the dtype ``func`` sees the time in), on host floats.

    The result is exactly representable in ``t_dtype``, so turning it into the time tensor does not round it.
    """
    if t_dtype == torch.float64:
        return lambda t, sign: math.nextafter(t, sign * math.inf)

    def nudge(t: float, sign: float) -> float:
        x = torch.tensor(t, dtype=t_dtype)  # (rounds to the nearest t_dtype value first, as the time tensor does)
        return float(torch.nextafter(x, torch.tensor(sign * math.inf, dtype=t_dtype)))

    return nudge


def parse_times(name: str, value) -> tuple[float, ...]:
    """``options[name]`` (``step_t``/``jump_t``: a tensor or sequence of finite times) as host floats."""
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 or value.is_complex():
            raise ValueError(f"options[{name!r}] must be a 1-D tensor of times; got shape {tuple(value.shape)}")
        values = [float(v) for v in value.detach().reshape(-1).cpu().tolist()]
    elif isinstance(value, Sequence) and not isinstance(value, str) and \
            all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
        values = [float(v) for v in value]
    else:
        raise ValueError(f"options[{name!r}] must be a 1-D tensor or a list of times; got {type(value).__name__}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"options[{name!r}] must hold finite times; got {values}")
    return tuple(values)


def landing_times(times: Sequence[float], direction: float, s0: float, s_end: float) -> list[float]:
    """User times -> the sorted solver times ``s = direction * t`` strictly after ``s0`` and up to ``s_end``."""
    return sorted({direction * v for v in times if s0 < direction * v <= s_end})


def resolve_grid(constructor, func, y0, t: torch.Tensor) -> tuple[float, ...]:
    """Call ``constructor(func, y0, t)`` and validate the grid: user times from ``t[0]`` to ``t[-1]``, strictly
    monotone in ``t``'s direction. ValueError (one line, what to return instead) otherwise."""
    times = [float(v) for v in t.detach().cpu().tolist()]
    if len(times) < 2:
        return tuple(times)
    grid = constructor(func, y0, t)
    if isinstance(grid, torch.Tensor) and grid.dim() == 1 and grid.numel() >= 2 and grid.dtype.is_floating_point:
        points = [float(v) for v in grid.detach().cpu().tolist()]
    else:
        raise ValueError("grid_constructor must return a 1-D floating tensor of at least two times; got "
                         f"{type(grid).__name__}{'' if not isinstance(grid, torch.Tensor) else tuple(grid.shape)}")
    direction = 1.0 if times[1] > times[0] else -1.0
    if points[0] != times[0] or points[-1] != times[-1]:
        raise ValueError(f"grid_constructor's grid must start at t[0]={times[0]:.17g} and end at "
                         f"t[-1]={times[-1]:.17g} exactly; got {points[0]:.17g} ... {points[-1]:.17g} (use t[0] "
                         "and t[-1] themselves as its ends)")
    if not all(math.isfinite(p) for p in points) or \
            any(direction * (b - a) <= 0 for a, b in zip(points[:-1], points[1:])):
        raise ValueError("grid_constructor's grid must be finite and strictly monotone in the direction of t")
    return tuple(points)
