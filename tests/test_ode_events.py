"""Events (``event_fn``, ``odeint_event``): exact event times, event states, gradients through the event time
against closed forms and finite differences, and against the installed torchdiffeq 0.2.5."""

import math

import pytest
import torch

from neode_cli.ode import TooManyStepsError, collect_stats, odeint, odeint_adjoint, odeint_event

F64 = torch.float64
FIXED = {"step_size": 0.01}


class FallingBall(torch.nn.Module):
    """State (height, velocity) under gravity ``g``: ``h(t) = h0 + v0 t - g t^2 / 2`` (quadratic in t)."""

    def __init__(self, g=9.81):
        super().__init__()
        self.g = torch.nn.Parameter(torch.tensor(g, dtype=F64))

    def forward(self, t, y):
        return torch.stack([y[1], -self.g])


def ground(t, y):
    return y[0]


def _impact(h0, g, v0=0.0):
    """Time and velocity at which the ball first reaches height 0."""
    tau = (v0 + math.sqrt(v0 * v0 + 2 * g * h0)) / g
    return tau, v0 - g * tau


# every method whose solution is exact on a quadratic (order >= 2), fixed grids with step_size
@pytest.mark.parametrize("method,options", [
    ("dopri5", None), ("bosh3", None), ("tsit5", None), ("dopri8", None), ("adaptive_heun", None),
    ("fehlberg2", None), ("adams", None), ("rk4", FIXED), ("midpoint", FIXED), ("heun3", FIXED),
    ("implicit_adams", FIXED), ("explicit_adams", FIXED),
    ("rk4", {"step_size": 0.01, "interp": "linear"}),
])
def test_falling_ball_hits_the_ground_at_the_exact_time(method, options):
    ball = FallingBall()
    y0 = torch.tensor([10.0, 0.0], dtype=F64)
    event_t, ys = odeint(ball, y0, torch.tensor([0.0, 1.0], dtype=F64), event_fn=ground, method=method,
                         options=options)
    tau, v = _impact(10.0, 9.81)
    ys = ys.detach()
    assert ys.shape == (2, 2) and torch.equal(ys[0], y0)
    assert event_t.shape == () and event_t.dtype == F64
    linear = options is not None and options.get("interp") == "linear"  # the chord is second-order accurate
    tol = 1e-5 if linear else 1e-8
    assert abs(float(event_t) - tau) < tol
    assert abs(float(ys[1, 0])) < tol * 10 and abs(float(ys[1, 1]) - v) < tol * 10


@pytest.mark.parametrize("method,options", [("dopri5", None), ("rk4", FIXED), ("implicit_adams", FIXED)])
def test_decay_crosses_a_level_in_both_directions(method, options):
    k = 1.5
    decay = lambda t, y: -k * y
    # forward: y = exp(-k t) reaches 1/4 at ln(4)/k
    event_t, ys = odeint(decay, torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                         event_fn=lambda t, y: y.sum() - 0.25, method=method, options=options, rtol=1e-10,
                         atol=1e-12)
    assert abs(float(event_t) - math.log(4) / k) < 1e-8
    assert abs(float(ys[1, 0]) - 0.25) < 1e-8
    # backward from y(0) = 1/4: y reaches 1 at t = -ln(4)/k, and event_fn sees the user's (negative) time
    seen = []

    def level(t, y):
        seen.append(float(t))
        return y.sum() - 1.0

    event_t, ys = odeint(decay, torch.tensor([0.25], dtype=F64), torch.tensor([0.0, -0.5], dtype=F64),
                         event_fn=level, method=method, options=options, rtol=1e-10, atol=1e-12)
    assert abs(float(event_t) + math.log(4) / k) < 1e-8
    assert abs(float(ys[1, 0]) - 1.0) < 1e-8
    assert min(seen) < -0.5  # the solve ran past t[1] to the event


