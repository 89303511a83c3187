"""Gradients with respect to the output times ``t``: finite differences, closed forms, backprop = adjoint =
checkpoint, against the installed torchdiffeq 0.2.5, and no cost when ``t`` does not require grad."""

import math

import pytest
import torch

from neode_cli.ode import collect_stats, odeint, odeint_adjoint, odeint_checkpoint

F64 = torch.float64


def forced(t, y):
    """Time-dependent linear field: dy/dt = -y + sin(3t) (componentwise)."""
    return -y + torch.sin(3 * t)


def _loss(ys):
    return (ys ** 2).sum() + ys[..., 0].sum()


def _fd_time_gradient(solve, t, eps=1e-6):
    out = torch.zeros_like(t)
    with torch.no_grad():
        for i in range(t.numel()):
            up, down = t.clone(), t.clone()
            up[i] += eps
            down[i] -= eps
            out[i] = (_loss(solve(up)) - _loss(solve(down))) / (2 * eps)
    return out


@pytest.mark.parametrize("interface", [odeint, odeint_adjoint, odeint_checkpoint])
@pytest.mark.parametrize("method,options", [("dopri5", None), ("tsit5", None), ("adams", None),
                                            ("rk4", {"step_size": 0.01}), ("implicit_adams", {"step_size": 0.01})])
@pytest.mark.parametrize("reverse", [False, True])
def test_time_gradient_matches_finite_differences(interface, method, options, reverse):
    if interface is odeint_checkpoint and method.endswith("adams"):
        pytest.skip("grad=checkpoint replays Runge-Kutta steps only")
    y0 = torch.tensor([1.0, -0.5], dtype=F64, requires_grad=True)
    times = [0.2, 0.5, 0.9, 1.4]
    t = torch.tensor(times[::-1] if reverse else times, dtype=F64, requires_grad=True)
    solve = lambda tt: interface(forced, y0, tt, method=method, options=options, rtol=1e-11, atol=1e-12)
    _loss(solve(t)).backward()
    expected = _fd_time_gradient(solve, t.detach())
    # fixed grids: outputs between grid points come from the interpolant, whose slope is f to O(h^3); the fixed
    # Adams formulas assume equal steps, so the shortened last step's dependence on t_end is only O(h) right
    tol = 1e-6 if options is None else 1e-3 if method.endswith("adams") else 1e-5
    assert torch.allclose(t.grad, expected, rtol=tol, atol=tol), (t.grad, expected)


def test_output_time_gradient_is_g_dot_f_and_t0_is_the_flow_term():
    # y' = -k y: y(t) = y0 exp(-k (t - t0)); L = y(t1) + y(t2)
    k, y0v, t0v, t1v, t2v = 0.7, 2.0, 0.1, 0.6, 1.3
    t = torch.tensor([t0v, t1v, t2v], dtype=F64, requires_grad=True)
    for interface in (odeint, odeint_adjoint):
        t.grad = None
        ys = interface(lambda s, y: -k * y, torch.tensor([y0v], dtype=F64), t, rtol=1e-12, atol=1e-14)
        ys[1:].sum().backward()
        y1, y2 = (y0v * math.exp(-k * (tv - t0v)) for tv in (t1v, t2v))
        assert t.grad[1].item() == pytest.approx(-k * y1, rel=1e-9)
        assert t.grad[2].item() == pytest.approx(-k * y2, rel=1e-9)
        assert t.grad[0].item() == pytest.approx(k * (y1 + y2), rel=1e-9)


def test_t0_gradient_is_right_when_the_field_jumps_in_time():
    # f = -y before t=0.5, -2y after: y(T) = y0 exp(-(0.5 - t0)) exp(-2 (T - 0.5)), so dy(T)/dt0 = y(T).
    # (An integrated time adjoint -a df/dt would miss the jump: df/dt is 0 on both sides.)
    f = lambda s, y: torch.where(s < 0.5, -y, -2 * y)
    for interface in (odeint, odeint_adjoint):
        t = torch.tensor([0.1, 1.0], dtype=F64, requires_grad=True)
        ys = interface(f, torch.tensor([1.0], dtype=F64), t, rtol=1e-12, atol=1e-14)
        ys[-1].sum().backward()
        y_end = math.exp(-0.4) * math.exp(-1.0)
        assert t.grad[0].item() == pytest.approx(y_end, rel=1e-6)
        assert t.grad[1].item() == pytest.approx(-2 * y_end, rel=1e-6)


