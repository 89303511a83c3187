"""Controllers own accept/reject; one loop serves fixed and adaptive methods; the fixed grid reads nothing per step."""

import importlib
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from neode_cli.ode import NonFiniteStateError, collect_stats, control, odeint, odeint_adjoint

integrate_module = importlib.import_module("neode_cli.ode.integrate")  # the module (the package exports no name for it)

I = control.IntegralController(error_order=4)
PI = control.PIController(error_order=4)


def test_integral_controller_accepts_iff_ratio_at_most_one_and_never_shrinks_after_acceptance():
    state = I.start(0.0)
    accept, h = I.decide(state, 0.5, 0.1, 0.1, None)
    assert accept and h == pytest.approx(0.1 * 0.9 * 0.5 ** -0.2)
    accept, h = I.decide(state, 0.99, 0.1, 0.1, None)
    assert accept and h == 0.1  # safety * 0.99**-0.2 < 1: kept, not shrunk
    accept, h = I.decide(state, 4.0, 0.1, 0.1, None)
    assert not accept and h == pytest.approx(0.1 * 0.9 * 4.0 ** -0.2)
    accept, h = I.decide(state, 1e12, 0.1, 0.1, None)
    assert not accept and h == pytest.approx(0.1 * 0.2)  # dfactor bounds the shrink


def test_a_clipped_step_keeps_the_longer_proposal():
    for ctl in (I, PI):
        accept, h = ctl.decide(ctl.start(0.0), 0.9, 0.01, 0.01, 0.5)  # shortened from 0.5 to land on an output
        assert accept and h == 0.5


def test_pi_controller_uses_the_previous_ratio_and_differs_from_i():
    state = PI.start(0.0)
    _, h_first = PI.decide(state, 0.5, 0.1, 0.1, None)
    assert h_first == pytest.approx(0.1 * 0.9 * 0.5 ** (-0.7 / 5))  # prev ratio starts at 1
    _, h_second = PI.decide(state, 0.5, 0.1, 0.1, None)
    assert h_second == pytest.approx(0.1 * 0.9 * 0.5 ** (-0.7 / 5) * 0.5 ** (0.4 / 5))
    _, h_i = I.decide(I.start(0.0), 0.5, 0.1, 0.1, None)
    assert h_i != h_second
    # after a rejection the next accepted step does not grow
    assert not PI.decide(state, 3.0, 0.1, 0.1, None)[0]
    accept, h = PI.decide(state, 0.01, 0.05, 0.05, None)
    assert accept and h <= 0.05


def test_non_finite_estimates_shrink_by_dfactor_then_give_up():
    state = I.start(0.0)
    h = 1.0
    for _ in range(control.MAX_NONFINITE_REJECTS):
        accept, h_new = I.decide(state, math.nan, 0.0, h, None)
        assert not accept and h_new == pytest.approx(0.2 * h)
        h = h_new
    assert state.nonfinite_streak == control.MAX_NONFINITE_REJECTS
    with pytest.raises(control.GiveUp):
        I.decide(state, math.inf, 0.0, h, None)
    I.decide(state, 0.5, 0.0, h, None)  # a finite accepted estimate resets the streak
    assert state.nonfinite_streak == 0


def test_reject_then_shrink_inside_a_solve():
    calls = []

    class Recording(control.IntegralController):
        def decide(self, state, ratio, s1, h, clipped_from):
            out = super().decide(state, ratio, s1, h, clipped_from)
            calls.append((ratio, h, out))
            return out

    from neode_cli.ode.problem import make_settings, prepare
    problem = prepare(torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 5.0], dtype=torch.float64), None)
    settings = make_settings("dopri5", 1e-8, 1e-8, dict(first_step=1.0))  # far too long a first step
    settings.controller = Recording(error_order=4, first=1.0)
    counts = integrate_module.WorkCounts()
    ys = integrate_module.integrate(lambda t, y: -y, problem.y0, problem.s_times, 1.0, settings, counts)
    assert abs(ys[-1].item() - math.exp(-5)) < 1e-7
    ratio, h, (accept, h_next) = calls[0]
    assert h == 1.0 and ratio > 1 and not accept and h_next < h  # rejected, then shrunk
    assert counts.rejected == sum(1 for c in calls if not c[2][0]) >= 1


