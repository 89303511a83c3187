"""Gradients by checkpointing the accepted steps: discretise-then-optimise without keeping the graph.

The adaptive checkpoint adjoint (ACA) of Zhuang et al. 2020, "Adaptive Checkpoint Adjoint Method for Gradient
Estimation in Neural ODE" (ICML 2020, arXiv:2006.02493). Forward: the ordinary solve under ``no_grad``; the
loop reports every accepted step (its start time, step size and start state) and only those states are kept,
``(steps, N)``. Rejected attempts, the first-step probe and the error estimates leave nothing behind. Backward:
the steps are replayed in reverse, one at a time: the step is recomputed from its saved start state with the
graph on, the vector-Jacobian product of its end state (and of any outputs it interpolates) is taken, and its
graph is freed before the previous step is replayed. The result is the gradient of exactly the discretisation
the forward pass computed, the same as backpropagation through the solver (step sizes are constants in both),
with saved memory of ``steps * N`` states plus one step's activations instead of every step's activations, and
no backward ODE solve (so none of the adjoint's reverse-time error).

Work: ``nfe_backward`` counts the replayed evaluations: ``s`` stages per step for an explicit method whose end
state is its last stage's argument (dopri5, tsit5, bosh3: the FSAL stage is not needed unless the step has
outputs inside it), otherwise all stages, plus ``f(t1, y1)`` where a step interpolates outputs and the method's
dense output needs it. Gradients with respect to ``t`` as for backprop (:mod:`.time_grad`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch

from .integrate import SolveSettings, WorkCounts, _outputs_reached, integrate
from .callbacks import attach_callbacks
from .problem import make_settings, prepare
from .stats import SolveStats, active_collectors, record_work
from .stepping import StepPlan, combine, dense_output, rk_stages
from .stops import landing_times
from .time_grad import time_gradient

__all__ = ["odeint_checkpoint", "CheckpointSpec", "checkpoint_solve"]


def odeint_checkpoint(func, y0, t, *, rtol=1e-7, atol=1e-9, method=None, options=None, params=None):
    """As :func:`neode_cli.ode.odeint`, with gradients by replaying checkpointed steps (module docstring).

    The gradient equals backpropagation through the same solve (to rounding); saved memory is the accepted
    steps' start states plus one step's activations during the backward pass. ``params``: the tensors to
    differentiate (default: ``func.parameters()`` for an ``nn.Module``, else none); gradients also flow to
    ``y0``. Same arguments, options and errors as ``odeint``; Runge-Kutta methods only (ValueError for the Adams
    and SciPy methods, whose steps the replay cannot recompute).
    """
    if params is None:
        params = tuple(func.parameters()) if isinstance(func, torch.nn.Module) else ()
    params = tuple(p for p in params if isinstance(p, torch.Tensor) and p.requires_grad)
    problem = prepare(y0, t, options)
    settings = make_settings(method, rtol, atol, options, unflatten=problem.unflatten_state,
                             t_dtype=problem.t_dtype, grid_inputs=(func, y0, t), blocks=problem.block_sizes)
    attach_callbacks(func, settings, problem, t, method)
    if settings.loop is not None:  # the replay recomputes Runge-Kutta steps from their tableau
        raise ValueError(f"gradients by checkpointing replay Runge-Kutta steps; method {method!r} is not a "
                         "Runge-Kutta method: use backprop (odeint) or the adjoint (odeint_adjoint) with it")
    collectors = active_collectors()
    flat_func = problem.flat_func(func)
    spec = CheckpointSpec(func=flat_func, s_times=problem.s_times, direction=problem.direction,
                          settings=settings, params=params, collectors=collectors)
    times = time_gradient(flat_func, t, problem.times, collectors)
    if times is None:
        return problem.unflatten(checkpoint_solve(spec, problem.y0))
    return problem.unflatten(times.outputs(checkpoint_solve(spec, times.start(problem.y0))))


@dataclasses.dataclass
class CheckpointSpec:
    """What the checkpointed solve needs; built by :func:`odeint_checkpoint`."""

    func: Callable                    # (t: float, y: (N,)) -> (N,)
    s_times: list[float]              # increasing solver times
    direction: float
    settings: SolveSettings
    params: tuple[torch.Tensor, ...]  # tensors that receive gradients (require grad)
    collectors: tuple[SolveStats, ...]


def checkpoint_solve(spec: CheckpointSpec, y0: torch.Tensor) -> torch.Tensor:
    """Solution ``(T, N)``; its backward pass replays the checkpointed steps (module docstring)."""
    needs_grad = torch.is_grad_enabled() and (y0.requires_grad or bool(spec.params))
    if not needs_grad:  # nothing to differentiate: a plain solve that keeps no states
        counts = WorkCounts()
        try:
            with torch.no_grad():
                return integrate(spec.func, y0, spec.s_times, spec.direction, spec.settings, counts)
        finally:
            record_work(spec.collectors, counts)
    return _CheckpointSolve.apply(spec, y0, *spec.params)


class _CheckpointSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: CheckpointSpec, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        steps: list[tuple[float, float, float]] = []   # (s, h, s1) of each accepted step
        states: list[torch.Tensor] = []                 # its start state (N,)

        def record(s: float, h: float, s1: float, y: torch.Tensor, *_) -> None:
            steps.append((s, h, s1))
            states.append(y)

        counts = WorkCounts()
        try:
            with torch.no_grad():
                ys = integrate(spec.func, y0, spec.s_times, spec.direction, spec.settings, counts,
                               on_accept=record)
        finally:
            record_work(spec.collectors, counts)
        ctx.spec, ctx.steps = spec, steps
        ctx.save_for_backward(torch.stack(states) if states else y0.new_zeros(0, y0.numel()))  # (steps, N)
        return ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        spec: CheckpointSpec = ctx.spec
        (states,) = ctx.saved_tensors
        params, s_times = spec.params, spec.s_times
        plan = spec.settings.plan
        nudged = _nudged_times(spec)
        # Which outputs each step produced, found the way the loop found them.
        reached, i = [], 1
        for s, h, s1 in ctx.steps:
            j, n_inside = _outputs_reached(s_times, i, s1)
            reached.append((i, j, n_inside))
            i = j
        adjoint = torch.zeros_like(grad_ys[0])    # dL/d(end state of the step being replayed)
        grad_params = [torch.zeros_like(p) for p in params]
        nfe = 0
        try:
            for n in reversed(range(len(ctx.steps))):
                s, h, s1 = ctx.steps[n]
                i, j, n_inside = reached[n]
                for m in range(i + n_inside, j):  # outputs at the step's end are its end state
                    adjoint = adjoint + grad_ys[m]
                thetas = [(s_times[m] - s) / h for m in range(i, i + n_inside)]
                with torch.enable_grad():
                    y = states[n].detach().requires_grad_(True)
                    y1, dense, evaluations = _replay_step(spec.func, spec.direction, s, h, s1, y, plan, thetas,
                                                          *nudged(s, s1))
                    nfe += evaluations
                    outputs, cotangents = [y1], [adjoint]
                    if dense is not None:
                        outputs.append(dense)
                        cotangents.append(grad_ys[i:i + n_inside])
                    vjps = torch.autograd.grad(outputs, (y, *params), cotangents, allow_unused=True)
                adjoint = vjps[0] if vjps[0] is not None else torch.zeros_like(adjoint)
                for g, vjp in zip(grad_params, vjps[1:]):
                    if vjp is not None:
                        g.add_(vjp)
        finally:
            for c in spec.collectors:
                c.add(nfe_backward=nfe)
        return (None, adjoint + grad_ys[0], *grad_params)


def _nudged_times(spec: CheckpointSpec) -> Callable[[float, float], tuple[float | None, float | None]]:
    """``(s, s1) -> (time of the first stage, time of the stages at the step's end)`` where the loop nudged them
    (``perturb``, ``jump_t``: see :mod:`.stops`), ``None`` where it did not."""
    settings, direction = spec.settings, spec.direction
    jumps = frozenset(landing_times(settings.jumps_t, direction, spec.s_times[0], spec.s_times[-1]))
    perturb, nudge = settings.perturb, settings.nudge

    def nudged(s: float, s1: float):
        start = nudge(direction * s, direction) if perturb or s in jumps else None
        end = nudge(direction * s1, -direction) if perturb or s1 in jumps else None
        return start, end

    return nudged


def _replay_step(func, direction: float, s: float, h: float, s1: float, y: torch.Tensor, plan: StepPlan,
                 thetas: list[float], t_start: float | None = None,
                 t_end: float | None = None) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """Recompute one accepted step from ``y`` with the graph on: ``(y1, dense outputs or None, evaluations)``.

    The same arithmetic as the loop (``rk_stages``, ``combine``, ``dense_output``), so the values and their
    derivatives are those the forward pass computed; ``t_start``/``t_end``: the nudged times of the first stage
    and of the stages at the step's end where the loop used them.
    """
    dt, t0 = direction * h, direction * s
    k1 = func(t0 if t_start is None else t_start, y)
    if thetas:  # outputs inside the step: the dense output needs every stage (and f(t1, y1) where the loop took it)
        y1, ks = rk_stages(func, t0, dt, y, k1, plan, t_end)
        evaluations = len(ks)
        if plan.dense_uses_f1:
            ks = ks + [func(direction * s1 if t_end is None else t_end, y1)]
            evaluations += 1
        elif not plan.tab.fsal:  # linear interpolant: f(t1, y1) has weight 0 (as in the loop)
            ks = ks + [ks[0]]
        return y1, dense_output(y, ks, dt, plan, thetas), evaluations
    ks = [k1]
    # When y1 is the last stage's argument (FSAL), that stage itself only feeds the error estimate and the next
    # step, whose replay evaluates its own first stage: stop one stage early.
    n_stages = len(plan.c) - 1 if plan.y1_is_last_stage else len(plan.c)
    for stage in range(1, n_stages):
        c = plan.c[stage]
        ks.append(func(t_end if t_end is not None and c == 1 else t0 + c * dt,
                       combine(y, ks, plan.stage_coeffs[stage], dt)))
    return combine(y, ks, plan.b, dt), None, len(ks)
