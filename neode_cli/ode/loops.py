"""Methods that are not Runge-Kutta tableaux: each brings its own loop (same signature as ``integrate``).

A :class:`LoopMethod` names the options it accepts and validates its own ones into ``SolveSettings.extra``;
the common options (``step_size``, ``max_num_steps``, ``first_step``, ``norm``, ...) are parsed by
:func:`.problem.make_settings` as for every method.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from . import adams, adaptive_adams, scipy_solver

__all__ = ["LoopMethod", "LOOP_METHODS"]


@dataclasses.dataclass(frozen=True)
class LoopMethod:
    """A method with its own integration loop."""

    name: str
    adaptive: bool                      # tolerance-driven (else a fixed grid set by step_size)
    options: tuple[str, ...]            # every option name the method accepts
    loop: Callable                      # (func, y0, s_times, direction, settings, counts, on_output) -> Tensor
    configure: Callable[[dict], dict]   # all options given -> its validated method-specific ``extra`` settings


_FIXED_ADAMS_OPTIONS = ("step_size", "max_num_steps", "dtype", "interp", "max_order", "max_iters", "perturb",
                        "grid_constructor")

LOOP_METHODS: dict[str, LoopMethod] = {
    "explicit_adams": LoopMethod("explicit_adams", False, _FIXED_ADAMS_OPTIONS, adams.fixed_adams_loop,
                                 lambda o: adams.fixed_adams_options(o, implicit=False)),
    "implicit_adams": LoopMethod("implicit_adams", False, _FIXED_ADAMS_OPTIONS, adams.fixed_adams_loop,
                                 lambda o: adams.fixed_adams_options(o, implicit=True)),
    "fixed_adams": LoopMethod("fixed_adams", False, _FIXED_ADAMS_OPTIONS, adams.fixed_adams_loop,
                              lambda o: adams.fixed_adams_options(o, implicit=True)),
    "adams": LoopMethod("adams", True, ("max_order", "first_step", "max_num_steps", "safety", "ifactor", "norm",
                                        "dtype"),
                        adaptive_adams.adaptive_adams_loop, adaptive_adams.adaptive_adams_options),
    "scipy_solver": LoopMethod("scipy_solver", True, ("solver", "min_step", "max_step", "first_step", "norm", "dtype"),
                               scipy_solver.scipy_loop, scipy_solver.scipy_options),
}
