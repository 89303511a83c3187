"""``method="adams"``: adaptive variable-step, variable-order Adams (PECE, orders 1-12), in torch.

The formulation is the variable-coefficient one of Shampine & Gordon ("Computer Solution of Ordinary
Differential Equations: the Initial Value Problem", 1975, the DE/STEP codes; also Hairer, Norsett & Wanner,
Solving ODEs I, III.5): the past derivatives are kept as *modified divided differences*

    Phi_0(n) = f_n,   Phi_j(n) = Phi_{j-1}(n) - beta_{j-1}(n) Phi_{j-1}(n-1),
    psi_i(n) = x_n - x_{n-i},   beta_j(n+1) = prod_{i=1..j} psi_i(n+1) / psi_i(n),

(``Phi_j(n) = prod_{i<=j} psi_i(n) * f[x_n, ..., x_{n-j}]``; with a constant step they are the backward
differences), so a step of any size from ``x_n`` to ``x_{n+1} = x_n + h`` is

    predict   y^p = y_n + h sum_{j<k} G_j Phi*_j,       Phi*_j = beta_j(n+1) Phi_j(n)    (Adams-Bashforth, order k)
    evaluate  f^p = f(x_{n+1}, y^p),   E = f^p - sum_{j<k} Phi*_j                       (= Phi_k(n+1) from f^p)
    correct   y_{n+1} = y^p + h G_k E                                                   (Adams-Moulton, order k+1)
    evaluate  f_{n+1} = f(x_{n+1}, y_{n+1})  (accepted steps only: two evaluations per step)

with ``G_j = int_0^1 prod_{i<j} (s h + psi_i(n)) / psi_{i+1}(n+1) ds`` computed exactly on the host (the
integrand is a polynomial in ``s``). The local error of order k is estimated as ``h |G_k - G_{k-1}| E`` (the
difference between the Adams-Moulton formulas of orders k and k+1, Shampine & Gordon's ERK); the same estimates
for orders k-2, k-1 and k+1 choose the next order (lower when they are not larger, Shampine & Gordon's test;
higher when the order k+1 estimate is smaller after k+1 steps at this order). The next step is
``h * clip(safety * ratio**(-1/(order+1)), 0.5, ifactor)`` (accepted; ``ifactor`` default 2, the usual limit
for variable-coefficient Adams) or ``clip(..., 0.1, 0.9)`` (rejected; after three failures in a row the
order drops to 1). The solve starts at order 1 and raises the order by one per step while the estimates allow.
Outputs inside a step come from the step's own interpolating polynomial (no extra evaluations); the last
step, and in jump mode every step, is shortened to end on the output time, and after a jump of the state
(the adjoint's backward solve) the history restarts at order 1.

Options: ``max_order`` (1..12, default 12), ``first_step``, ``max_num_steps``, ``safety`` (default 0.9),
``ifactor`` (default 2), ``norm``, ``dtype``. Work: ``nfe_forward = 1 (f(t0)) + 1 (first-step probe, none with
first_step) + attempts + accepted steps``. Host synchronisation: the error ratios of each attempt.
"""

from __future__ import annotations

import math

import torch

from . import control
from .errors import NonFiniteStateError, StepSizeUnderflowError, TooManyStepsError
from .integrate import SolveSettings, WorkCounts, _where

__all__ = ["adaptive_adams_options", "adaptive_adams_loop", "MAX_ORDER"]

MAX_ORDER = 12
_MAX_NONFINITE_REJECTS = 30


def adaptive_adams_options(opts: dict) -> dict:
    """Validate ``max_order`` (``ifactor`` defaults to 2 here); returns the loop's ``extra`` settings."""
    max_order = opts.get("max_order", MAX_ORDER)
    if not isinstance(max_order, int) or isinstance(max_order, bool) or not 1 <= max_order <= MAX_ORDER:
        raise ValueError(f"options['max_order'] must be an integer in [1, {MAX_ORDER}]; got {max_order!r}")
    ifactor = opts.get("ifactor", 2.0)  # (validated as a number >= 1 by make_settings)
    return {"max_order": max_order, "ifactor": float(ifactor) if isinstance(ifactor, (int, float)) else ifactor}


def _coefficients(h: float, psi: list[float], n: int, theta: float = 1.0) -> list[float]:
    """``G_j = int_0^theta prod_{i<j} (s h + psi_i) / (h + psi_i) ds`` for ``j = 0..n-1`` (``psi_0 = 0``).

    ``psi[i-1]`` holds ``psi_i(n) = x_n - x_{n-i}``. Host floats; the polynomial is built factor by factor.
    """
    poly = [1.0]  # ascending coefficients in s
    out = []
    for j in range(n):
        out.append(sum(c * theta ** (m + 1) / (m + 1) for m, c in enumerate(poly)))
        if j == n - 1:
            break
        prev = psi[j - 1] if j > 0 else 0.0
        a, b = h / (h + prev), prev / (h + prev)
        poly = [b * poly[0]] + [a * poly[m - 1] + b * poly[m] for m in range(1, len(poly))] + [a * poly[-1]]
    return out


