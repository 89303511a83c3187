"""Solver options for discontinuities and step bounds (``perturb``, ``step_t``, ``jump_t``, ``grid_constructor``,
``min_step``, ``max_step``): exact solutions, the times ``func`` sees against the installed torchdiffeq 0.2.5,
step placement, errors, and gradients (backprop, adjoint, checkpoint) against finite differences."""

import math
import warnings

import pytest
import torch
import torchdiffeq

from neode_cli.ode import collect_stats, odeint, odeint_adjoint, odeint_checkpoint
from neode_cli.ode.integrate import integrate
from neode_cli.ode.problem import make_settings
from neode_cli.ode.stats import WorkCounts

F64 = torch.float64


def recording(field, seen):
    """``field`` that appends every time it is called at (as a float) to ``seen``."""
    def f(t, y):
        seen.append(t.item())
        return field(t, y)
    return f


def step_field(t, y):
    """``dy/dt = +1`` up to t = 0.5, ``-1`` after (``t <= 0.5`` puts t = 0.5 itself on the wrong side for
    the steps after it): ``y(1) = y(0)`` exactly."""
    return torch.ones_like(y) if t <= 0.5 else -torch.ones_like(y)


class RateJump(torch.nn.Module):
    """``dy/dt = theta * a(t) * y`` with ``a = -1`` before t = 0.5 and ``+2`` after:
    ``y(1) = y0 exp(theta * (-0.5 + 1.0))``."""

    def __init__(self, theta=1.0):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(theta, dtype=F64))

    def forward(self, t, y):
        return self.theta * (-1.0 if t < 0.5 else 2.0) * y


def _steps(method, options, t=(0.0, 1.0), field=None, rtol=1e-6, atol=1e-6):
    """The accepted steps ``(s, s1)`` of a solve, through the loop's step hook."""
    steps = []
    settings = make_settings(method, rtol, atol, options)
    field = field or (lambda t, y: -y)
    integrate(field, torch.ones(2, dtype=F64), list(t), 1.0, settings, WorkCounts(),
              on_accept=lambda s, h, s1, *rest: steps.append((s, s1)))
    return steps


