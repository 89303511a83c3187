"""``method="scipy_solver"``: the forward solve by :func:`scipy.integrate.solve_ivp` (torchdiffeq 0.2.5 semantics).

Options: ``solver`` (a ``solve_ivp`` method: ``LSODA`` (default), ``RK45``, ``RK23``, ``DOP853``, ``BDF``,
``Radau``), ``min_step`` (default 0; LSODA only, as SciPy), ``max_step`` (default inf), ``first_step``;
``norm`` is accepted and ignored (SciPy uses its own error norm). ``rtol``/``atol`` go to SciPy as given.

- The state travels as a flat float64 NumPy vector on the host; ``func`` is called under ``no_grad`` with the
  time and state as tensors of the state's dtype on its device (one device round trip per evaluation), so
  the solution carries **no autograd graph**: with :func:`odeint` no gradient flows through SciPy (as in
  torchdiffeq). :func:`odeint_adjoint` gives gradients: its backward solve of the augmented system uses
  ``scipy_solver`` too (same ``solver``) unless ``adjoint_method`` names another method.
- Work: ``nfe_forward`` counts every call SciPy makes of ``func``, including those for finite-difference
  Jacobians (BDF, Radau; LSODA in its stiff mode), which SciPy's own ``nfev`` leaves out for BDF/Radau.
  Step counters stay 0 (``solve_ivp`` does not report its steps).
- A failed solve raises :class:`StepSizeUnderflowError` (SciPy's "step size ... less than spacing") or
  :class:`SolverError` with SciPy's message; a non-finite result raises :class:`NonFiniteStateError`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .errors import NonFiniteStateError, SolverError, StepSizeUnderflowError
from .integrate import SolveSettings, WorkCounts

__all__ = ["SCIPY_SOLVERS", "scipy_options", "scipy_loop"]

SCIPY_SOLVERS = ("LSODA", "RK45", "RK23", "DOP853", "BDF", "Radau")


def scipy_options(opts: dict) -> dict:
    """Validate ``solver``, ``min_step`` and ``max_step``; returns the loop's ``extra`` settings."""
    solver = opts.get("solver", "LSODA")
    if solver not in SCIPY_SOLVERS:
        raise ValueError(f"options['solver']={solver!r} is not a solve_ivp method; valid: {', '.join(SCIPY_SOLVERS)}")
    out = {"solver": solver}
    for name, default in (("min_step", 0.0), ("max_step", math.inf)):
        value = opts.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or math.isnan(value):
            raise ValueError(f"options[{name!r}] must be a number >= 0; got {value!r}")
        out[name] = float(value)
    if out["max_step"] == 0.0:
        raise ValueError("options['max_step'] must be positive")
    return out


def scipy_loop(func, y0: torch.Tensor, s_times: list[float], direction: float, st: SolveSettings,
               counts: WorkCounts, on_output=None, on_accept=None) -> torch.Tensor:
    """Solve through SciPy (module docstring); signature and return value as :func:`.integrate` (without
    ``on_accept``: SciPy does not report its steps, so neither events nor checkpoints run on it)."""
    from scipy.integrate import solve_ivp

    if on_accept is not None:
        raise ValueError("method 'scipy_solver' does not report its steps: event_fn and grad=checkpoint need "
                         "another method (e.g. dopri5)")

    n_times = len(s_times)
    jump_mode = on_output is not None
    if n_times == 1:
        return y0 if jump_mode else y0.unsqueeze(0)
    dtype, device = y0.dtype, y0.device
    solver = st.extra["solver"]

    last_s = [s_times[0]]  # where SciPy last evaluated: the failure's location (sol.t holds only t_eval)

    def fun(s: float, z: np.ndarray) -> np.ndarray:
        counts.nfe += 1
        last_s[0] = float(s)
        with torch.no_grad():
            y = torch.from_numpy(np.ascontiguousarray(z)).to(device=device, dtype=dtype)
            f = func(direction * float(s), y)
            return (f * direction).detach().to("cpu", torch.float64).numpy()

    kwargs = {"method": solver, "rtol": st.rtol, "atol": st.atol, "max_step": st.extra["max_step"]}
    if solver == "LSODA":
        kwargs["min_step"] = st.extra["min_step"]
    if st.controller.first is not None:
        kwargs["first_step"] = st.controller.first

    def solve(z0: np.ndarray, times: list[float]) -> np.ndarray:
        sol = solve_ivp(fun, (times[0], times[-1]), z0, t_eval=times, **kwargs)
        if not sol.success or sol.y.shape[1] != len(times):
            where = f"at t={direction * last_s[0]:.6g}"
            message = (f"scipy_solver ({solver}) failed {where} after {counts.nfe} function evaluations: "
                       f"{str(sol.message).rstrip('.')}")
            if "step size" in str(sol.message).lower():
                raise StepSizeUnderflowError(message + "; the problem is stiff or singular: try solver=BDF or "
                                             "Radau, or loosen rtol/atol")
            raise SolverError(message + "; loosen rtol/atol or try another options['solver']")
        if not np.isfinite(sol.y).all():
            raise NonFiniteStateError(f"the state became non-finite in scipy_solver ({solver}) after "
                                      f"{counts.nfe} function evaluations; the dynamics blow up")
        return sol.y.T  # (len(times), N)

    to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)
    z0 = y0.detach().to("cpu", torch.float64).numpy()
    if not jump_mode:
        return to_tensor(solve(z0, list(s_times)))
    y = y0
    for i in range(1, n_times):
        end = solve(y.detach().to("cpu", torch.float64).numpy(), [s_times[i - 1], s_times[i]])[-1]
        y = on_output(i, to_tensor(end))
    return y
