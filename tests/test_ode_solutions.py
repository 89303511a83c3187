"""The solver core against exact solutions: every method, tuple/batched states, reversed time, orders."""

import math

import pytest
import torch

from neode_cli.ode import collect_stats, odeint, odeint_adjoint
from neode_cli.ode.tableaux import ADAPTIVE_METHODS, FIXED_METHODS, TABLEAUX

METHODS = tuple(TABLEAUX)  # the Runge-Kutta methods (Adams and SciPy: test_ode_adams.py, test_ode_scipy.py)

A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)  # damped rotation


def linear_field(t, y):
    return y @ A.T.to(y.dtype)


def linear_exact(y0, t, t0=None):
    t0 = t[0] if t0 is None else t0
    return torch.stack([y0 @ torch.linalg.matrix_exp(A * (ti - t0)).T.to(y0.dtype) for ti in t.double()])


def _options(method, step_size=0.01):
    return {"step_size": step_size} if method in FIXED_METHODS else None


# Tolerance (adaptive; low orders looser to stay fast) or step 0.01 (fixed), and the error bound (max over
# outputs) each method must meet on the damped rotation over [0, 2].
TOLS = {"adaptive_heun": 1e-6, "fehlberg2": 1e-6, "bosh3": 1e-7}
BOUNDS = {"euler": 0.1, "midpoint": 1e-3, "heun2": 1e-3, "heun3": 1e-5, "rk4": 1e-7, "adaptive_heun": 1e-5,
          "fehlberg2": 1e-3, "bosh3": 1e-5, "dopri5": 1e-7, "tsit5": 1e-7, "dopri8": 1e-5}


@pytest.mark.parametrize("method", METHODS)
def test_linear_system_batched_forward_and_reversed(method):
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.0, -1.0]], dtype=torch.float64)  # batch of 3
    t = torch.linspace(0.0, 2.0, 7, dtype=torch.float64)
    tol = TOLS.get(method, 1e-8)
    ys = odeint(linear_field, y0, t, rtol=tol, atol=tol, method=method, options=_options(method))
    assert ys.shape == (7, 3, 2)
    assert (ys - linear_exact(y0, t)).abs().max() < BOUNDS[method]
    t_rev = t.flip(0)
    ys_rev = odeint(linear_field, y0, t_rev, rtol=tol, atol=tol, method=method, options=_options(method))
    assert (ys_rev - linear_exact(y0, t_rev)).abs().max() < BOUNDS[method] * 3


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "rk4"])
def test_time_dependent_scalar(method):
    # y' = cos(t) y  ->  y = y0 exp(sin t - sin t0)
    t = torch.tensor([0.5, 1.0, 2.0, 3.5], dtype=torch.float64)
    y0 = torch.tensor(2.0, dtype=torch.float64)
    ys = odeint(lambda t, y: torch.cos(t) * y, y0, t, rtol=1e-9, atol=1e-10, method=method,
                options=_options(method, 0.005))
    exact = 2.0 * torch.exp(torch.sin(t) - math.sin(0.5))
    assert ys.shape == (4,)
    assert torch.allclose(ys, exact, atol=1e-7, rtol=0)


def test_tuple_state_matches_exact():
    # (x, v) harmonic oscillator with a scalar and a vector component of different shapes.
    def field(t, state):
        x, v = state
        return v.reshape(x.shape), -x.reshape(v.shape)

    x0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    v0 = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    t = torch.linspace(0, 3, 5, dtype=torch.float64)
    xs, vs = odeint(field, (x0, v0), t, rtol=1e-9, atol=1e-10)
    assert xs.shape == (5, 2) and vs.shape == (5, 2, 1)
    exact_x = torch.stack([torch.cos(t), torch.sin(t)], dim=1)
    assert torch.allclose(xs, exact_x, atol=1e-7)
    assert torch.allclose(vs[..., 0], torch.stack([-torch.sin(t), torch.cos(t)], dim=1), atol=1e-7)
    xs_a, vs_a = odeint_adjoint(field, (x0, v0), t, rtol=1e-9, atol=1e-10)
    assert torch.allclose(xs_a, xs) and torch.allclose(vs_a, vs)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dopri8", "rk4"])