def _combine(base: torch.Tensor, terms, scale: float) -> torch.Tensor:
    """``base + scale * sum_j w_j v_j`` for ``terms = [(w_j, v_j), ...]`` (fused adds, out of place first)."""
    out = base
    for w, v in terms:
        if w != 0.0:
            out = out.add(v, alpha=w * scale) if out is base else out.add_(v, alpha=w * scale)
    return out.clone() if out is base else out


def adaptive_adams_loop(func, y0: torch.Tensor, s_times: list[float], direction: float, st: SolveSettings,
                        counts: WorkCounts, on_output=None, on_accept=None) -> torch.Tensor:
    """The adaptive Adams loop (module docstring); signature and return value as :func:`.integrate`."""
    max_order = st.extra["max_order"]
    n_times = len(s_times)
    jump_mode = on_output is not None
    if n_times == 1:
        return y0 if jump_mode else y0.unsqueeze(0)
    ifactor = st.extra["ifactor"]
    outputs = [y0.unsqueeze(0)]
    s, y = s_times[0], y0
    f = func(direction * s, y)
    counts.nfe += 1

    def start_step(f_: torch.Tensor, y_: torch.Tensor) -> float:
        if st.controller.first is not None:
            return abs(st.controller.first)

        def probe(h0: float) -> torch.Tensor:
            counts.nfe += 1
            return func(direction * (s + h0), y_ + (direction * h0) * f_)

        h0, d0, d1 = control.initial_step(f_, y_, probe, st.rtol, st.atol, st.norm, 1)
        if not (math.isfinite(d0) and math.isfinite(d1)):
            raise NonFiniteStateError(
                f"non-finite initial state or vector field {_where(direction * s, 0.0, counts.nfe)}; "
                "check y0 and the vector field (inputs, parameters) for NaN/inf")
        return h0

    h = start_step(f, y)
    phi = [f]          # Phi_0(n), Phi_1(n), ...: modified divided differences of f (real-time derivatives)
    psi: list[float] = []  # psi_i(n) = x_n - x_{n-i}, i = 1, 2, ... (solver time)
    k = 1              # order of the next step
    steps_at_order, starting, fails, nonfinite = 0, True, 0, 0
    with torch.no_grad():
        abs_y = y.abs()
    i = 1
    s_end = s_times[-1]
    while i < n_times:
        s_stop = s_times[i] if jump_mode else s_end
        remaining = s_stop - s
        clipped = h * (1.0 + 1e-10) >= remaining
        h_try = remaining if clipped else h
        if h_try <= 4.0 * st.time_eps * max(1.0, abs(s)):
            raise StepSizeUnderflowError(
                f"step size underflow {_where(direction * s, h_try, counts.nfe)} (adams, order {k}); the "
                "problem is stiff or singular: loosen rtol/atol, try solver=lsoda (BDF when stiff) or regularise")
        if counts.accepted + counts.rejected >= st.max_num_steps:
            raise TooManyStepsError(
                f"max_num_steps={st.max_num_steps} reached {_where(direction * s, h_try, counts.nfe)} "
                "(adams); raise max_num_steps or loosen rtol/atol")
        dt = direction * h_try
        if st.callbacks is not None:
            st.callbacks.step(s, y, h_try)
        kk = min(k, len(phi))
        n_coef = kk + 2 if len(phi) > kk else kk + 1  # G_{k+1} only when the order k+1 estimate exists
        # psi_{i+1}(n+1) = h + psi_i(n) and beta_j(n+1) = prod_{i<=j} psi_i(n+1) / psi_i(n)
        betas = [1.0]
        for j in range(1, min(len(phi), kk + 1)):
            betas.append(betas[-1] * (h_try + (psi[j - 2] if j >= 2 else 0.0)) / psi[j - 1])
        g = _coefficients(h_try, psi, n_coef)
        phi_star = [phi[j] if betas[j] == 1.0 else phi[j] * betas[j] for j in range(len(betas))]
        y_pred = _combine(y, [(g[j], phi_star[j]) for j in range(kk)], dt)
        f_pred = func(direction * (s + h_try), y_pred)
        counts.nfe += 1
        e = f_pred - sum_terms(phi_star[:kk])
        y1 = y_pred.add(e, alpha=g[kk] * dt)
        with torch.no_grad():
            abs_y1 = y1.abs()
            scale = torch.maximum(abs_y, abs_y1).mul_(st.rtol).add_(st.atol)
            # error estimates of orders kk, kk-1, kk-2, kk+1 (Phi_j(n+1) from f^p, by partial sums)
            ratio = st.norm(e * (abs(dt) * abs(g[kk] - g[kk - 1]) if kk >= 1 else 0.0) / scale)
            r_lo = r_lo2 = r_hi = math.inf
            if kk >= 2:
                d1 = e + phi_star[kk - 1]
                r_lo = st.norm(d1 * (abs(dt) * abs(g[kk - 1] - g[kk - 2])) / scale)
                if kk >= 3:
                    r_lo2 = st.norm((d1 + phi_star[kk - 2]) * (abs(dt) * abs(g[kk - 2] - g[kk - 3])) / scale)
            if len(phi_star) > kk and kk + 1 < len(g):
                r_hi = st.norm((e - phi_star[kk]) * (abs(dt) * abs(g[kk + 1] - g[kk])) / scale)
        lower = kk >= 2 and ((r_lo <= 0.5 * ratio) if kk == 2 else (max(r_lo, r_lo2) <= ratio))
        accepted = math.isfinite(ratio) and ratio <= 1.0
        if st.callbacks is not None:
            (st.callbacks.accept if accepted else st.callbacks.reject)(s, y, h_try)
        if accepted:
            counts.accepted += 1
            fails, nonfinite = 0, 0
            f1 = func(direction * (s + h_try), y1)
            counts.nfe += 1
            new_phi = [f1]
            for j in range(1, min(len(phi_star), max_order) + 1):
                new_phi.append(new_phi[-1] - phi_star[j - 1])
            new_psi = [h_try] + [h_try + p for p in psi[:max_order]]
            s_new = s_stop if clipped else s + h_try
            if on_accept is not None and on_accept(s, h_try, s_new, y, y1,
                                                   _step_polynomial(y, phi_star, e, psi, h_try, kk, dt)):
                break
            j_end = i
            if jump_mode:
                j_end = i + 1 if clipped else i
            else:  # outputs inside the step: the step's own polynomial at theta; at its end: y1
                while j_end < n_times and s_times[j_end] <= s_new:
                    if s_times[j_end] >= s_new:
                        outputs.append(y1.unsqueeze(0))
                    else:
                        theta = (s_times[j_end] - s) / h_try
                        outputs.append(_step_polynomial(y, phi_star, e, psi, h_try, kk, dt)([theta]))
                    j_end += 1
            s, y, abs_y = s_new, y1, abs_y1
            phi, psi = new_phi, new_psi
            steps_at_order += 1
            # order for the next step
            k_new, r_new = kk, ratio
            if lower:
                k_new, r_new = kk - 1, r_lo
                starting = False
            elif kk < max_order and len(phi) > kk + 1 and math.isfinite(r_hi) and \
                    (starting or steps_at_order >= kk + 1) and (r_hi < (0.5 * ratio if kk == 1 else ratio)):
                k_new, r_new = kk + 1, r_hi
            elif starting and kk < max_order:
                starting = False
            if k_new != kk:
                steps_at_order = 0
            k = k_new
            factor = 2.0 if r_new == 0.0 else st.controller.safety * r_new ** (-1.0 / (k + 1))
            h_next = h_try * min(ifactor, max(0.5, factor))
            h = max(h_next, h) if clipped else h_next
            if jump_mode and j_end > i:
                y = on_output(i, y)
                with torch.no_grad():
                    abs_y = y.abs()
                if i + 1 < n_times:  # the state jumped: restart the history at order 1
                    f = func(direction * s, y)
                    counts.nfe += 1
                    phi, psi, k, steps_at_order, starting = [f], [], 1, 0, True
                    h = min(h, start_step(f, y))
            i = j_end
        else:
            counts.rejected += 1
            starting = False
            if not math.isfinite(ratio):
                nonfinite += 1
                if nonfinite > _MAX_NONFINITE_REJECTS:
                    raise NonFiniteStateError(
                        f"the state became non-finite {_where(direction * s, h_try, counts.nfe)} (adams); the "
                        "dynamics blow up: lower the learning rate, normalise inputs or regularise the dynamics")
                k, h = 1, h_try * 0.25
                continue
            fails += 1
            if fails >= 3:
                k, h = 1, h_try * 0.25
            else:
                k = kk - 1 if lower else kk
                h = h_try * min(0.9, max(0.1, st.controller.safety * ratio ** (-1.0 / (kk + 1))))
            steps_at_order = 0
    if jump_mode:
        return y
    return torch.cat(outputs, dim=0)


def _step_polynomial(y: torch.Tensor, phi_star: list, e: torch.Tensor, psi: list[float], h: float, k: int,
                     dt: float):
    """The accepted step's own interpolating polynomial (order ``k`` + 1) at step fractions: ``(m, N)``."""
    def interpolate(thetas) -> torch.Tensor:
        rows = []
        for theta in thetas:
            gt = _coefficients(h, psi, k + 1, theta)
            terms = [(gt[j], phi_star[j]) for j in range(k)] + [(gt[k], e)]
            rows.append(_combine(y, terms, dt))
        return torch.stack(rows)

    return interpolate


def sum_terms(values) -> torch.Tensor | float:
    """Sum of a list of tensors (0.0 for an empty list)."""
    out = 0.0
    for v in values:
        out = v + out if isinstance(out, float) else out + v
    return out