def test_tuple_states_and_float32_states_get_time_gradients():
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64, requires_grad=True)
    y0 = (torch.tensor([1.0], requires_grad=True), torch.tensor([[2.0, 3.0]]))
    ys = odeint(lambda s, y: (-y[0], y[1] * 0.5), y0, t)
    (ys[0][-1].sum() + ys[1][1].sum()).backward()
    assert t.grad.dtype == F64
    e = math.exp(-1.0)
    expected = [e - 0.5 * 5.0 * math.exp(0.25), 0.5 * 5.0 * math.exp(0.25), -e]
    assert torch.allclose(t.grad, torch.tensor(expected, dtype=F64), rtol=1e-5)


def test_backprop_adjoint_and_checkpoint_time_gradients_agree():
    y0 = torch.tensor([0.3, 1.2], dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 2.0, 6, dtype=F64, requires_grad=True)
    grads = []
    for interface in (odeint, odeint_adjoint, odeint_checkpoint):
        t.grad = None
        _loss(interface(forced, y0, t, rtol=1e-10, atol=1e-12)).backward()
        grads.append(t.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=1e-7, atol=1e-9)
    assert torch.allclose(grads[0], grads[2], rtol=1e-12, atol=1e-14)


def test_time_gradients_match_torchdiffeq():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    y0 = torch.tensor([0.3, 1.2], dtype=F64, requires_grad=True)
    t = torch.linspace(0.0, 2.0, 6, dtype=F64, requires_grad=True)
    ref = []
    for impl in (torchdiffeq.odeint, lambda *a, **k: torchdiffeq.odeint_adjoint(*a, adjoint_params=(), **k)):
        t.grad = None
        _loss(impl(forced, y0, t, rtol=1e-10, atol=1e-12)).backward()
        ref.append(t.grad.clone())
    for interface, expected in zip((odeint, odeint_adjoint), ref):
        t.grad = None
        _loss(interface(forced, y0, t, rtol=1e-10, atol=1e-12)).backward()
        assert torch.allclose(t.grad, expected, rtol=1e-6, atol=1e-8)


def test_gradcheck_over_y0_and_t():
    y0 = torch.tensor([0.4, -0.2], dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.3, 0.8], dtype=F64, requires_grad=True)
    for interface in (odeint, odeint_adjoint):
        assert torch.autograd.gradcheck(lambda a, b: interface(forced, a, b, rtol=1e-11, atol=1e-12), (y0, t),
                                        atol=1e-6)


def test_event_mode_gives_only_t0_a_gradient():
    t = torch.tensor([0.2, 1.0], dtype=F64, requires_grad=True)
    event_t, ys = odeint(lambda s, y: -y, torch.tensor([1.0], dtype=F64), t, event_fn=lambda s, y: y.sum() - 0.5,
                         rtol=1e-12, atol=1e-14)
    ys[1].sum().backward()
    # y(event) at a fixed event time tau: d/dt0 of exp(-(tau - t0)) = y(tau) = 0.5; t[1] only set the direction
    assert t.grad[0].item() == pytest.approx(0.5, rel=1e-8) and t.grad[1].item() == 0.0


def test_no_time_gradient_work_unless_t_requires_grad():
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    for requires in (False, True):
        t = torch.tensor([0.0, 0.5, 1.0], dtype=F64, requires_grad=requires)
        with collect_stats() as stats:
            ys = odeint_adjoint(forced, y0, t)
            ys[-1].sum().backward()
        if requires:
            extra = stats.nfe_backward
        else:
            assert t.grad is None
            plain = stats.nfe_backward
    # the loss reaches only the last output: f at t_2 and f at t_0 (for t_0's term), two evaluations
    assert extra - plain == 2


def test_scipy_solver_gives_no_gradients_through_odeint():
    t = torch.tensor([0.0, 1.0], dtype=F64, requires_grad=True)
    ys = odeint(forced, torch.tensor([1.0], dtype=F64), t, method="scipy_solver")
    assert not ys.requires_grad
