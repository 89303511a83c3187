"""One explicit Runge-Kutta step given a tableau, and dense output inside a step.

The state is always a flat tensor ``y`` of shape ``(N,)`` here (the public API flattens once). Stage
combinations ``y0 + dt * sum_j a_ij k_j`` are chains of fused ``add``/``add_`` with Python-float
coefficients (``alpha=``), skipping zero entries: no coefficient tensors, no intermediate products. In-place
accumulation is safe under autograd because additions save nothing for backward.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch

from .tableaux import Tableau

__all__ = ["StepPlan", "rk_stages", "combine", "dense_weights", "dense_output", "INTERP_NAMES", "check_interp",
           "linear_variant"]

Coeffs = tuple[tuple[int, float], ...]

#: Fixed-grid option ``interp``: how outputs (and event times) between grid points are interpolated.
#: ``"cubic"`` (neode's default) is the method's own interpolant (the cubic Hermite one through both ends for
#: the fixed-grid methods); ``"linear"`` is the straight line through ``y0`` and ``y1`` (torchdiffeq's default).
INTERP_NAMES = ("linear", "cubic")


def check_interp(value) -> str:
    """Validate the ``interp`` option (``None`` means ``"cubic"``); ValueError naming the choices otherwise."""
    if value is None:
        return "cubic"
    if not isinstance(value, str) or value not in INTERP_NAMES:
        raise ValueError(f"Unknown interpolation method {value!r} (options['interp']); valid: {', '.join(INTERP_NAMES)}")
    return value


def linear_variant(tab: Tableau) -> Tableau:
    """``tab`` with the linear interpolant ``y0 + theta (y1 - y0)`` as its dense output (``interp="linear"``).

    Linear interpolation is ``y0 + theta dt sum_i b_i k_i``: degree-one polynomials ``b_i theta``, and weight 0
    for ``f(t1, y1)``, which is therefore never evaluated for it (see :attr:`StepPlan.dense_uses_f1`).
    """
    weights = list(tab.b) if tab.fsal else list(tab.b) + [0.0]
    return dataclasses.replace(tab, name=f"{tab.name}/linear", dense=tuple((w,) for w in weights),
                               interpolant="linear")


class StepPlan:
    """A tableau compiled for the loop: non-zero coefficients as ``(stage index, value)`` pairs."""

    def __init__(self, tab: Tableau):
        self.tab = tab
        self.c = tab.c
        self.stage_coeffs: tuple[Coeffs, ...] = tuple(_nonzero(row) for row in tab.a)
        self.b: Coeffs = _nonzero(tab.b)
        self.err: Coeffs = _nonzero(tab.b_err) if tab.b_err is not None else ()
        # FSAL: the last stage is evaluated at y1 itself, so y1 is that stage's argument.
        self.y1_is_last_stage = tab.fsal and tuple(tab.a[-1]) == tuple(tab.b[:-1]) and tab.b[-1] == 0.0
        self.dense = tab.dense
        # The dense output needs f(t1, y1) unless the method is FSAL (then it is a stage) or the interpolant
        # gives it weight 0 (linear).
        self.dense_uses_f1 = not tab.fsal and tab.interpolant != "linear"
        self.dense_tensors: dict = {}  # dense coefficients per (dtype, device), made on first use


def _nonzero(row: Sequence[float]) -> Coeffs:
    return tuple((j, float(v)) for j, v in enumerate(row) if v != 0.0)


def combine(base: torch.Tensor | None, ks: Sequence[torch.Tensor], coeffs: Coeffs, scale: float) -> torch.Tensor:
    """``base + scale * sum_j coeffs_j ks[j]`` (``base`` may be None: then just the sum)."""
    out = None
    for j, value in coeffs:
        if out is None:
            out = torch.mul(ks[j], value * scale) if base is None else torch.add(base, ks[j], alpha=value * scale)
        else:
            out.add_(ks[j], alpha=value * scale)
    if out is None:
        out = base.clone() if base is not None else torch.zeros_like(ks[0])
    return out


def rk_stages(func: Callable[[float, torch.Tensor], torch.Tensor], t0: float, dt: float, y0: torch.Tensor,
              k1: torch.Tensor, plan: StepPlan, t_end: float | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Stages 2..s of one step from ``(t0, y0)`` with first stage ``k1``; returns ``(y1, [k1..ks])``.

    ``func(t, y)`` takes the time as a Python float. For FSAL methods the last stage is ``f(t1, y1)``.
    ``t_end``, when given, is the time of the stages at the step's end (``c_i = 1``): the step's end nudged
    inside the step at a discontinuity (see :mod:`.stops`).
    """
    ks = [k1]
    c = plan.c
    y_stage = y0
    for i in range(1, len(c)):
        y_stage = combine(y0, ks, plan.stage_coeffs[i], dt)
        ks.append(func(t_end if t_end is not None and c[i] == 1 else t0 + c[i] * dt, y_stage))
    if plan.y1_is_last_stage:
        return y_stage, ks
    return combine(y0, ks, plan.b, dt), ks


def dense_weights(plan: StepPlan, thetas: Sequence[float]) -> list[list[float]]:
    """Weights ``W[m][i] = b_i(theta_m)`` of the extended stages at the step fractions ``thetas``."""
    weights = []
    for theta in thetas:
        row = []
        for coeffs in plan.dense:
            acc, power = 0.0, 1.0
            for coeff in coeffs:
                power *= theta
                acc += coeff * power
            row.append(acc)
        weights.append(row)
    return weights


def dense_output(y0: torch.Tensor, ks_ext: Sequence[torch.Tensor], dt: float, plan: StepPlan,
                 thetas: Sequence[float]) -> torch.Tensor:
    """The interpolant at fractions ``thetas`` of the step: shape ``(len(thetas), N)``, contiguous.

    Two small matrix products for all outputs inside the step: ``W = Theta @ P`` (powers of theta times the
    polynomial coefficients, ``(m, E)``), then ``y0 + dt * W @ K`` with the extended stages stacked as rows
    ``K`` ``(E, N)``.
    """
    key = (y0.dtype, y0.device)
    coeffs = plan.dense_tensors.get(key)
    if coeffs is None:  # (D, E): column i holds the coefficients of b_i(theta)
        coeffs = plan.dense_tensors[key] = torch.tensor(plan.dense, dtype=y0.dtype, device=y0.device).t()
    degree = coeffs.shape[0]
    powers = []
    for theta in thetas:
        power = 1.0
        for _ in range(degree):
            power *= theta
            powers.append(power)
    theta_powers = torch.tensor(powers, dtype=y0.dtype, device=y0.device).view(len(thetas), degree)
    stages = torch.stack(list(ks_ext))  # (E, N)
    return torch.addmm(y0.unsqueeze(0), theta_powers @ coeffs, stages, alpha=dt)