def test_first_crossing_of_any_component_and_of_either_sign():
    # y = (t, 2 - t) from (0, 2): component 0 reaches 1.5 at t=1.5 (rising), component 1 reaches 0.25 at
    # t=1.75 (falling); event_fn components start with opposite signs
    f = lambda t, y: torch.tensor([1.0, -1.0], dtype=F64)
    event_fn = lambda t, y: torch.stack([y[0] - 1.5, y[1] - 0.25])
    event_t, ys = odeint(f, torch.tensor([0.0, 2.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                         event_fn=event_fn)
    assert abs(float(event_t) - 1.5) < 1e-8
    event_fn = lambda t, y: torch.stack([y[0] - 1.9, y[1] - 0.25])
    event_t, _ = odeint(f, torch.tensor([0.0, 2.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
                        event_fn=event_fn)
    assert abs(float(event_t) - 1.75) < 1e-8


def test_tuple_state_events_see_the_users_structure():
    f = lambda t, y: (y[1], -torch.ones_like(y[0]) * 9.81)
    y0 = (torch.tensor([10.0], dtype=F64), torch.tensor([0.0], dtype=F64))
    event_t, (h, v) = odeint(f, y0, torch.tensor([0.0, 1.0], dtype=F64), event_fn=lambda t, y: y[0].sum())
    tau, v_end = _impact(10.0, 9.81)
    assert h.shape == (2, 1) and v.shape == (2, 1)
    assert abs(float(event_t) - tau) < 1e-8 and abs(float(v[1, 0]) - v_end) < 1e-7


def test_event_at_the_start_returns_the_start():
    event_t, ys = odeint(lambda t, y: -y, torch.tensor([1.0], dtype=F64), torch.tensor([0.3, 1.0], dtype=F64),
                         event_fn=lambda t, y: y.sum() - 1.0)
    assert float(event_t) == pytest.approx(0.3, abs=1e-15) and torch.equal(ys[1], ys[0])


def test_event_time_has_ts_dtype_and_float32_states_work():
    event_t, ys = odeint(lambda t, y: -y, torch.tensor([1.0]), torch.tensor([0.0, 1.0], dtype=F64),
                         event_fn=lambda t, y: y.sum() - 0.5)
    assert event_t.dtype == F64 and ys.dtype == torch.float32
    assert abs(float(event_t) - math.log(2)) < 1e-6


def test_event_mode_errors_say_what_to_do():
    f, y0 = (lambda t, y: -y), torch.tensor([1.0])
    level = lambda t, y: y.sum() - 0.5
    with pytest.raises(ValueError, match="len\\(t\\) == 2"):
        odeint(f, y0, torch.tensor([0.0, 1.0, 2.0]), event_fn=level)
    with pytest.raises(ValueError, match="step_size"):
        odeint(f, y0, torch.tensor([0.0, 1.0]), event_fn=level, method="rk4")
    with pytest.raises(ValueError, match="scipy_solver"):
        odeint(f, y0, torch.tensor([0.0, 1.0]), event_fn=level, method="scipy_solver")
    # never crossing: a fixed grid stops after 20000 steps (torchdiffeq's limit) or options['max_num_steps']
    with pytest.raises(TooManyStepsError, match="no event found.*max_num_steps=20000"):
        odeint(f, y0, torch.tensor([0.0, 1.0]), event_fn=lambda t, y: y.sum() + 1.0, method="euler",
               options={"step_size": 0.1})
    with pytest.raises(TooManyStepsError, match="max_num_steps=50"):
        odeint(f, y0, torch.tensor([0.0, 1.0]), event_fn=lambda t, y: y.sum() + 1.0, method="dopri5",
               options={"max_num_steps": 50})


def test_odeint_differentiates_the_event_state_at_a_fixed_event_time():
    # torchdiffeq's semantics: no gradient through event_t in odeint; y(event_t) as the state at that time
    k = torch.tensor(1.5, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=F64, requires_grad=True)
    event_t, ys = odeint(lambda t, y: -k * y, y0, torch.tensor([0.0, 1.0], dtype=F64),
                         event_fn=lambda t, y: y.sum() - 0.25, rtol=1e-10, atol=1e-12)
    assert not event_t.requires_grad
    ys[1, 0].backward()
    tau = math.log(4) / 1.5
    assert float(y0.grad) == pytest.approx(math.exp(-1.5 * tau), rel=1e-7)        # d y(tau)/d y0
    assert float(k.grad) == pytest.approx(-tau * math.exp(-1.5 * tau), rel=1e-7)  # d y(tau)/d k


@pytest.mark.parametrize("interface", [odeint, odeint_adjoint])
def test_adjoint_event_mode_matches_backprop_event_mode(interface):
    k = torch.tensor(1.5, dtype=F64, requires_grad=True)
    y0 = torch.tensor([1.0, 3.0], dtype=F64, requires_grad=True)
    kwargs = {"adjoint_params": (k,)} if interface is odeint_adjoint else {}
    event_t, ys = interface(lambda t, y: -k * y, y0, torch.tensor([0.0, 1.0], dtype=F64),
                            event_fn=lambda t, y: y[0] - 0.25, rtol=1e-10, atol=1e-12, **kwargs)
    if interface is odeint_adjoint:
        assert event_t.requires_grad  # in the graph (so backward through it runs), with no gradient of its own
        event_t.backward(retain_graph=True)
    (ys[1] ** 2).sum().backward()
    tau = math.log(4) / 1.5
    e = math.exp(-1.5 * tau)
    assert torch.allclose(y0.grad, 2 * torch.tensor([1.0, 3.0], dtype=F64) * e * e, rtol=1e-7)
    assert float(k.grad) == pytest.approx(-2 * tau * e * e * 10.0, rel=1e-7)


@pytest.mark.parametrize("interface", [odeint, odeint_adjoint])
@pytest.mark.parametrize("method,options", [("dopri5", None), ("rk4", FIXED)])
def test_odeint_event_gradients_through_the_impact_time(interface, method, options):
    # tau = sqrt(2 h0 / g), v(tau) = -sqrt(2 h0 g): closed-form derivatives in h0, g and t0
    ball = FallingBall()
    h0 = torch.tensor(10.0, dtype=F64, requires_grad=True)
    t0 = torch.tensor(0.5, dtype=F64, requires_grad=True)
    y0 = torch.stack([h0, torch.zeros((), dtype=F64)])
    event_t, ys = odeint_event(ball, y0, t0, event_fn=ground, odeint_interface=interface, method=method,
                               options=options, rtol=1e-10, atol=1e-12)
    tau = math.sqrt(2 * 10.0 / 9.81)
    assert float(event_t) == pytest.approx(0.5 + tau, abs=1e-8)
    assert float(ys[1, 1]) == pytest.approx(-9.81 * tau, rel=1e-8)
    (event_t + ys[1, 1]).backward()
    # d tau/d h0 = 1/(g tau), d tau/d g = -tau/(2g), d v/d h0 = -g/(g tau) = -1/tau, d v/d g = -tau/2
    assert float(h0.grad) == pytest.approx(1 / (9.81 * tau) - 1 / tau, rel=1e-6)
    assert float(ball.g.grad) == pytest.approx(-tau / (2 * 9.81) - tau / 2, rel=1e-6)
    assert float(t0.grad) == pytest.approx(1.0, rel=1e-6)  # autonomous: the impact moves with the start


def test_odeint_event_gradient_reaches_event_fn_parameters_and_matches_finite_differences():
    def solve(level, k, reverse=False):
        f = lambda t, y: -k * y + 0.3 * torch.sin(t)
        y0 = torch.tensor([1.0], dtype=F64)
        event_t, ys = odeint_event(f, y0, torch.tensor(0.0, dtype=F64), event_fn=lambda t, y: y.sum() - level,
                                   reverse_time=reverse, rtol=1e-11, atol=1e-13)
        return event_t + ys[1, 0] ** 2

    level = torch.tensor(0.4, dtype=F64, requires_grad=True)
    k = torch.tensor(1.2, dtype=F64, requires_grad=True)
    solve(level, k).backward()
    eps = 1e-6
    with torch.no_grad():
        fd_level = (solve(level + eps, k) - solve(level - eps, k)) / (2 * eps)
        fd_k = (solve(level, k + eps) - solve(level, k - eps)) / (2 * eps)
    assert float(level.grad) == pytest.approx(float(fd_level), rel=1e-5)
    assert float(k.grad) == pytest.approx(float(fd_k), rel=1e-5)
    # backward in time: from y(0)=1 back to the level 2.5
    level2 = torch.tensor(2.5, dtype=F64, requires_grad=True)
    solve(level2, k, reverse=True).backward()
    with torch.no_grad():
        fd = (solve(level2 + eps, k, True) - solve(level2 - eps, k, True)) / (2 * eps)
    assert float(level2.grad) == pytest.approx(float(fd), rel=1e-5)


def test_event_solve_counts_its_work():
    with collect_stats() as stats:
        odeint(lambda t, y: -y, torch.tensor([1.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               event_fn=lambda t, y: y.sum() - 0.5, method="rk4", options={"step_size": 0.1})
    # ln 2 = 0.693: 7 grid steps of 4 stages; the bracketing step's Hermite interpolant needs f(t1, y1)
    assert stats.steps_accepted == 7 and stats.nfe_forward == 7 * 4 + 1


# --- against torchdiffeq 0.2.5 ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method,options", [
    ("dopri5", None), ("bosh3", None), ("rk4", {"step_size": 0.01, "interp": "cubic"}),
    ("euler", {"step_size": 0.01, "interp": "linear"}), ("implicit_adams", {"step_size": 0.01, "interp": "cubic"}),
])
@pytest.mark.parametrize("reverse", [False, True])
def test_event_times_and_states_match_torchdiffeq(method, options, reverse):
    torchdiffeq = pytest.importorskip("torchdiffeq")
    f = lambda t, y: torch.stack([y[1], -torch.sin(y[0])])  # the pendulum, from rest at 1 rad
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.tensor([0.0, -1.0 if reverse else 1.0], dtype=F64)
    event_fn = lambda t, y: y[0] - 0.2
    ours_t, ours = odeint(f, y0, t, event_fn=event_fn, method=method, options=options)
    ref_t, ref = torchdiffeq.odeint(f, y0, t, event_fn=event_fn, method=method, options=options)
    if options is not None:  # a fixed grid: the same steps and the same interpolant
        tol = 1e-3 if method == "euler" else 1e-6
        assert abs(float(ours_t) - float(ref_t)) < tol
        assert torch.allclose(ours, ref, atol=tol, rtol=0)
    else:  # adaptive: the interpolants differ (bosh3: Hermite vs torchdiffeq's fit), so compare accuracy
        exact_t, _ = odeint(f, y0, t, event_fn=event_fn, rtol=1e-13, atol=1e-14)
        assert abs(float(ours_t - exact_t)) <= 2 * abs(float(ref_t - exact_t)) + 1e-9


def test_odeint_event_gradients_match_torchdiffeq():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    grads = []
    for impl in (odeint_event, torchdiffeq.odeint_event):
        ball = FallingBall()
        y0 = torch.tensor([10.0, 2.0], dtype=F64, requires_grad=True)
        event_t, ys = impl(ball, y0, torch.tensor(0.0, dtype=F64), event_fn=ground, rtol=1e-10, atol=1e-12)
        (event_t + ys[1, 1]).backward()
        grads.append(torch.cat([y0.grad, ball.g.grad.reshape(1)]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=1e-9)
