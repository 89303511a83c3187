"""The integration loop: one loop for fixed-grid and adaptive methods, output at the requested times, work
accounting.

Inputs are already normalised by the public API: a flat state ``y0`` of shape ``(N,)``, output times as an
increasing list of Python floats in *solver time* ``s = direction * t`` (so decreasing ``t`` needs no
wrapper around ``func``: the loop steps forward in ``s`` and uses ``dt = direction * h`` in the arithmetic),
and ``func(t, y)`` taking the real time as a Python float and returning a flat tensor.

Who decides what: the tableau (:mod:`.stepping`) makes a step; the controller (:mod:`.control`) accepts or
rejects it and proposes the next step size (a fixed grid is the :class:`~.control.ConstantStepController`);
:func:`_emit_outputs` turns an accepted step into the outputs it reaches; the loop only sequences them,
shortens a step so it lands on an output time or the end, and counts.

Host synchronisation: one read of the error ratio per attempt with an error-based controller (the
accept/reject decision); with the constant-step controller no error estimate is formed and nothing is read
until a single finiteness check at the end.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import torch

from . import control
from .errors import NonFiniteStateError, StepSizeUnderflowError, TooManyStepsError
from .stats import WorkCounts
from .stepping import StepPlan, dense_output, rk_stages
from .stops import landing_times

__all__ = ["SolveSettings", "WorkCounts", "integrate"]

FlatFunc = Callable[[float, torch.Tensor], torch.Tensor]
#: Called when the solve reaches output time index ``i`` (jump mode); returns the state to continue from.
OutputJump = Callable[[int, torch.Tensor], torch.Tensor]
#: Called once per accepted step with ``(s, h, s1, y, y1, interpolate)``: the step starts at solver time ``s``
#: from state ``y``, its stages use step ``h`` (``dt = direction * h``) and it ends at ``s1`` in ``y1``;
#: ``interpolate(thetas)`` is the step's dense output at fractions ``thetas`` of it, ``(len(thetas), N)``.
#: A true return value ends the solve after this step (events); used by the checkpoint adjoint and events.
StepHook = Callable[[float, float, float, torch.Tensor, torch.Tensor, Callable], Optional[bool]]

# A step that would leave less than this fraction of itself before a stop is stretched to land on the stop.
_SLIVER = 1e-10


@dataclasses.dataclass
class SolveSettings:
    """Everything the loop needs besides the problem; built and validated by the public API."""

    plan: StepPlan
    rtol: float
    atol: float
    norm: control.Norm
    controller: control.Controller
    max_num_steps: int = 2**31 - 1
    time_eps: float = 2.0**-52
    # Methods that are not Runge-Kutta tableaux (Adams, SciPy) bring their own loop with the signature of
    # :func:`integrate`; ``plan`` is then unused and ``extra`` holds their validated method options.
    loop: Optional[Callable] = None
    extra: dict = dataclasses.field(default_factory=dict)
    # Discontinuity handling (see :mod:`.stops`): user times every step must land on (``step_t``, ``jump_t``,
    # a constructed grid), the subset where ``func`` jumps, the fixed-grid ``perturb`` option, and the one-ulp
    # nudge in the dtype of ``func``'s time (set whenever ``jumps_t`` or ``perturb`` is).
    stops_t: tuple = ()
    jumps_t: tuple = ()
    perturb: bool = False
    nudge: Optional[Callable[[float, float], float]] = None
    # the user's step callbacks (:class:`~.callbacks.StepCallbacks`), None when func has none
    callbacks: Optional[object] = None


def _where(t: float, h: float, nfe: int) -> str:
    return f"at t={t:.6g} with step size {h:.3g} after {nfe} function evaluations"


def integrate(func: FlatFunc, y0: torch.Tensor, s_times: list[float], direction: float,
              settings: SolveSettings, counts: WorkCounts, on_output: OutputJump | None = None,
              on_accept: StepHook | None = None) -> torch.Tensor:
    """Solve from ``s_times[0]`` through all output times.

    Returns the states at ``s_times`` stacked as ``(len(s_times), N)``. In jump mode (``on_output`` given,
    used by the adjoint) every step ends exactly on the output times, ``on_output(i, y)`` may replace the
    state there, and the return value is the final state after the last jump.
    ``counts`` is updated as the solve goes, so it is right even when the solve raises. ``on_accept`` (see
    :data:`StepHook`) sees every accepted step and may end the solve (then the outputs reached so far are
    returned); ``s_times[-1]`` may be ``inf`` when it does (event mode). The Adams loops call it too, SciPy's not.
    """
    if settings.loop is not None:
        return settings.loop(func, y0, s_times, direction, settings, counts, on_output, on_accept=on_accept)
    n_times = len(s_times)
    jump_mode = on_output is not None
    if n_times == 1:
        return y0 if jump_mode else y0.unsqueeze(0)
    plan, ctl = settings.plan, settings.controller
    needs_error, fsal = ctl.needs_error, plan.tab.fsal
    callbacks = settings.callbacks
    stop_at_each_output = jump_mode or ctl.lands_on_outputs
    s_end = s_times[-1]
    # The solver times steps must end on, in order: output times or just the end, plus step_t/jump_t/a grid.
    stops = list(s_times[1:]) if stop_at_each_output else [s_end]
    if settings.stops_t:
        stops = sorted(set(stops).union(landing_times(settings.stops_t, direction, s_times[0], s_end)))
    jumps = frozenset(landing_times(settings.jumps_t, direction, s_times[0], s_end)) if settings.jumps_t else None
    perturb, nudge = settings.perturb, settings.nudge
    k = 0  # the next stop

    s, y = s_times[0], y0
    k1 = func(nudge(direction * s, direction) if perturb else direction * s, y)
    counts.nfe += 1

    def probe(h0: float) -> torch.Tensor:
        counts.nfe += 1
        return func(direction * (s + h0), y + (direction * h0) * k1)

    try:
        h = ctl.first_step(k1, y, probe, settings.rtol, settings.atol, settings.norm)
    except control.GiveUp as stop:
        raise NonFiniteStateError(f"{stop.what} {_where(direction * s, 0.0, counts.nfe)}; {stop.remedy}") from None
    state = ctl.start(s)
    if needs_error:
        with torch.no_grad():
            abs_y = y.abs()
    outputs = [y0.unsqueeze(0)]
    i = 1
    while i < n_times:
        s_stop = stops[k]
        remaining = s_stop - s
        clipped = h * (1.0 + _SLIVER) >= remaining
        h_try = remaining if clipped else h
        if needs_error and h_try <= 4.0 * settings.time_eps * max(1.0, abs(s)):
            _raise_underflow(state, direction * s, h_try, counts.nfe)
        if counts.accepted + counts.rejected >= settings.max_num_steps:
            raise TooManyStepsError(
                f"reached max_num_steps={settings.max_num_steps} {_where(direction * s, h_try, counts.nfe)}; "
                f"raise options['max_num_steps'], {ctl.more_steps_hint}, or regularise the dynamics")
        dt = direction * h_try
        if callbacks is not None:
            callbacks.step(s, y, h_try)
        s1 = s_stop if clipped else s + h_try
        # A step ending on a jump (every step, with perturb) evaluates f at its end one ulp inside itself.
        inside = perturb or (jumps is not None and s1 in jumps)
        t_end = nudge(direction * s1, -direction) if inside else None
        if inside:
            y1, ks = rk_stages(func, direction * s, dt, y, k1, plan, t_end=t_end)
        else:
            y1, ks = rk_stages(func, direction * s, dt, y, k1, plan)
        counts.nfe += len(ks) - 1
        ratio = None
        if needs_error:
            with torch.no_grad():
                err = _error_estimate(ks, plan.err, dt)
                abs_y1 = y1.abs()
                scale = torch.maximum(abs_y, abs_y1).mul_(settings.rtol).add_(settings.atol)
                ratio = settings.norm(err.div_(scale))  # the one host sync of the attempt
        try:
            accept, h = ctl.decide(state, ratio, s1, h_try, h if clipped else None)
        except control.GiveUp as stop:
            raise NonFiniteStateError(
                f"{stop.what} {_where(direction * s, h_try, counts.nfe)}; {stop.remedy}") from None
        if callbacks is not None:
            (callbacks.accept if accept else callbacks.reject)(s, y, h_try)
        if not accept:
            counts.rejected += 1
            continue
        counts.accepted += 1
        if s1 >= s_stop:
            k += 1
        if on_accept is not None and on_accept(s, h_try, s1, y, y1, _step_interpolant(
                func, direction, plan, counts, s, s1, y, y1, ks, t_end)):
            break
        f1 = ks[-1] if fsal and not inside else None  # FSAL: the last stage is f(t1, y1)
        i, y_next, f1 = _emit_outputs(func, direction, plan, counts, outputs, s_times, i, s, s1, y, y1, ks, f1,
                                      on_output, t_end)
        if inside:  # f just before the step's end is not f at the next step's start
            f1 = None
        if needs_error and y_next is not y1:  # the state jumped: its magnitude for the error scale is stale
            with torch.no_grad():
                abs_y1 = y_next.abs()
        s, y = s1, y_next
        if needs_error:
            abs_y = abs_y1
        if i < n_times:
            if f1 is None:
                f1 = func(nudge(direction * s, direction) if inside else direction * s, y)
                counts.nfe += 1
            k1 = f1
    result = y if jump_mode else torch.cat(outputs, dim=0)
    if not needs_error:
        _check_finite(result, s_times, direction, jump_mode, ctl, counts)
    return result


def _emit_outputs(func: FlatFunc, direction: float, plan: StepPlan, counts: WorkCounts, outputs: list,
                  s_times: Sequence[float], i: int, s: float, s1: float, y: torch.Tensor, y1: torch.Tensor,
                  ks: list, f1: Optional[torch.Tensor], on_output: OutputJump | None, t_end: Optional[float] = None):
    """The outputs an accepted step from ``(s, y)`` to ``(s1, y1)`` reaches, from output index ``i`` on.

    Output times strictly inside the step come from the dense interpolant (one ``f(t1, y1)`` evaluation for
    methods that are not FSAL, passed in as ``f1`` when already known, made at the time ``t_end`` when given:
    the nudged end of a step ending on a discontinuity); output times equal to ``s1`` take
    ``y1``, or in jump mode let ``on_output`` replace it. Appends to ``outputs`` (not in jump mode) and returns
    ``(next output index, state to continue from, f(s1, state) or None when unknown)``.
    """
    j, n_inside = _outputs_reached(s_times, i, s1)
    if j == i:
        return i, y1, f1
    if n_inside:
        if f1 is None and plan.dense_uses_f1:
            f1 = func(direction * s1 if t_end is None else t_end, y1)
            counts.nfe += 1
        h = s1 - s
        thetas = [(s_times[m] - s) / h for m in range(i, i + n_inside)]
        # (a linear interpolant gives f(t1, y1) weight 0: any tensor of the right shape fills its row)
        ks_ext = ks if plan.tab.fsal else ks + [f1 if f1 is not None else ks[0]]
        outputs.append(dense_output(y, ks_ext, direction * h, plan, thetas))
    for m in range(i + n_inside, j):
        if on_output is not None:
            y1 = on_output(m, y1)
            f1 = None  # the state jumped: the carried derivative is stale
        else:
            outputs.append(y1.unsqueeze(0))
    return j, y1, f1


def _step_interpolant(func: FlatFunc, direction: float, plan: StepPlan, counts: WorkCounts, s: float, s1: float,
                      y: torch.Tensor, y1: torch.Tensor, ks: list,
                      t_end: Optional[float] = None) -> Callable[[Sequence[float]], torch.Tensor]:
    """The dense output of one accepted step as a function of step fractions (``f(t1, y1)`` made on first use,
    at ``t_end`` when given, as in :func:`_emit_outputs`)."""
    extended: list = []

    def interpolate(thetas: Sequence[float]) -> torch.Tensor:
        if not extended:
            if plan.tab.fsal:
                extended.extend(ks)
            elif plan.dense_uses_f1:
                counts.nfe += 1
                extended.extend(ks + [func(direction * s1 if t_end is None else t_end, y1)])
            else:  # linear: f(t1, y1) has weight 0
                extended.extend(ks + [ks[0]])
        return dense_output(y, extended, direction * (s1 - s), plan, thetas)

    return interpolate


def grid_points(s0: float, s1: float, step: float) -> list[float]:
    """The grid a constant step walks from ``s0`` to ``s1`` in :func:`integrate`: ``s0 + k * step`` up to the
    last point that leaves more than a sliver before ``s1``, then ``s1`` (for loops with their own stepping)."""
    points = [s0]
    while (s0 + len(points) * step - points[-1]) * (1.0 + _SLIVER) < s1 - points[-1]:
        points.append(s0 + len(points) * step)
    return points + [s1]


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


def _error_estimate(ks, err_coeffs, dt: float) -> torch.Tensor:
    out = None
    for j, value in err_coeffs:
        if out is None:
            out = torch.mul(ks[j], value * dt)
        else:
            out.add_(ks[j], alpha=value * dt)
    return out


def _raise_underflow(state: control.ControlState, t: float, h: float, nfe: int):
    if state.nonfinite_streak:  # the step shrank because the estimates were NaN/inf, not because of stiffness
        raise NonFiniteStateError(
            f"the state became non-finite {_where(t, h, nfe)}; "
            "the dynamics blow up: lower the learning rate, normalise inputs or regularise the dynamics")
    raise StepSizeUnderflowError(
        f"step size underflow {_where(t, h, nfe)}; the problem is stiff or "
        "singular here: loosen rtol/atol, use a fixed-step method, or regularise the dynamics")


def _check_finite(result: torch.Tensor, s_times, direction: float, jump_mode: bool, ctl, counts: WorkCounts):
    """One host sync for a whole solve without error estimates: raise if any output is NaN/inf."""
    with torch.no_grad():
        finite = bool(torch.isfinite(result).all())
    if finite:
        return
    where = s_times[-1]
    if not jump_mode:  # the first output time with a non-finite state (a sync, on failure only)
        bad = (~torch.isfinite(result)).any(dim=1).nonzero()
        where = s_times[int(bad[0, 0])] if bad.numel() else where
    step = getattr(ctl, "step", None) or 0.0
    raise NonFiniteStateError(
        f"the state became non-finite by {_where(direction * where, step, counts.nfe)} "
        "(fixed grid); use a smaller step_size or an adaptive method, or regularise the dynamics")