def test_constant_step_grid_is_anchored():
    ctl = control.ConstantStepController(0.1)
    state, s, steps = ctl.start(0.0), 0.0, 0
    h = ctl.first_step(None, None, None, 0, 0, None)
    while s < 0.95:
        s1 = s + h
        _, h = ctl.decide(state, None, s1, h, None)
        s, steps = s1, steps + 1
    assert steps == 10 and abs(s - 1.0) < 1e-15 and abs(s + h - 1.1) < 1e-15


class _HostReads(TorchDispatchMode):
    """Counts device-to-host scalar reads (.item(), float(t), bool(t) all dispatch _local_scalar_dense)."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


def _host_reads(method, options, rtol=1e-6):
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    with collect_stats() as stats, _HostReads() as mode:
        odeint(lambda t, y: -y, y0, t, method=method, rtol=rtol, atol=rtol, options=options)
    return mode.reads, stats.steps_accepted + stats.steps_rejected


def test_fixed_grid_reads_nothing_from_the_device_per_step():
    few, steps_few = _host_reads("rk4", dict(step_size=0.2))
    many, steps_many = _host_reads("rk4", dict(step_size=0.01))
    assert (steps_few, steps_many) == (10, 200)
    assert few == many == 1  # the single finiteness check at the end
    adaptive, attempts = _host_reads("dopri5", None, rtol=1e-9)
    assert adaptive >= attempts > 10  # one read per attempt: the accept/reject decision


def test_fixed_and_adaptive_methods_run_through_the_same_loop(monkeypatch):
    seen = []
    original = integrate_module.rk_stages

    def spy(func, t0, dt, y0, k1, plan):
        seen.append(plan.tab.name)
        return original(func, t0, dt, y0, k1, plan)

    monkeypatch.setattr(integrate_module, "rk_stages", spy)
    for method, options in (("rk4", dict(step_size=0.5)), ("dopri5", None)):
        with collect_stats() as stats:
            odeint(lambda t, y: -y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64),
                   method=method, options=options)
        assert seen.count(method) == stats.steps_accepted + stats.steps_rejected > 0
    assert not [name for name in vars(integrate_module) if name in ("_adaptive", "_fixed_grid")]


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "tsit5"])
def test_pi_controller_end_to_end_against_the_exact_solution(method):
    A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)
    t = torch.linspace(0, 6, 7, dtype=torch.float64)
    exact = torch.stack([y0 @ torch.linalg.matrix_exp(A * ti).T for ti in t])
    results = {}
    for name in ("i", "pi"):
        with collect_stats() as stats:
            ys = odeint(lambda t, y: y @ A.T, y0, t, rtol=1e-7, atol=1e-7, method=method,
                        options=dict(controller=name))
        results[name] = (ys, stats.nfe_forward)
        assert (ys - exact).abs().max() < 1e-5
    assert results["i"][1] != results["pi"][1]  # the option reaches the loop
    # the adjoint's backward solve inherits the controller with the other forward options
    y = y0.clone().requires_grad_(True)
    odeint_adjoint(lambda t, y: y @ A.T, y, t, rtol=1e-9, atol=1e-9, method=method,
                   options=dict(controller="pi"))[-1].sum().backward()
    expected = torch.linalg.matrix_exp(A * 6.0).sum(dim=0)
    assert torch.allclose(y.grad[0], expected, atol=1e-6)


def test_unknown_controller_and_torchdiffeq_pi_are_refused():
    y0, t = torch.ones(1), torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="unknown controller 'pid'; valid: i, pi"):
        odeint(lambda t, y: -y, y0, t, options=dict(controller="pid"))
    with pytest.raises(ValueError, match="'controller'.*valid options: step_size"):
        odeint(lambda t, y: -y, y0, t, method="rk4", options=dict(controller="pi", step_size=0.1))
    with pytest.raises(ValueError, match="not available with backend='torchdiffeq'"):
        odeint(lambda t, y: -y, y0, t, options=dict(controller="pi"), backend="torchdiffeq")
    odeint(lambda t, y: -y, y0, t, options=dict(controller="i"), backend="torchdiffeq")


def test_non_finite_fixed_grid_is_reported_once_at_the_end():
    with pytest.raises(NonFiniteStateError, match="fixed grid"):
        odeint(lambda t, y: y * float("inf"), torch.ones(2), torch.tensor([0.0, 1.0]), method="euler",
               options=dict(step_size=0.1))
