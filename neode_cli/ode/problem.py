"""Normalising a call once at the boundary: validate, flatten the state, orient time, build settings.

After :func:`prepare` the solver sees one flat tensor ``(N,)``, increasing solver time ``s = direction * t``
and a function of ``(float, flat tensor)``; :meth:`Problem.unflatten` restores the user's structure.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Optional

import torch

from . import control
from .integrate import SolveSettings
from .stepping import StepPlan, check_interp, linear_variant
from .stops import make_nudge, parse_times, resolve_grid
from .loops import LOOP_METHODS
from .tableaux import TABLEAUX, get_tableau

__all__ = ["Problem", "prepare", "make_settings", "FIXED_OPTIONS", "ADAPTIVE_OPTIONS"]

FIXED_OPTIONS = ("step_size", "max_num_steps", "dtype", "interp", "perturb", "grid_constructor")
ADAPTIVE_OPTIONS = ("first_step", "max_num_steps", "safety", "ifactor", "dfactor", "norm", "controller", "dtype",
                    "step_t", "jump_t", "min_step", "max_step")
# Options only some methods can honour, and which ones (for the error naming the alternative).
_NEEDS = {"perturb": "a fixed-grid method", "grid_constructor": "a fixed-grid method",
          "step_t": "an adaptive Runge-Kutta method (e.g. dopri5)",
          "jump_t": "an adaptive Runge-Kutta method (e.g. dopri5)",
          "min_step": "an adaptive Runge-Kutta method or scipy_solver",
          "max_step": "an adaptive Runge-Kutta method or scipy_solver"}

_PLANS: dict[str, StepPlan] = {}


@dataclasses.dataclass
class Problem:
    """A normalised call: flat initial state, solver times, and how to go back to the user's shapes."""

    y0: torch.Tensor                      # (N,)
    shapes: Optional[list[torch.Size]]    # per tuple component; None for a tensor state
    shape: torch.Size                     # the state's shape (tensor state)
    s_times: list[float]                  # increasing
    direction: float                      # +1 for increasing t, -1 for decreasing
    t_dtype: torch.dtype
    device: torch.device

    @property
    def numel(self) -> int:
        return self.y0.numel()

    @property
    def block_sizes(self) -> Optional[list[int]]:
        """Lengths of the tuple state's tensors in the flat state; ``None`` for a tensor state."""
        return None if self.shapes is None else [math.prod(s) for s in self.shapes]

    @property
    def times(self) -> list[float]:
        """The output times in the user's time (``direction * s``)."""
        return [self.direction * s for s in self.s_times]

    def unflatten_state(self, y: torch.Tensor):
        """Flat ``(N,)`` -> the user's state structure."""
        if self.shapes is None:
            return y.view(self.shape)
        sizes = [math.prod(s) for s in self.shapes]
        return tuple(part.view(s) for part, s in zip(y.split(sizes), self.shapes))

    def unflatten(self, ys: torch.Tensor):
        """Solution ``(T, N)`` -> ``(T, *y0.shape)`` or a tuple of ``(T, *y0_i.shape)``."""
        T = ys.shape[0]
        if self.shapes is None:
            return ys.reshape(T, *self.shape)
        sizes = [math.prod(s) for s in self.shapes]
        return tuple(part.reshape(T, *s) for part, s in zip(ys.split(sizes, dim=1), self.shapes))

    def flat_func(self, func: Callable, on_output: Callable[[torch.Tensor], None] | None = None):
        """``func`` as the loop calls it: ``(t: float, y: (N,)) -> (N,)``.

        The time reaches ``func`` as a 0-dim tensor of ``t``'s dtype on ``t``'s device. ``on_output``, when
        given, sees every output tensor (used to attach backward-counting hooks).
        """
        t_dtype, device, N = self.t_dtype, self.device, self.numel
        if self.shapes is None:
            shape = self.shape

            def call(t: float, y: torch.Tensor) -> torch.Tensor:
                out = func(torch.full((), t, dtype=t_dtype, device=device), y.view(shape))
                if out.numel() != N:
                    raise ValueError(f"func returned shape {tuple(out.shape)}; expected the state's shape "
                                     f"{tuple(shape)}")
                out = out.reshape(N)
                if on_output is not None:
                    on_output(out)
                return out
        else:
            shapes = self.shapes
            sizes = [math.prod(s) for s in shapes]

            def call(t: float, y: torch.Tensor) -> torch.Tensor:
                state = tuple(part.view(s) for part, s in zip(y.split(sizes), shapes))
                outs = func(torch.full((), t, dtype=t_dtype, device=device), state)
                if not isinstance(outs, (tuple, list)) or len(outs) != len(shapes):
                    raise ValueError(f"func must return a tuple of {len(shapes)} tensors for a tuple state")
                out = torch.cat([o.reshape(-1) for o in outs])
                if out.numel() != N:
                    raise ValueError("func's outputs do not match the shapes of the tuple state")
                if on_output is not None:
                    on_output(out)
                return out
        return call


