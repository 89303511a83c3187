"""Step callbacks on ``func``, with torchdiffeq 0.2.5's names, arguments and rules.

If ``func`` (any object) has ``callback_step(t0, y0, dt)``, the solver calls it before every step attempt;
``callback_accept_step`` / ``callback_reject_step`` after the attempt's error test, with the same arguments.
``t0`` is the step's start in the user's time, ``y0`` the state there (a tuple for tuple states), ``dt`` the
attempted step size, positive whatever the direction of time; ``t0`` and ``dt`` are 0-dim tensors (float64
for adaptive methods, ``t``'s dtype on a fixed grid). The adjoint's backward solve calls the same hooks with
``_adjoint`` appended to the names, with torchdiffeq's augmented state ``(t_adj, y, a, *param_adjoints)`` as
``y0`` (``y`` and ``a`` flat for tuple states) and the forward solve's solver time as ``t0`` (that is ``t``,
or ``-t`` for decreasing ``t``).

Which methods call what (torchdiffeq's ``valid_callbacks``): adaptive Runge-Kutta methods (and neode's adaptive
``adams``) all three; fixed grids (Runge-Kutta and Adams) only ``callback_step``, once per grid step, and not
in event mode; ``scipy_solver`` none. A callback the method does not call gives a warning naming it, for the
forward solve when it starts and for the backward solve when it starts.

With no callbacks the loop's only cost is a ``None`` check per attempt (:func:`step_callbacks` returns None).
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch

__all__ = ["CALLBACK_NAMES", "ADJOINT_CALLBACK_NAMES", "StepCallbacks", "step_callbacks", "supported_callbacks"]

CALLBACK_NAMES = ("callback_step", "callback_accept_step", "callback_reject_step")
ADJOINT_CALLBACK_NAMES = tuple(name + "_adjoint" for name in CALLBACK_NAMES)


def supported_callbacks(method: Optional[str], adaptive: bool) -> tuple[str, ...]:
    """The callbacks ``method`` calls (see the module docstring)."""
    if method == "scipy_solver":
        return ()
    return CALLBACK_NAMES if adaptive else CALLBACK_NAMES[:1]


def _ignore(s: float, y: torch.Tensor, h: float) -> None:
    return None


class StepCallbacks:
    """The user's callbacks as the loops call them: ``step/accept/reject(s, y, h)`` with solver time ``s``, the
    flat state ``y`` and step size ``h``; each converts to the user's ``(t0, y0, dt)`` (missing ones do nothing)."""

    def __init__(self, found: dict[str, Callable], time: Callable[[float], float], state: Callable,
                 t_dtype: torch.dtype, device: torch.device):
        self._time, self._state, self._dtype, self._device = time, state, t_dtype, device
        self.step = self._bind(found.get(CALLBACK_NAMES[0]))
        self.accept = self._bind(found.get(CALLBACK_NAMES[1]))
        self.reject = self._bind(found.get(CALLBACK_NAMES[2]))

    def _bind(self, callback: Optional[Callable]):
        if callback is None:
            return _ignore
        dtype, device, time, state = self._dtype, self._device, self._time, self._state

        def call(s: float, y: torch.Tensor, h: float) -> None:
            callback(torch.tensor(time(s), dtype=dtype, device=device), state(y),
                     torch.tensor(h, dtype=dtype, device=device))

        return call


def step_callbacks(func, names: tuple[str, ...], *, method: Optional[str], adaptive: bool,
                   time: Callable[[float], float], state: Callable, t_dtype: torch.dtype,
                   device: torch.device) -> Optional[StepCallbacks]:
    """The callbacks among ``names`` (:data:`CALLBACK_NAMES` or :data:`ADJOINT_CALLBACK_NAMES`) that ``func``
    has, for a solve with ``method``; ``None`` when it has none the method calls.

    Warns (as torchdiffeq) naming those the method does not call. ``time(s)`` turns solver time into the time the
    callbacks receive, ``state(y)`` the flat state into theirs; ``t0``/``dt`` are made with ``t_dtype`` (fixed
    grid) or float64 (adaptive).
    """
    present = {plain: getattr(func, name) for plain, name in zip(CALLBACK_NAMES, names)
               if getattr(func, name, None) is not None}
    if not present:
        return None
    valid = supported_callbacks(method, adaptive)
    unsupported = sorted(name for plain, name in zip(CALLBACK_NAMES, names) if plain in present and
                         plain not in valid)
    if unsupported:
        calls = ", ".join(n for p, n in zip(CALLBACK_NAMES, names) if p in valid) or "none"
        warnings.warn(f"Solver '{method or 'dopri5'}' does not support callbacks "
                      f"{{{', '.join(map(repr, unsupported))}}}; it calls {calls}", stacklevel=4)
    found = {plain: cb for plain, cb in present.items() if plain in valid}
    if not found:
        return None
    return StepCallbacks(found, time, state, torch.float64 if adaptive else t_dtype, device)


def attach_callbacks(func, settings, problem, t: torch.Tensor, method: Optional[str]) -> None:
    """Set ``settings.callbacks`` to ``func``'s forward callbacks for this solve (``problem`` normalised it,
    ``t`` is the user's time tensor); warns about those ``method`` does not call."""
    direction = problem.direction
    settings.callbacks = step_callbacks(func, CALLBACK_NAMES, method=method, adaptive=settings.controller.needs_error,
                                        time=lambda s: direction * s, state=problem.unflatten_state,
                                        t_dtype=t.dtype, device=t.device)
