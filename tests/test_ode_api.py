"""The public surface: validation, errors, statistics, and agreement with torchdiffeq and scipy."""

import pytest
import torch

from neode_cli.ode import (NonFiniteStateError, SolverError, StepSizeUnderflowError, TooManyStepsError,
                           collect_stats, odeint, odeint_adjoint)

A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)


def linear_field(t, y):
    return y @ A.T


def linear_exact(y0, t):
    return torch.stack([y0 @ torch.linalg.matrix_exp(A * (ti - t[0])).T for ti in t])


class CountingField:
    """Counts its own calls: the reference for the solver's NFE bookkeeping."""

    def __init__(self, func):
        self.func, self.calls = func, 0

    def __call__(self, t, y):
        self.calls += 1
        return self.func(t, y)


Y0 = torch.tensor([[1.0, 0.5], [0.2, -0.4]], dtype=torch.float64)
T = torch.linspace(0, 2, 5, dtype=torch.float64)


# --- validation --------------------------------------------------------------------------------------------
def test_unknown_method_lists_valid_ones():
    with pytest.raises(ValueError, match="valid methods: .*dopri5.*tsit5"):
        odeint(linear_field, Y0, T, method="rk45")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError, match="'grid'.*valid options: step_size"):
        odeint(linear_field, Y0, T, method="rk4", options=dict(grid="uniform", step_size=0.1))
    with pytest.raises(ValueError, match="'step_size'.*valid options: first_step"):
        odeint(linear_field, Y0, T, method="dopri5", options=dict(step_size=0.1))
    # None means absent, so configs may carry keys set to null
    odeint(linear_field, Y0, T, method="dopri5", options=dict(step_size=None))


@pytest.mark.parametrize("kwargs", [dict(rtol=-1e-3), dict(atol=-1.0), dict(rtol=0.0, atol=0.0)])
def test_invalid_tolerances_raise(kwargs):
    with pytest.raises(ValueError, match="rtol|atol"):
        odeint(linear_field, Y0, T, **kwargs)


@pytest.mark.parametrize("options", [dict(safety=1.5), dict(dfactor=0.0), dict(first_step=-0.1),
                                     dict(max_num_steps=0), dict(norm="l3")])
def test_invalid_option_values_raise(options):
    with pytest.raises(ValueError):
        odeint(linear_field, Y0, T, options=options)


def test_non_monotonic_times_and_bad_backend_raise():
    with pytest.raises(ValueError, match="strictly"):
        odeint(linear_field, Y0, torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="backend"):
        odeint(linear_field, Y0, T, backend="jax")


# --- errors ------------------------------------------------------------------------------------------------
def _assert_one_line_with_context(message):
    assert "\n" not in message
    assert "t=" in message and "step size" in message and "function evaluations" in message


def test_too_many_steps_error():
    with pytest.raises(TooManyStepsError) as info:
        odeint(linear_field, Y0, T, rtol=1e-10, atol=1e-10, options=dict(max_num_steps=5))
    _assert_one_line_with_context(str(info.value))
    assert "max_num_steps" in str(info.value)
    with pytest.raises(TooManyStepsError):
        odeint(linear_field, Y0, T, method="euler", options=dict(step_size=1e-3, max_num_steps=10))


def test_step_size_underflow_error_on_blow_up():
    # y' = y^2, y(0) = 1 blows up at t = 1.
    with pytest.raises(SolverError) as info:
        odeint(lambda t, y: y * y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64))
    assert isinstance(info.value, (StepSizeUnderflowError, NonFiniteStateError))
    _assert_one_line_with_context(str(info.value))
    t_fail = float(str(info.value).split("at t=")[1].split()[0])
    assert 0.99 <= t_fail <= 1.0


def test_non_finite_state_error():
    with pytest.raises(NonFiniteStateError) as info:
        odeint(lambda t, y: y * float("nan"), Y0, T)
    _assert_one_line_with_context(str(info.value))
    with pytest.raises(NonFiniteStateError):
        odeint(lambda t, y: torch.where(t > 0.5, torch.full_like(y, float("inf")), y), Y0, T)
    with pytest.raises(NonFiniteStateError):
        odeint(lambda t, y: y * float("inf"), Y0, T, method="rk4")


def test_stats_are_recorded_even_when_the_solve_fails():
    with collect_stats() as stats:
        with pytest.raises(TooManyStepsError):
            odeint(linear_field, Y0, T, rtol=1e-10, atol=1e-10, options=dict(max_num_steps=5))
    assert stats.steps_accepted + stats.steps_rejected == 5 and stats.nfe_forward > 0


