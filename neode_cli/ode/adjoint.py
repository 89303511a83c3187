"""The continuous adjoint as a ``torch.autograd.Function`` over the integration loop.

Forward: the ordinary solve under ``no_grad``; only the outputs ``(T, N)`` are saved, so memory does not
grow with the number of steps. Backward: one solve of the augmented system ``z = (y, a, g)`` from the last
output time to the first,

    dy/dt = f(t, y),   da/dt = -a^T df/dy,   dg/dt = -a^T df/dparams,

starting from ``(y(t_last), dL/dy(t_last), 0)``. Steps end exactly on the output times where the loss has a
gradient; there ``y`` is reset to the saved forward value (limits drift of the backward state) and ``a`` jumps
by ``dL/dy(t_i)``; output times without a gradient are stepped over. At ``t_0``,
``a = dL/dy0`` and ``g = dL/dparams``. Each augmented evaluation is one ``func`` call plus one VJP.

Event mode (``spec.event`` set): the forward solve runs until the event (:mod:`.events`), the outputs are
``(y0, y(t_event))`` and the event time is a second output whose incoming gradient is ignored (as torchdiffeq:
the gradient through the event time comes from :func:`.events.through_event_time`); the backward solve runs
from the event time back to ``t_0``.

Error norm of the backward solve: by default torchdiffeq's, the maximum of per-tensor norms (state, adjoint
state, each parameter's adjoint; so a large parameter vector does not drown the state);
``adjoint_options=dict(norm="seminorm")`` drops the parameters (Kidger, Chen & Lyons 2021), which is valid
because ``g`` does not feed back into the dynamics. See :func:`adjoint_settings` for all choices.
Gradients with respect to ``t`` are added around this Function by :mod:`.time_grad`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import torch

from . import control
from .callbacks import ADJOINT_CALLBACK_NAMES, step_callbacks
from .events import solve_until_event
from .integrate import SolveSettings, integrate
from .problem import Problem, make_settings
from .stats import SolveStats, WorkCounts, record_work

__all__ = ["AdjointSpec", "adjoint_solve", "adjoint_settings", "adjoint_block_sizes", "ADJOINT_NORM_NAMES",
           "adjoint_callbacks"]


@dataclasses.dataclass
class AdjointSpec:
    """What the adjoint needs to run both solves; built by the public API."""

    func: Callable                 # the user's func, already wrapped as (t: float, y: (N,)) -> (N,)
    s_times: list[float]
    direction: float
    settings: SolveSettings        # forward solve
    adjoint_settings: SolveSettings  # backward (augmented) solve
    params: tuple[torch.Tensor, ...]  # parameters that receive gradients (require grad)
    collectors: tuple[SolveStats, ...]
    # event mode: the combined event value (solver time, flat state) -> 0-dim tensor, and the event time's
    # dtype/device (see :mod:`.events`)
    event: Callable | None = None
    event_t_like: torch.Tensor | None = None
    # builds the backward solve's step callbacks (None without any); called when the backward pass starts
    backward_callbacks: Callable[[], object] | None = None


def adjoint_solve(spec: AdjointSpec, y0: torch.Tensor):
    """Solution ``(T, N)`` whose backward pass runs the adjoint solve described in the module docstring; in event
    mode ``(solution (2, N), event time as a 0-dim tensor in the user's time)``."""
    return _AdjointSolve.apply(spec, y0, *spec.params)


class _AdjointSolve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: AdjointSpec, y0: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        counts = WorkCounts()
        try:
            with torch.no_grad():
                if spec.event is None:
                    ys = integrate(spec.func, y0, spec.s_times, spec.direction, spec.settings, counts)
                    ctx.s_times = spec.s_times
                else:
                    s_event, y_event = solve_until_event(spec.func, y0, spec.s_times[0], spec.direction,
                                                         spec.settings, counts, spec.event)
                    ys = torch.stack([y0, y_event])
                    ctx.s_times = [spec.s_times[0], s_event]
        finally:
            record_work(spec.collectors, counts)
        ctx.spec = spec
        ctx.save_for_backward(ys)
        if spec.event is None:
            return ys
        like = spec.event_t_like
        return ys, torch.tensor(spec.direction * s_event, dtype=like.dtype, device=like.device)

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor, *_event_t_grad):
        spec: AdjointSpec = ctx.spec
        (ys,) = ctx.saved_tensors
        s_times = ctx.s_times
        params = spec.params
        n_times, N = ys.shape
        param_sizes = [p.numel() for p in params]
        zeros = [torch.zeros(n, dtype=ys.dtype, device=ys.device) for n in param_sizes]
        func = spec.func

        def augmented(t: float, z: torch.Tensor) -> torch.Tensor:
            y, a = z[:N], z[N:2 * N]
            with torch.enable_grad():
                y_ = y.detach().requires_grad_(True)
                f = func(t, y_)
                # grad_outputs = -a gives -a^T df/dy and -a^T df/dparams directly. A field that depends on
                # neither y nor a parameter (f = g(t)) has no graph: all its VJPs are zero.
                vjps = (torch.autograd.grad(f, (y_, *params), -a, allow_unused=True) if f.requires_grad
                        else (None,) * (1 + len(params)))
            parts = [f.detach(), vjps[0] if vjps[0] is not None else torch.zeros_like(y)]
            parts += [g.reshape(-1) if g is not None else zero for g, zero in zip(vjps[1:], zeros)]
            return torch.cat(parts)

        # Stop only where the loss has a gradient (and at t_0): one host read for all output times.
        has_grad = (grad_ys[1:-1] != 0).any(dim=1).tolist() if n_times > 2 else []
        stops = [0] + [i + 1 for i, flag in enumerate(has_grad) if flag] + [n_times - 1]  # forward indices
        stops = sorted(set(stops), reverse=True)

        def jump(m: int, z: torch.Tensor) -> torch.Tensor:
            index = stops[m]  # backward output m is this forward output
            return torch.cat([ys[index], z[N:2 * N] + grad_ys[index], z[2 * N:]])

        z0 = torch.cat([ys[-1], grad_ys[-1], *zeros])
        backward_settings = spec.adjoint_settings
        callbacks = spec.backward_callbacks() if spec.backward_callbacks is not None else None
        if callbacks is not None:
            backward_settings = dataclasses.replace(backward_settings, callbacks=callbacks)
        counts = WorkCounts()
        try:
            if n_times > 1 and s_times[-1] == s_times[0]:  # an event at the start: nothing to integrate
                z = torch.cat([z0[:N], z0[N:2 * N] + grad_ys[0], z0[2 * N:]])
            elif n_times > 1:
                back_times = [-s_times[i] for i in stops]
                with torch.no_grad():
                    z = integrate(augmented, z0, back_times, -spec.direction, backward_settings, counts,
                                  on_output=jump)
            else:
                z = z0
        finally:
            record_work(spec.collectors, counts, backward=True)
        grad_y0 = z[N:2 * N]
        grad_params = []
        offset = 2 * N
        for p, n in zip(params, param_sizes):
            grad_params.append(z[offset:offset + n].view_as(p))
            offset += n
        return (None, grad_y0, *grad_params)