# --- perturb (fixed grids) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("method", ["euler", "midpoint", "heun2", "rk4", "explicit_adams", "implicit_adams"])
def test_perturb_nudges_step_ends_exactly_as_torchdiffeq(method, dtype):
    field = lambda t, y: -y
    y0, t = torch.tensor([1.0, 2.0], dtype=dtype), torch.tensor([0.0, 1.0])
    grid = (0.0, 0.25, 0.5, 0.75, 1.0)
    for perturb in (True, False):
        ours, theirs = [], []
        options = dict(step_size=0.25, perturb=perturb)
        odeint(recording(field, ours), y0, t, method=method, options=dict(options, interp="linear"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (torchdiffeq's implicit_adams warns about its corrector)
            torchdiffeq.odeint(recording(field, theirs), y0, t, method=method, options=options)
        near = lambda seen: sorted(v for v in seen if min(abs(v - g) for g in grid) < 1e-6)
        assert near(ours) == near(theirs)  # the same one-ulp neighbours of the grid points (or the points)
        if perturb:
            eps = torch.finfo(dtype).eps
            assert not set(grid) & set(ours)
            assert _next(0.0, 1.0, dtype) in ours and _next(0.5, 1.0, dtype) in ours
            assert any(abs(v - 0.5) < eps and v < 0.5 for v in ours) == (method not in ("euler", "midpoint"))
        else:
            assert {0.0, 0.25, 0.5, 0.75} <= set(ours)


def _next(t, toward, dtype):
    """The neighbour of ``t`` towards ``toward`` in ``dtype``, as a float."""
    return float(torch.nextafter(torch.tensor(t, dtype=dtype), torch.tensor(toward, dtype=dtype)))


@pytest.mark.parametrize("method", ["euler", "heun2", "rk4"])
def test_perturb_sees_a_jump_on_the_grid_from_inside_each_step(method):
    y0, t = torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    exact = odeint(step_field, y0, t, method=method, options=dict(step_size=0.25, perturb=True))
    assert exact[-1].item() == pytest.approx(0.0, abs=1e-14)  # piecewise constant: integrated exactly
    wrong = odeint(step_field, y0, t, method=method, options=dict(step_size=0.25))
    assert abs(wrong[-1].item()) > 0.05  # the step from 0.5 starts on the wrong side of the jump


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_perturb_in_the_adjoint_backward_solve(method):
    seen = []
    y0 = torch.tensor([1.0, 2.0], dtype=F64, requires_grad=True)
    options = dict(step_size=0.5, perturb=True)
    ys = odeint_adjoint(recording(lambda t, y: -y, seen), y0, torch.tensor([0.0, 1.0], dtype=F64),
                        method=method, options=options)
    seen.clear()
    ys[-1].sum().backward()
    assert 1.0 not in seen and 0.5 not in seen
    assert math.nextafter(1.0, 0.0) in seen and math.nextafter(0.5, 0.0) in seen  # nudged towards t[0]
    # for this linear field the backward solve's discretisation is the forward one's transpose
    growth = 0.5 ** 2 if method == "euler" else (1 - 0.5 + 0.5 ** 2 / 2 - 0.5 ** 3 / 6 + 0.5 ** 4 / 24) ** 2
    assert torch.allclose(y0.grad, torch.full((2,), growth, dtype=F64), rtol=1e-12)


# --- jump_t / step_t (adaptive Runge-Kutta) ------------------------------------------------------------------
@pytest.mark.parametrize("method", ["adaptive_heun", "fehlberg2", "bosh3", "dopri5", "tsit5", "dopri8"])
def test_jump_t_reaches_the_exact_solution_with_fewer_rejections(method):
    f = RateJump()
    y0, t = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    exact = y0 * math.exp(0.5)
    tol = 1e-6 if method == "adaptive_heun" else 1e-8  # (second order: tighter takes thousands of steps)
    with torch.no_grad(), collect_stats() as plain:
        ys_plain = odeint(f, y0, t, method=method, rtol=tol, atol=tol)
    with torch.no_grad(), collect_stats() as jumped:
        ys = odeint(f, y0, t, method=method, rtol=tol, atol=tol, options=dict(jump_t=torch.tensor([0.5])))
    assert jumped.steps_rejected < plain.steps_rejected
    assert jumped.nfe_forward < plain.nfe_forward
    assert (ys[-1] - exact).abs().max().item() < 1000 * tol
    assert (ys_plain[-1] - exact).abs().max().item() < 10000 * tol


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("method", ["bosh3", "dopri5"])
def test_jump_t_evaluates_either_side_of_the_jump_as_torchdiffeq(method, dtype):
    field = lambda t, y: -y if t < 0.5 else y ** 2
    y0, t = torch.tensor([1.0, 2.0], dtype=dtype), torch.tensor([0.0, 1.0])
    ours, theirs = [], []
    options = dict(jump_t=torch.tensor([0.5]))
    odeint(recording(field, ours), y0, t, method=method, rtol=1e-6, atol=1e-6, options=options)
    torchdiffeq.odeint(recording(field, theirs), y0, t, method=method, rtol=1e-6, atol=1e-6, options=options)
    before, after = _next(0.5, 0.0, dtype), _next(0.5, 1.0, dtype)
    near = lambda seen: {v for v in seen if abs(v - 0.5) < 1e-6}
    assert near(ours) == near(theirs) == {before, after}
    assert ours.count(after) == 1  # one fresh evaluation after the jump (no FSAL reuse across it)


def test_jump_t_in_decreasing_time_and_at_an_output_time():
    f = RateJump()
    y1 = torch.tensor([1.0], dtype=F64)
    t = torch.tensor([1.0, 0.5, 0.0], dtype=F64)
    seen = []
    ys = odeint(recording(f, seen), y1, t, rtol=1e-9, atol=1e-9, options=dict(jump_t=[0.5]))
    assert ys[1].item() == pytest.approx(math.exp(-1.0), rel=1e-7)
    assert ys[2].item() == pytest.approx(math.exp(-0.5), rel=1e-7)
    assert math.nextafter(0.5, 1.0) in seen and math.nextafter(0.5, 0.0) in seen and 0.5 not in seen


def test_step_t_lands_on_the_times():
    steps = _steps("dopri5", dict(step_t=torch.tensor([0.3, 0.7], dtype=F64)), rtol=1e-3, atol=1e-3)
    ends = [s1 for _, s1 in steps]
    assert 0.3 in ends and 0.7 in ends and ends[-1] == 1.0
    assert all(s1 > s for s, s1 in steps)
    plain = [s1 for _, s1 in _steps("dopri5", {}, rtol=1e-3, atol=1e-3)]
    assert 0.3 not in plain and 0.7 not in plain
    # step_t ignores times outside the solve; a kink at a step time is no trouble
    kink = lambda t, y: torch.abs(t - 0.3) * torch.ones_like(y)
    ys = odeint(kink, torch.zeros(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-10, atol=1e-10,
                options=dict(step_t=[-1.0, 0.3, 2.0]))
    assert ys[-1].item() == pytest.approx(0.3 ** 2 / 2 + 0.7 ** 2 / 2, abs=1e-12)


def test_step_t_and_jump_t_match_torchdiffeq_values():
    f = RateJump()
    y0, t = torch.tensor([1.0, 2.0], dtype=F64), torch.linspace(0, 1, 5, dtype=F64)
    options = dict(step_t=torch.tensor([0.3]), jump_t=torch.tensor([0.5]))
    with torch.no_grad():
        ours = odeint(f, y0, t, rtol=1e-9, atol=1e-9, options=options)
        theirs = torchdiffeq.odeint(f, y0, t, rtol=1e-9, atol=1e-9, options=options)
    assert torch.allclose(ours, theirs, rtol=1e-7)


# --- grid_constructor (fixed grids) ------------------------------------------------------------------------
GRID = (0.0, 0.1, 0.35, 0.6, 1.0)


def test_grid_constructor_is_the_grid_used():
    calls, seen = [], []

    def grid_constructor(func, y0, t):
        calls.append(t.tolist())
        return torch.tensor(GRID, dtype=t.dtype)

    y0, t = torch.ones(1, dtype=F64), torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ys = odeint(recording(lambda t, y: y, seen), y0, t, method="euler",
                options=dict(grid_constructor=grid_constructor, interp="linear"))
    assert calls == [[0.0, 0.5, 1.0]]
    assert seen == list(GRID[:-1])  # one evaluation per grid step, at the grid points
    assert ys[-1].item() == pytest.approx(math.prod(1 + b - a for a, b in zip(GRID, GRID[1:])), rel=1e-14)
    theirs = torchdiffeq.odeint(lambda t, y: y, y0, t, method="euler",
                                options=dict(grid_constructor=grid_constructor))
    assert torch.allclose(ys, theirs, rtol=1e-14)


@pytest.mark.parametrize("method", ["euler", "midpoint", "explicit_adams"])
def test_grid_constructor_matches_torchdiffeq_in_decreasing_time(method):
    t = torch.tensor([1.0, 0.0], dtype=F64)
    grid = lambda func, y0, t: torch.tensor([1.0, 0.8, 0.5, 0.45, 0.3, 0.2, 0.0], dtype=F64)
    field = lambda t, y: torch.cos(t) * y
    ours = odeint(field, torch.ones(1, dtype=F64), t, method=method, options=dict(grid_constructor=grid))
    theirs = torchdiffeq.odeint(field, torch.ones(1, dtype=F64), t, method=method,
                                options=dict(grid_constructor=grid))
    assert torch.allclose(ours, theirs, rtol=1e-12)


def test_grid_constructor_adjoint_gradient_and_backward_call():
    calls = []

    def grid_constructor(func, y0, t):
        calls.append(t.tolist())
        return torch.linspace(float(t[0]), float(t[-1]), 11, dtype=F64)

    x0 = torch.tensor(1.0, dtype=F64, requires_grad=True)
    xs = odeint_adjoint(lambda t, x: x, x0, torch.tensor([0.0, 1.0], dtype=F64), method="euler",
                        options=dict(grid_constructor=grid_constructor))
    assert xs[1].item() == pytest.approx(1.1 ** 10, rel=1e-12)
    xs[1].backward()
    assert calls == [[0.0, 1.0], [1.0, 0.0]]  # once per solve: forward, then the backward with t reversed
    assert x0.grad.item() == pytest.approx(1.1 ** 10, rel=1e-12)


def test_grid_constructor_errors():
    y0, t = torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    good = lambda f, y0, t: torch.tensor(GRID, dtype=F64)
    with pytest.raises(ValueError, match="mutually exclusive"):
        odeint(lambda t, y: y, y0, t, method="euler", options=dict(grid_constructor=good, step_size=0.1))
    with pytest.raises(ValueError, match=r"must start at t\[0\].*end at t\[-1\]"):
        odeint(lambda t, y: y, y0, t, method="euler",
               options=dict(grid_constructor=lambda f, y0, t: torch.tensor([0.0, 0.5, 0.9], dtype=F64)))
    with pytest.raises(ValueError, match="strictly monotone"):
        odeint(lambda t, y: y, y0, t, method="rk4",
               options=dict(grid_constructor=lambda f, y0, t: torch.tensor([0.0, 0.6, 0.5, 1.0], dtype=F64)))
    with pytest.raises(ValueError, match="1-D floating tensor"):
        odeint(lambda t, y: y, y0, t, method="euler", options=dict(grid_constructor=lambda f, y0, t: [0.0, 1.0]))
    with pytest.raises(ValueError, match="step_size"):
        odeint(lambda t, y: y, y0, t, method="euler", options=dict(grid_constructor=good),
               event_fn=lambda t, y: y[0] - 2.0)


# --- min_step / max_step (adaptive Runge-Kutta) --------------------------------------------------------------
def test_max_step_bounds_every_step():
    steps = _steps("dopri5", dict(max_step=0.05), rtol=1e-3, atol=1e-3)
    assert all(s1 - s <= 0.05 * (1 + 1e-12) for s, s1 in steps)
    assert len(steps) >= 20 and len(_steps("dopri5", {}, rtol=1e-3, atol=1e-3)) < 10


def test_min_step_accepts_steps_of_that_length_whatever_the_error():
    field = lambda t, y: math.cos(20 * float(t)) * y
    steps = _steps("dopri5", dict(min_step=0.25), field=field, rtol=1e-10, atol=1e-10)
    assert [s1 - s for s, s1 in steps] == pytest.approx([0.25] * 4)
    with collect_stats() as stats:
        odeint(field, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-10, atol=1e-10,
               options=dict(min_step=0.25))
    assert stats.steps_rejected == 0


def test_min_max_step_nfe_as_torchdiffeq():
    A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64)
    t = torch.linspace(1, 8, 10, dtype=F64)
    for options in (dict(min_step=2.0, max_step=5.0), dict(max_step=0.3)):
        counts = []
        for solve in (odeint, torchdiffeq.odeint):
            n = [0]

            def f(t, y):
                n[0] += 1
                return A @ y
            ys = solve(f, torch.ones(2, dtype=F64), t, options=options)
            counts.append((n[0], ys))
        if "min_step" in options:  # every step forced to min_step: the same steps
            assert counts[0][0] == counts[1][0]
        else:  # (our steps end on t[-1] and the rejections differ slightly)
            assert abs(counts[0][0] - counts[1][0]) <= 0.1 * counts[1][0]
        # (our last step ends on t[-1], torchdiffeq's passes it: with min_step=2 the interpolants differ)
        assert torch.allclose(counts[0][1], counts[1][1], atol=5e-2 if "min_step" in options else 1e-8)


# --- refusals and validation --------------------------------------------------------------------------------
@pytest.mark.parametrize("method,option", [
    ("adams", dict(jump_t=[0.5])), ("adams", dict(max_step=0.1)), ("scipy_solver", dict(step_t=[0.5])),
    ("scipy_solver", dict(perturb=True)), ("dopri5", dict(perturb=True)), ("euler", dict(jump_t=[0.5])),
    ("rk4", dict(min_step=0.1)), ("dopri5", dict(grid_constructor=lambda f, y, t: t)),
])
def test_methods_refuse_options_they_cannot_honour(method, option):
    name = next(iter(option))
    with pytest.raises(ValueError, match=f"method '{method}' cannot honour option\\(s\\) '{name}': {name} needs"):
        odeint(lambda t, y: -y, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method=method,
               options=dict(option, step_size=0.1) if method in ("euler", "rk4") else option)


@pytest.mark.parametrize("options,message", [
    (dict(step_t=[0.5], jump_t=[0.5]), "must not repeat"),
    (dict(jump_t=[0.2, 0.2]), "must not repeat"),
    (dict(jump_t=[float("nan")]), "finite times"),
    (dict(step_t="0.5"), "1-D tensor or a list"),
    (dict(min_step=0.5, max_step=0.1), "exceeds"),
    (dict(max_step=0.0), "max_step"),
    (dict(min_step=-1.0), "min_step"),
])
def test_option_validation(options, message):
    with pytest.raises(ValueError, match=message):
        odeint(lambda t, y: -y, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), options=options)
    with pytest.raises(ValueError, match="True or False"):
        odeint(lambda t, y: -y, torch.ones(1, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="euler",
               options=dict(perturb=1))


# --- gradients ----------------------------------------------------------------------------------------------
def _fd(loss, theta, eps=1e-6):
    with torch.no_grad():
        return (loss(theta + eps) - loss(theta - eps)) / (2 * eps)


def _grid(f, y0, t):
    points = torch.tensor([0.0, 0.2, 0.5, 0.7, 1.0], dtype=F64)
    return points if t[0] < t[-1] else points.flip(0)


@pytest.mark.parametrize("method,options,adjoint_rtol", [
    ("dopri5", dict(jump_t=[0.5]), 1e-6), ("bosh3", dict(step_t=[0.3], jump_t=[0.5], max_step=0.2), 1e-5),
    ("dopri5", dict(jump_t=[0.5], min_step=0.05), 1e-5), ("rk4", dict(step_size=0.05, perturb=True), 1e-5),
    ("implicit_adams", dict(step_size=0.1, perturb=True), None), ("euler", dict(grid_constructor=_grid), None),
])
def test_gradients_match_finite_differences(method, options, adjoint_rtol):
    y0, t = torch.tensor([1.0, 2.0], dtype=F64), torch.tensor([0.0, 0.6, 1.0], dtype=F64)

    def loss_at(theta, solve=odeint):
        f = RateJump(theta)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (implicit_adams' corrector)
            ys = solve(f, y0, t, method=method, rtol=1e-9, atol=1e-9, options=options)
        return ys[1:].pow(2).sum(), f

    def exact_loss(theta):  # y(0.6) = y0 exp(theta (-0.5 + 0.2)), y(1) = y0 exp(theta (-0.5 + 1))
        return (y0.pow(2).sum() * (math.exp(2 * theta * -0.3) + math.exp(2 * theta * 0.5))).item()

    expected = _fd(lambda th: loss_at(th)[0], 0.7)
    grads = {}
    for solve in (odeint, odeint_adjoint, odeint_checkpoint):
        if solve is odeint_checkpoint and "adams" in method:
            continue  # (the checkpoint replays Runge-Kutta steps only)
        loss, f = loss_at(0.7, solve)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss.backward()
        grads[solve] = f.theta.grad.item()
    assert grads[odeint] == pytest.approx(expected.item(), rel=1e-6)  # backprop: the discretisation's gradient
    if adjoint_rtol is not None:  # the adjoint: the continuous gradient, to the solves' accuracy
        continuous = (exact_loss(0.7 + 1e-6) - exact_loss(0.7 - 1e-6)) / 2e-6
        assert grads[odeint_adjoint] == pytest.approx(continuous, rel=adjoint_rtol)
    if odeint_checkpoint in grads:  # the checkpoint replays the same (nudged) steps
        assert grads[odeint_checkpoint] == pytest.approx(grads[odeint], rel=1e-10)
