"""The integration loop: fixed grid or adaptive, output at the requested times, work accounting.

Inputs are already normalised by the public API: a flat state ``y0`` of shape ``(N,)``, output times as an
increasing list of Python floats in *solver time* ``s = direction * t`` (so decreasing ``t`` needs no
wrapper around ``func``: the loop steps forward in ``s`` and uses ``dt = direction * h`` in the arithmetic),
and ``func(t, y)`` taking the real time as a Python float and returning a flat tensor.

Host synchronisation: one read of the error ratio per adaptive attempt (the accept/reject decision); the
fixed-grid loop reads nothing until a single finiteness check at the end.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import torch

from . import control
from .errors import NonFiniteStateError, StepSizeUnderflowError, TooManyStepsError
from .stepping import StepPlan, dense_output, rk_stages

__all__ = ["SolveSettings", "WorkCounts", "integrate"]

FlatFunc = Callable[[float, torch.Tensor], torch.Tensor]
#: Called when the solve reaches output time index ``i`` (jump mode); returns the state to continue from.
OutputJump = Callable[[int, torch.Tensor], torch.Tensor]
#: Called once per accepted step with ``(s, h, s1, y)``: the step starts at solver time ``s`` from state ``y``,
#: its stages use step ``h`` (``dt = direction * h``) and it ends at ``s1`` (used by the checkpoint adjoint).
StepHook = Callable[[float, float, float, torch.Tensor], None]

# Consecutive non-finite error estimates tolerated (each shrinks the step by dfactor) before giving up.
_MAX_NONFINITE_REJECTS = 30


@dataclasses.dataclass
class SolveSettings:
    """Everything the loop needs besides the problem; built and validated by the public API."""

    plan: StepPlan
    rtol: float
    atol: float
    norm: control.Norm
    step_size: Optional[float] = None
    first_step: Optional[float] = None
    max_num_steps: int = 2**31 - 1
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    time_eps: float = 2.0**-52
    # Methods that are not Runge-Kutta tableaux (Adams, SciPy) bring their own loop with the signature of
    # :func:`integrate`; ``plan`` is then unused and ``extra`` holds their validated method options.
    loop: Optional[Callable] = None
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class WorkCounts:
    """Work of one solve: evaluations of ``func`` and step attempts."""

    nfe: int = 0
    accepted: int = 0
    rejected: int = 0


def _outputs_reached(s_times: Sequence[float], i: int, s1: float) -> tuple[int, int]:
    """Output times a step ending at ``s1`` reaches, from index ``i`` on: ``(j, n_inside)``.

    ``s_times[i:j]`` are <= s1; the first ``n_inside`` of them lie strictly inside the step (dense output),
    the rest equal ``s1`` (the step's end state). ``s_times`` is increasing.
    """
    j = i
    while j < len(s_times) and s_times[j] <= s1:
        j += 1
    n_inside = 0
    while i + n_inside < j and s_times[i + n_inside] < s1:
        n_inside += 1
    return j, n_inside


def integrate(func: FlatFunc, y0: torch.Tensor, s_times: list[float], direction: float,
              settings: SolveSettings, counts: WorkCounts, on_output: OutputJump | None = None,
              on_accept: StepHook | None = None) -> torch.Tensor:
    """Solve from ``s_times[0]`` through all output times.

    Returns the states at ``s_times`` stacked as ``(len(s_times), N)``. In jump mode (``on_output`` given,
    used by the adjoint) every step ends exactly on the output times, ``on_output(i, y)`` may replace the
    state there, and the return value is the final state after the last jump.
    ``counts`` is updated as the solve goes, so it is right even when the solve raises. ``on_accept`` (see
    :data:`StepHook`) sees every accepted step.
    """
    if settings.loop is not None:
        return settings.loop(func, y0, s_times, direction, settings, counts, on_output)
    if settings.plan.tab.adaptive:
        return _adaptive(func, y0, s_times, direction, settings, counts, on_output, on_accept)
    return _fixed_grid(func, y0, s_times, direction, settings, counts, on_output, on_accept)


def _remedy_line(t: float, h: float, nfe: int) -> str:
    return f"at t={t:.6g} with step size {h:.3g} after {nfe} function evaluations"


def _adaptive(func, y0, s_times, direction, st: SolveSettings, counts: WorkCounts, on_output, on_accept=None):
    plan = st.plan
    n_times = len(s_times)
    outputs = [y0.unsqueeze(0)]
    s, y = s_times[0], y0
    k1 = func(direction * s, y)
    counts.nfe += 1
    if n_times == 1:
        return y0 if on_output is not None else y0.unsqueeze(0)

    if st.first_step is not None:
        h = abs(st.first_step)
    else:
        def probe(h0: float) -> torch.Tensor:
            counts.nfe += 1
            return func(direction * (s + h0), y + (direction * h0) * k1)

        h, d0, d1 = control.initial_step(k1, y, probe, st.rtol, st.atol, st.norm, plan.tab.error_order)
        if not (math.isfinite(d0) and math.isfinite(d1)):
            raise NonFiniteStateError(
                f"non-finite initial state or vector field {_remedy_line(direction * s, 0.0, counts.nfe)}; "
                "check y0 and the vector field (inputs, parameters) for NaN/inf")

    jump_mode = on_output is not None
    s_end = s_times[-1]
    with torch.no_grad():
        abs_y = y.abs()
    fsal = plan.tab.fsal
    i = 1
    nonfinite_streak = 0
    while i < n_times:
        s_stop = s_times[i] if jump_mode else s_end
        remaining = s_stop - s
        # Land on s_stop when the step would leave a sliver (< 1e-10 h) for a separate, useless step.
        clipped = h * (1.0 + 1e-10) >= remaining
        h_try = remaining if clipped else h
        if h_try <= 4.0 * st.time_eps * max(1.0, abs(s)):
            if nonfinite_streak:
                raise NonFiniteStateError(
                    f"the state became non-finite {_remedy_line(direction * s, h_try, counts.nfe)}; "
                    "the dynamics blow up: lower the learning rate, normalise inputs or regularise the dynamics")
            raise StepSizeUnderflowError(
                f"step size underflow {_remedy_line(direction * s, h_try, counts.nfe)}; the problem is stiff or "
                "singular here: loosen rtol/atol, use a fixed-step method, or regularise the dynamics")
        if counts.accepted + counts.rejected >= st.max_num_steps:
            raise TooManyStepsError(
                f"reached max_num_steps={st.max_num_steps} {_remedy_line(direction * s, h_try, counts.nfe)}; "
                "raise options['max_num_steps'], loosen rtol/atol, or regularise the dynamics")
        dt = direction * h_try
        y1, ks = rk_stages(func, direction * s, dt, y, k1, plan)
        counts.nfe += len(ks) - 1
        with torch.no_grad():
            err = _error_estimate(ks, plan.err, dt)
            abs_y1 = y1.abs()
            scale = torch.maximum(abs_y, abs_y1).mul_(st.rtol).add_(st.atol)
            ratio = st.norm(err.div_(scale))  # the one host sync of the attempt

        if ratio <= 1.0:  # NaN compares False: a non-finite attempt is rejected
            counts.accepted += 1
            nonfinite_streak = 0
            s1 = s_stop if clipped else s + h_try
            if on_accept is not None:
                on_accept(s, h_try, s1, y)
            f1 = ks[-1] if fsal else None  # FSAL: the last stage is f(t1, y1)
            j, n_inside = _outputs_reached(s_times, i, s1)
            if j > i:
                if n_inside:
                    if f1 is None:
                        f1 = func(direction * s1, y1)
                        counts.nfe += 1
                    thetas = [(s_times[m] - s) / h_try for m in range(i, i + n_inside)]
                    ks_ext = ks if fsal else ks + [f1]
                    outputs.append(dense_output(y, ks_ext, dt, plan, thetas))
                for m in range(i + n_inside, j):
                    if jump_mode:
                        y1 = on_output(m, y1)
                        f1 = None  # the state jumped: the carried derivative is stale
                        with torch.no_grad():
                            abs_y1 = y1.abs()
                    else:
                        outputs.append(y1.unsqueeze(0))
                i = j
            s, y, abs_y = s1, y1, abs_y1
            if i < n_times:
                if f1 is None:
                    f1 = func(direction * s, y)
                    counts.nfe += 1
                k1 = f1
            h_next = h_try * control.next_step_factor(ratio, plan.exponent, st.safety, st.ifactor, 1.0)
            # A step shortened to land on an output time says nothing against the longer proposal.
            h = max(h_next, h) if clipped else h_next
        else:
            counts.rejected += 1
            if math.isfinite(ratio):
                nonfinite_streak = 0
                h = h_try * control.next_step_factor(ratio, plan.exponent, st.safety, st.ifactor, st.dfactor)
            else:
                nonfinite_streak += 1
                if nonfinite_streak > _MAX_NONFINITE_REJECTS:
                    raise NonFiniteStateError(
                        f"the state became non-finite {_remedy_line(direction * s, h_try, counts.nfe)}; "
                        "the dynamics blow up: lower the learning rate, normalise inputs or regularise the dynamics")
                h = h_try * st.dfactor
    if jump_mode:
        return y
    return torch.cat(outputs, dim=0)


def _error_estimate(ks, err_coeffs, dt: float) -> torch.Tensor:
    out = None
    for j, value in err_coeffs:
        if out is None:
            out = torch.mul(ks[j], value * dt)
        else:
            out.add_(ks[j], alpha=value * dt)
    return out


def _grid(s0: float, s1: float, step: float) -> list[float]:
    """Uniform grid from s0 with spacing ``step``; the last interval is shortened to end exactly at s1."""
    n = max(1, math.ceil((s1 - s0) / step - 1e-9))
    return [s0 + k * step for k in range(n)] + [s1]


def _fixed_grid(func, y0, s_times, direction, st: SolveSettings, counts: WorkCounts, on_output, on_accept=None):
    plan = st.plan
    n_times = len(s_times)
    jump_mode = on_output is not None
    if n_times == 1:
        return y0 if jump_mode else y0.unsqueeze(0)
    step = st.step_size
    if step is None:
        grid = list(s_times)
    elif jump_mode:
        grid = [s_times[0]]
        for a, b in zip(s_times[:-1], s_times[1:]):
            grid += _grid(a, b, step)[1:]
    else:
        grid = _grid(s_times[0], s_times[-1], step)
    n_steps = len(grid) - 1
    if n_steps > st.max_num_steps:
        raise TooManyStepsError(
            f"the fixed grid needs {n_steps} steps > max_num_steps={st.max_num_steps} "
            f"{_remedy_line(direction * s_times[0], step or 0.0, counts.nfe)}; raise step_size or max_num_steps")

    outputs = [y0.unsqueeze(0)]
    y, k1, i = y0, None, 1
    for n in range(n_steps):
        s, s1 = grid[n], grid[n + 1]
        h = s1 - s
        dt = direction * h
        if k1 is None:
            k1 = func(direction * s, y)
            counts.nfe += 1
        y1, ks = rk_stages(func, direction * s, dt, y, k1, plan)
        counts.nfe += len(ks) - 1
        counts.accepted += 1
        if on_accept is not None:
            on_accept(s, h, s1, y)
        f1 = None
        j, n_inside = _outputs_reached(s_times, i, s1)
        if j > i:
            if n_inside:
                f1 = func(direction * s1, y1)
                counts.nfe += 1
                thetas = [(s_times[m] - s) / h for m in range(i, i + n_inside)]
                outputs.append(dense_output(y, ks + [f1], dt, plan, thetas))
            for m in range(i + n_inside, j):
                if jump_mode:
                    y1 = on_output(m, y1)
                    f1 = None
                else:
                    outputs.append(y1.unsqueeze(0))
            i = j
        y, k1 = y1, f1
    result = y if jump_mode else torch.cat(outputs, dim=0)
    with torch.no_grad():
        finite = bool(torch.isfinite(result).all())  # one host sync for the whole fixed-grid solve
    if not finite:
        where = s_times[-1]
        if not jump_mode:  # the first output time with a non-finite state (a sync, on failure only)
            bad = (~torch.isfinite(result)).any(dim=1).nonzero()
            where = s_times[int(bad[0, 0])] if bad.numel() else where
        raise NonFiniteStateError(
            f"the state became non-finite by {_remedy_line(direction * where, step or 0.0, counts.nfe)} "
            "(fixed grid); use a smaller step_size or an adaptive method, or regularise the dynamics")
    return result