def adjoint_block_sizes(n_state: int, params: Sequence[torch.Tensor]) -> list[int]:
    """Block lengths of the augmented state for the ``"block_rms"`` norm: state, adjoint state, all parameters."""
    return [n_state, n_state, int(sum(math.prod(p.shape) for p in params))]


#: ``adjoint_options['norm']`` names besides the forward ones: torchdiffeq's ``"seminorm"``, and neode's earlier
#: defaults (the maximum of the RMS norms of three blocks: state, adjoint state, all parameters together).
ADJOINT_NORM_NAMES = ("seminorm", "block_rms", "block_rms_seminorm")


def adjoint_callbacks(func, backward: SolveSettings, problem: Problem, params: Sequence[torch.Tensor],
                      t: torch.Tensor, method):
    """``func``'s ``callback_*_adjoint`` hooks for the backward solve (see :mod:`.callbacks`), or None.

    As torchdiffeq they receive the forward solve's solver time, and the augmented state ``(t_adj, y, a,
    *param_adjoints)`` with ``y``/``a`` in the state's shape (flat for tuple states); ``t_adj`` is a zero.
    """
    state = _augmented_structure(problem, params, spread=False)
    # the backward solve runs in b = -s (s: the forward solver time), which is what the hooks receive
    return step_callbacks(func, ADJOINT_CALLBACK_NAMES, method=method, adaptive=backward.controller.needs_error,
                          time=lambda b: -b, state=state, t_dtype=t.dtype, device=t.device)


def _augmented_structure(problem: Problem, params: Sequence[torch.Tensor],
                         spread: bool = True) -> Callable[[torch.Tensor], tuple]:
    """Flat augmented state ``(y, a, g)`` -> torchdiffeq's augmented tuple ``(t_adj, y, a, *params)``, ``y`` and
    ``a`` in the state's shape; for a tuple state ``spread`` gives ``(t_adj, *y_parts, *a_parts, *params)`` (what
    a custom adjoint norm receives), otherwise ``y`` and ``a`` stay flat (what the adjoint callbacks receive).

    ``t_adj`` (torchdiffeq's time adjoint) is a 0-dim zero: neode does not integrate it (t-gradients come from
    :mod:`.time_grad`); in torchdiffeq it is zero too unless ``t`` requires grad.
    """
    n = problem.numel
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]
    zero: list = []

    def structure(z: torch.Tensor) -> tuple:
        if not zero:
            zero.append(torch.zeros((), dtype=z.dtype, device=z.device))
        g = [part.view(shape) for part, shape in zip(z[2 * n:].split(sizes), shapes)]
        if problem.shapes is None:
            return (zero[0], z[:n].view(problem.shape), z[n:2 * n].view(problem.shape), *g)
        if not spread:
            return (zero[0], z[:n], z[n:2 * n], *g)
        return (zero[0], *problem.unflatten_state(z[:n]), *problem.unflatten_state(z[n:2 * n]), *g)

    return structure