def test_many_output_times_use_dense_output(method):
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0, 4, 201, dtype=torch.float64)
    tol = 1e-7 if method == "bosh3" else 1e-9
    with collect_stats() as dense:
        ys = odeint(linear_field, y0, t, rtol=tol, atol=tol, method=method, options=_options(method, 0.05))
    bound = {"rk4": 1e-5, "bosh3": 1e-5, "dopri8": 1e-5}.get(method, 1e-7)
    assert (ys - linear_exact(y0, t)).abs().max() < bound
    # the outputs come from the interpolant: the same steps as with the end point only
    with collect_stats() as ends:
        odeint(linear_field, y0, t[[0, -1]], rtol=tol, atol=tol, method=method, options=_options(method, 0.05))
    assert dense.steps_accepted == ends.steps_accepted and dense.steps_rejected == ends.steps_rejected


@pytest.mark.parametrize("dtype,tol,bound", [(torch.float32, 1e-5, 1e-4), (torch.float64, 1e-9, 1e-8)])
def test_float32_and_float64(dtype, tol, bound):
    y0 = torch.tensor([[1.0, 0.5]], dtype=dtype)
    t = torch.linspace(0, 2, 5, dtype=dtype)
    ys = odeint(linear_field, y0, t, rtol=tol, atol=tol)
    assert ys.dtype == dtype
    assert (ys.double() - linear_exact(y0.double(), t.double())).abs().max() < bound


def test_single_output_time_returns_initial_state():
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    ys = odeint(linear_field, y0, torch.tensor([0.3], dtype=torch.float64))
    assert ys.shape == (1, 2) and torch.equal(ys[0], y0)


def _measured_order(method, field, exact_end, y0, t_end, steps):
    errors = []
    for n in steps:
        t = torch.tensor([0.0, t_end], dtype=torch.float64)
        ys = odeint(field, y0, t, method=method, options={"step_size": t_end / n})
        errors.append((ys[-1] - exact_end).abs().max().item())
    # least-squares slope of log(error) against log(h)
    xs = [math.log(t_end / n) for n in steps]
    ls = [math.log(e) for e in errors]
    mx, ml = sum(xs) / len(xs), sum(ls) / len(ls)
    return sum((x - mx) * (l - ml) for x, l in zip(xs, ls)) / sum((x - mx) ** 2 for x in xs)


@pytest.mark.parametrize("method", FIXED_METHODS)
def test_fixed_methods_converge_at_declared_order(method):
    # Non-autonomous, nonlinear: y' = -y^2 + cos(t) y; reference by dopri8 at tight tolerance.
    def field(t, y):
        return -y * y + torch.cos(t) * y

    y0 = torch.tensor([0.8, 1.5], dtype=torch.float64)
    reference = odeint(field, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=1e-13, atol=1e-14,
                       method="dopri8")[-1]
    order = _measured_order(method, field, reference, y0, 1.0, [16, 32, 64])
    assert abs(order - TABLEAUX[method].order) < 0.3, order


@pytest.mark.parametrize("method", ADAPTIVE_METHODS)
def test_adaptive_error_shrinks_with_tolerance(method):
    y0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.7, 2.0], dtype=torch.float64)
    exact = linear_exact(y0, t)
    errors = []
    for tol in (1e-3, 1e-4, 1e-5) if TABLEAUX[method].order < 3 else (1e-3, 1e-5, 1e-7):
        ys = odeint(linear_field, y0, t, rtol=tol, atol=tol, method=method)
        errors.append((ys - exact).abs().max().item())
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < (1e-2 if TABLEAUX[method].order < 3 else 1e-4)