# --- statistics ---------------------------------------------------------------------------------------------
def test_dopri5_forward_nfe_definition():
    field = CountingField(linear_field)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    with collect_stats() as stats:
        odeint(field, Y0, t, rtol=1e-6, atol=1e-8)
    assert stats.nfe_forward == field.calls
    # f(t0, y0) + one probe for the first step + 6 new stages per attempt (FSAL)
    assert stats.nfe_forward == 2 + 6 * (stats.steps_accepted + stats.steps_rejected)
    assert stats.solves == 1 and stats.nfe_backward == 0


def test_fixed_grid_nfe_definition():
    field = CountingField(linear_field)
    with collect_stats() as stats:
        odeint(field, Y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="rk4", options=dict(step_size=0.1))
    assert stats.steps_accepted == 10 and stats.nfe_forward == 40 == field.calls


def test_backprop_backward_nfe_counts_differentiated_evaluations():
    y0 = Y0.clone().requires_grad_(True)
    with collect_stats() as stats:
        ys = odeint(linear_field, y0, torch.tensor([0.0, 2.0], dtype=torch.float64), rtol=1e-6, atol=1e-8)
    assert stats.nfe_backward == 0
    ys.sum().backward()  # backward after the block still reaches the collector
    # every stage of every accepted step, except the last step's FSAL stage (used only for its error)
    assert stats.nfe_backward == 6 * stats.steps_accepted


def test_adjoint_backward_stats_and_nesting():
    field = CountingField(linear_field)
    y0 = Y0.clone().requires_grad_(True)
    with collect_stats() as outer:
        with collect_stats() as inner:
            ys = odeint_adjoint(field, y0, T, rtol=1e-6, atol=1e-8)
        forward_calls = field.calls
        ys.sum().backward()
    for stats in (outer, inner):
        assert stats.nfe_forward == forward_calls
        assert stats.nfe_backward == field.calls - forward_calls > 0
        assert stats.backward_steps_accepted > 0
    with collect_stats() as fresh:
        pass
    assert fresh.nfe_forward == 0


# --- agreement with the reference implementations ----------------------------------------------------------
@pytest.mark.parametrize("method,tol", [("dopri5", 1e-6), ("dopri5", 1e-9), ("bosh3", 1e-6), ("rk4", None),
                                        ("euler", None), ("midpoint", None)])
def test_agrees_with_torchdiffeq(method, tol):
    t = torch.linspace(0, 3, 4, dtype=torch.float64)
    kwargs = dict(rtol=tol, atol=tol) if tol else dict(options=dict(step_size=0.05))
    exact = linear_exact(Y0, t)
    results = {}
    for backend in ("neode", "torchdiffeq"):
        with collect_stats() as stats:
            ys = odeint(linear_field, Y0, t, method=method, backend=backend, **kwargs)
        results[backend] = (ys, (ys - exact).abs().max().item(), stats.nfe_forward)
    (ys_n, err_n, nfe_n), (ys_t, err_t, nfe_t) = results["neode"], results["torchdiffeq"]
    assert ys_n.shape == ys_t.shape
    # same size: never worse than torchdiffeq (ours is more accurate at interior times for bosh3, whose
    # cubic Hermite output beats torchdiffeq's interpolant), and the same NFE up to 10%
    assert err_n <= 2 * err_t + 1e-12
    assert err_t < 100 * err_n + 1e-12
    assert abs(nfe_n - nfe_t) <= 0.1 * nfe_t