def prepare(y0, t, options: dict | None) -> Problem:
    """Validate ``y0`` and ``t`` and normalise them (see module docstring)."""
    if isinstance(y0, torch.Tensor):
        shapes, parts = None, [y0]
    elif isinstance(y0, (tuple, list)) and len(y0) > 0 and all(isinstance(p, torch.Tensor) for p in y0):
        shapes, parts = [p.shape for p in y0], list(y0)
    else:
        raise ValueError("y0 must be a tensor or a non-empty tuple of tensors")
    dtypes = {p.dtype for p in parts}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise ValueError(f"y0 must be floating point with one dtype across tuple components; got {sorted(map(str, dtypes))}")
    if len({p.device for p in parts}) != 1:
        raise ValueError("all components of a tuple y0 must be on the same device")
    flat = parts[0].reshape(-1) if shapes is None else torch.cat([p.reshape(-1) for p in parts])

    if not isinstance(t, torch.Tensor) or t.dim() != 1 or t.numel() < 1:
        raise ValueError("t must be a 1-D tensor of output times with at least one entry")
    if not t.dtype.is_floating_point:
        raise ValueError(f"t must be floating point; got {t.dtype}")
    times = [float(v) for v in t.detach().cpu().tolist()]  # one host transfer per solve
    direction = -1.0 if len(times) > 1 and times[1] < times[0] else 1.0
    s_times = [direction * v for v in times]
    if any(not math.isfinite(v) for v in s_times) or any(b <= a for a, b in zip(s_times, s_times[1:])):
        raise ValueError("t must be finite and strictly increasing or strictly decreasing")

    # func sees the time in the state's dtype (as torchdiffeq does), unless options['dtype'] says otherwise;
    # step-size arithmetic itself always runs in float64 on the host.
    t_dtype = flat.dtype
    if options and options.get("dtype") is not None:
        t_dtype = options["dtype"]
        if not isinstance(t_dtype, torch.dtype) or not t_dtype.is_floating_point:
            raise ValueError(f"options['dtype'] must be a floating torch.dtype; got {t_dtype!r}")
    return Problem(y0=flat, shapes=shapes, shape=parts[0].shape if shapes is None else torch.Size([flat.numel()]),
                   s_times=s_times, direction=direction, t_dtype=t_dtype, device=t.device)


def _tolerance(name: str, value) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar; got a tensor of shape {tuple(value.shape)}")
        value = float(value)
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


def _positive(name: str, value, lo: float = 0.0, hi: float = math.inf, open_lo: bool = True,
              allow_inf: bool = False) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ValueError(f"options[{name!r}] must be a number; got {value!r}")
    value = float(value)
    if not (value > lo if open_lo else value >= lo) or value > hi or not (math.isfinite(value) or
                                                                          (allow_inf and value == math.inf)):
        bound = f"in ({lo}, {hi}]" if hi < math.inf else f"> {lo}" if open_lo else f">= {lo}"
        raise ValueError(f"options[{name!r}] must be {bound}; got {value}")
    return value