def _default_adjoint_norm(problem: Problem, params: Sequence[torch.Tensor], forward_norm, with_params: bool):
    """torchdiffeq's default adjoint norm (``with_params=False``: its seminorm): the maximum of the forward
    state norm of ``y``, of ``a``, and of the RMS norm of each parameter's adjoint."""
    n = problem.numel
    param_sizes = [p.numel() for p in params] if with_params else []
    state_blocks = problem.block_sizes or [n]
    if forward_norm is None or forward_norm == "mixed":  # every tensor by its own RMS norm: one block norm
        return control.block_rms_norm(state_blocks + state_blocks + param_sizes)
    state_norm = control.make_norm(forward_norm, problem.unflatten_state, problem.block_sizes)
    param_norm = control.block_rms_norm(param_sizes) if sum(param_sizes) > 0 else None

    def norm(z: torch.Tensor) -> float:
        worst = max(state_norm(z[:n]), state_norm(z[n:2 * n]))
        return worst if param_norm is None else max(worst, param_norm(z[2 * n:]))

    return norm


def adjoint_settings(problem: Problem, params: Sequence[torch.Tensor], *, method, rtol, atol, options,
                     adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options,
                     grid_inputs: tuple | None = None) -> SolveSettings:
    """Settings of the backward (augmented) solve from the forward arguments and the ``adjoint_*`` ones.

    ``adjoint_rtol/atol/method`` default to the forward ones. With the same method the backward solve inherits
    the forward options except ``norm``, which is about the forward state (so a fixed grid keeps its
    ``step_size`` and an adaptive method its ``controller``); ``adjoint_options`` override them key by key.
    The backward norm (``adjoint_options['norm']``), as torchdiffeq 0.2.5:

    - absent: the maximum of the forward norm of the state, the forward norm of the adjoint state, and the RMS
      norm of each parameter's adjoint (with the default forward norm: the maximum of the RMS norms of every
      tensor of the augmented state); ``"seminorm"``: the same without the parameters (Kidger, Chen & Lyons
      2021, https://arxiv.org/abs/2009.09457);
    - a callable: called with ``(t_adj, y, a, *param_adjoints)`` (tensor state; ``y``, ``a`` in the state's
      shape) or ``(t_adj, *y_parts, *a_parts, *param_adjoints)`` (tuple state), see :func:`_augmented_structure`;
    - ``"block_rms"`` / ``"block_rms_seminorm"``: neode's earlier defaults, the maximum of the RMS norms of the
      blocks state, adjoint state, all parameters together (the seminorm: without the last);
    - ``"rms"``, ``"max"``, ``"mixed"``: those norms over the whole augmented state (``"mixed"``: per tensor).

    ``grid_inputs``: what a ``grid_constructor`` of the backward solve is called with (the public API passes the
    user's ``func``, ``y0`` and ``t`` reversed: one grid for the whole backward solve, from ``t[-1]`` to ``t[0]``).
    ``step_t``/``jump_t``/``perturb`` are inherited like any option and act in the backward direction.
    """
    same_method = adjoint_method is None or adjoint_method == (method or "dopri5")
    inherited = {k: v for k, v in (options or {}).items() if k != "norm"} if same_method else {}
    backward_options = {**inherited, **(adjoint_options or {})}
    norm = backward_options.pop("norm", None)
    forward_norm = (options or {}).get("norm")
    if norm is None or norm == "seminorm":
        default_norm = _default_adjoint_norm(problem, params, forward_norm, with_params=norm is None)
    elif norm in ("block_rms", "block_rms_seminorm"):
        default_norm = control.block_rms_norm(adjoint_block_sizes(problem.numel, params),
                                              keep=2 if norm == "block_rms_seminorm" else None)
    elif norm == "mixed":
        blocks = problem.block_sizes or [problem.numel]
        default_norm = control.block_rms_norm(blocks + blocks + [p.numel() for p in params])
    elif callable(norm):
        structure = _augmented_structure(problem, params)
        default_norm = lambda z: float(norm(structure(z)))  # noqa: E731
    else:
        default_norm = None
        backward_options["norm"] = norm  # "rms", "max" (or an unknown name: make_settings names the choices)

    return make_settings(
        adjoint_method if adjoint_method is not None else method,
        rtol if adjoint_rtol is None else adjoint_rtol, atol if adjoint_atol is None else adjoint_atol,
        backward_options, default_norm=default_norm, t_dtype=problem.t_dtype, grid_inputs=grid_inputs)