class TimeRecorder(torch.nn.Module):
    """A time-dependent oscillator that records the time of every evaluation."""

    def __init__(self):
        super().__init__()
        self.times = []

    def forward(self, t, y):
        self.times.append(float(t))
        return torch.stack([y[1], -y[0] * (1 + 0.5 * torch.sin(torch.as_tensor(t, dtype=y.dtype)))])


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-9])
def test_takes_torchdiffeqs_steps_attempt_for_attempt(method, tol):
    """FSAL methods share torchdiffeq's tableau, error estimate, first step and controller: as many evaluations,
    at the same times up to rounding in the step-size arithmetic (dopri5's embedded weights are torchdiffeq's,
    see tableaux.py). Only the last step differs: torchdiffeq steps past t[-1] and interpolates back, neode
    shortens it to end on t[-1], so the field is never evaluated outside the requested interval."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t = torch.linspace(0, 10, 5, dtype=torch.float64)
    ours, theirs = TimeRecorder(), TimeRecorder()
    ys = odeint(ours, y0, t, method=method, rtol=tol, atol=tol)
    ref = torchdiffeq.odeint(theirs, y0, t, method=method, rtol=tol, atol=tol)
    assert len(ours.times) == len(theirs.times) > 20
    before_last_step = len(ours.times) - 12
    assert max(abs(a - b) for a, b in zip(ours.times[:before_last_step], theirs.times)) < 1e-6
    assert max(ours.times) == 10.0 < max(theirs.times)
    assert torch.allclose(ys, ref, rtol=0, atol=0.05)  # the same trajectory (own global errors and interpolants)


def test_non_fsal_methods_evaluate_the_field_at_the_propagated_solution():
    """adaptive_heun's last stage is at the Euler predictor, not at y1: neode evaluates f(t1, y1) for the next
    step (torchdiffeq 0.2.5 reuses the last stage instead, the bug of https://github.com/llnl/sundials/issues/311:
    one evaluation less per step, but no longer Heun's method). Heun's global error on y' = Ay at a fixed step h
    is about 2.1 h^2 here and falls by 4 per halving of the step."""
    errors = []
    for step in (0.02, 0.01):
        ys = odeint(linear_field, Y0, T, method="adaptive_heun", rtol=1e-12, atol=1e-12,
                    options=dict(first_step=step, min_step=step, max_step=step))
        errors.append((ys - linear_exact(Y0, T)).abs().max().item())
    assert 3.5 < errors[0] / errors[1] < 4.5
    assert errors[1] < 3 * 0.01 ** 2  # torchdiffeq's variant: 5.3 h^2 on the same problem


def test_agrees_with_scipy_on_a_nonlinear_problem():
    scipy_integrate = pytest.importorskip("scipy.integrate")

    def van_der_pol(t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, (1 - x * x) * v - x], dim=-1)

    t = torch.linspace(0, 5, 11, dtype=torch.float64)
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    reference = scipy_integrate.solve_ivp(lambda t, y: [y[1], (1 - y[0] ** 2) * y[1] - y[0]], (0, 5), [2.0, 0.0],
                                          method="DOP853", t_eval=t.numpy(), rtol=1e-12, atol=1e-12)
    for method in ("dopri5", "tsit5", "dopri8"):
        ys = odeint(van_der_pol, y0, t, rtol=1e-9, atol=1e-9, method=method)
        assert torch.allclose(ys, torch.from_numpy(reference.y.T), atol=1e-6), method


def test_adjoint_backend_switch_gives_same_gradients():
    field = torch.nn.Linear(2, 2).double()
    grads = []
    for backend in ("neode", "torchdiffeq"):
        field.zero_grad()
        with collect_stats() as stats:
            ys = odeint_adjoint(lambda t, y: field(y), Y0, T, rtol=1e-9, atol=1e-9, backend=backend,
                                adjoint_params=tuple(field.parameters()))
            ys.square().sum().backward()
        assert stats.nfe_forward > 0 and stats.nfe_backward > 0
        grads.append(field.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-6)


def test_norm_options():
    calls = []

    def max_norm(x):
        calls.append(1)
        return x.abs().max()

    nfe = {}
    for name, norm in (("rms", "rms"), ("max", "max"), ("callable", max_norm)):
        with collect_stats() as stats:
            ys = odeint(linear_field, Y0, T, rtol=1e-8, atol=1e-8, options=dict(norm=norm))
        assert (ys - linear_exact(Y0, T)).abs().max() < 1e-6
        nfe[name] = stats.nfe_forward
    # the option reaches the controller: the max norm is >= the RMS norm, so it takes more steps here, and the
    # callable max norm takes exactly as many as "max"
    assert nfe["max"] > nfe["rms"] and nfe["callable"] == nfe["max"] and calls


def test_time_dtype_option_and_func_time_argument():
    seen = []

    def field(t, y):
        seen.append((t.dtype, t.dim()))
        return -y

    odeint(field, torch.ones(2, dtype=torch.float32), torch.tensor([0.0, 1.0]), options=dict(dtype=torch.float64))
    assert set(seen) == {(torch.float64, 0)}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    y0 = Y0.cuda()
    ys = odeint(lambda t, y: y @ A.T.cuda(), y0, T.cuda(), rtol=1e-9, atol=1e-9)
    assert ys.device.type == "cuda"
    assert torch.allclose(ys.cpu(), linear_exact(Y0, T), atol=1e-7)