def make_settings(method: str | None, rtol, atol, options: dict[str, Any] | None, *, default_norm=None,
                  unflatten: Callable | None = None, t_dtype: torch.dtype = torch.float64,
                  grid_inputs: tuple | None = None, blocks: list[int] | None = None) -> SolveSettings:
    """Validate method, tolerances and options; ValueError naming the valid choices otherwise.

    Options whose value is ``None`` count as absent (so configs can carry ``step_size: null``).
    ``default_norm`` is the norm used when the options name none (the adjoint passes its block norm);
    ``unflatten`` restores the user's structure for a callable norm; ``blocks`` are the tuple state's tensor
    lengths (``Problem.block_sizes``) for the default norm, the maximum of their RMS norms (torchdiffeq's).
    ``t_dtype``: the dtype of the time ``func`` receives (``perturb``/``jump_t`` nudge it by one ulp of that
    dtype). ``grid_inputs``: ``(func, y0, t)`` as ``options['grid_constructor']`` is called with them (required
    when it is given).
    """
    loop_method = LOOP_METHODS.get(method) if isinstance(method, str) else None
    if loop_method is None:
        try:
            tab = get_tableau(method)
        except ValueError:
            raise ValueError(f"unknown ODE method {method!r}; valid methods: "
                             f"{', '.join([*TABLEAUX, *LOOP_METHODS])}") from None
        name, adaptive = tab.name, tab.adaptive
        valid = ADAPTIVE_OPTIONS if tab.adaptive else FIXED_OPTIONS
        if not tab.adaptive and check_interp((options or {}).get("interp")) == "linear":
            tab = linear_variant(tab)
        plan = _PLANS.get(tab.name)
        if plan is None:
            plan = _PLANS[tab.name] = StepPlan(tab)
    else:
        name, adaptive, plan, valid = loop_method.name, loop_method.adaptive, None, loop_method.options
    opts = {k: v for k, v in (options or {}).items() if v is not None}
    unknown = sorted(set(opts) - set(valid))
    unsupported = [k for k in unknown if k in _NEEDS]
    if unsupported:
        raise ValueError(f"method {name!r} cannot honour option(s) {', '.join(map(repr, unsupported))}: "
                         f"{'; '.join(f'{k} needs {_NEEDS[k]}' for k in unsupported)}")
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for method {name!r}; "
                         f"valid options: {', '.join(valid)}")
    rtol_f, atol_f = _tolerance("rtol", rtol), _tolerance("atol", atol)
    if adaptive and rtol_f == 0.0 and atol_f == 0.0:
        raise ValueError("rtol and atol cannot both be 0 for an adaptive method")

    # Time arithmetic is float64 on the host whatever the state's dtype (like torchdiffeq's default).
    if adaptive:
        # The loop methods (Adams, SciPy) read first_step/safety from the controller and step the way
        # their own method says; only Runge-Kutta tableaux take options['controller'].
        first = _positive("first_step", opts["first_step"]) if "first_step" in opts else None
        bounds = {}
        if loop_method is None:  # (scipy_solver reads min_step/max_step itself)
            bounds = dict(min_step=_positive("min_step", opts.get("min_step", 0.0), open_lo=False),
                          max_step=_positive("max_step", opts.get("max_step", math.inf), allow_inf=True))
            if bounds["min_step"] > bounds["max_step"]:
                raise ValueError(f"options['min_step']={bounds['min_step']} exceeds options['max_step']="
                                 f"{bounds['max_step']}")
        controller = control.make_controller(
            opts.get("controller"), tab.error_order if loop_method is None else 1, first_step=first,
            safety=_positive("safety", opts.get("safety", 0.9), 0.0, 1.0),
            ifactor=_positive("ifactor", opts.get("ifactor", 10.0), 1.0, open_lo=False),
            dfactor=_positive("dfactor", opts.get("dfactor", 0.2), 0.0, 1.0), **bounds)
    elif "grid_constructor" in opts:
        if "step_size" in opts:
            raise ValueError("options['step_size'] and options['grid_constructor'] are mutually exclusive; "
                             "give one of them")
        controller = control.GridController()
    else:
        step = _positive("step_size", opts["step_size"]) if "step_size" in opts else None
        controller = control.ConstantStepController(step)
    settings = SolveSettings(plan=plan, rtol=rtol_f, atol=atol_f, norm=control.make_norm(None, blocks=blocks),
                             controller=controller)
    _discontinuity_settings(settings, opts, t_dtype, grid_inputs)
    if loop_method is not None:
        settings.loop = loop_method.loop
        settings.extra = loop_method.configure(opts)  # it reads its own options (common ones are parsed here)
    if "max_num_steps" in opts:
        value = opts["max_num_steps"]
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"options['max_num_steps'] must be a positive integer; got {value!r}")
        settings.max_num_steps = int(value)
    if "norm" in opts:
        settings.norm = control.make_norm(opts["norm"], unflatten, blocks)
    elif default_norm is not None:
        settings.norm = default_norm
    return settings


def _discontinuity_settings(settings: SolveSettings, opts: dict, t_dtype: torch.dtype, grid_inputs) -> None:
    """Parse ``step_t``, ``jump_t``, ``perturb`` and ``grid_constructor`` into ``settings`` (see :mod:`.stops`)."""
    stops: tuple = ()
    if "step_t" in opts or "jump_t" in opts:
        step_t, jump_t = (parse_times(k, opts[k]) if k in opts else () for k in ("step_t", "jump_t"))
        if len(set(step_t + jump_t)) < len(step_t) + len(jump_t):
            raise ValueError("options['step_t'] and options['jump_t'] must not repeat a time (within or between "
                             "them)")
        stops, settings.jumps_t = step_t + jump_t, jump_t
    if "perturb" in opts:
        if not isinstance(opts["perturb"], bool):
            raise ValueError(f"options['perturb'] must be True or False; got {opts['perturb']!r}")
        settings.perturb = opts["perturb"]
    if "grid_constructor" in opts:
        constructor = opts["grid_constructor"]
        if not callable(constructor):
            raise ValueError("options['grid_constructor'] must be callable (func, y0, t) -> grid tensor; got "
                             f"{type(constructor).__name__}")
        if grid_inputs is None:
            raise ValueError("options['grid_constructor'] is not available here (it needs func, y0 and t)")
        stops = resolve_grid(constructor, *grid_inputs)
    settings.stops_t = stops
    if settings.perturb or settings.jumps_t:
        settings.nudge = make_nudge(t_dtype)
