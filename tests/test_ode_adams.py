"""Adams methods against exact solutions, their orders, finite differences and torchdiffeq 0.2.5."""

import math
import warnings
from fractions import Fraction

import pytest
import torch

from neode_cli.ode import StepSizeUnderflowError, TooManyStepsError, collect_stats, odeint, odeint_adjoint
from neode_cli.ode.adams import adams_bashforth, adams_moulton

torchdiffeq = pytest.importorskip("torchdiffeq")

FIXED_ADAMS = ("explicit_adams", "implicit_adams", "fixed_adams")


def riccati(t, y):
    """y' = -y^2 + cos(t) y: nonlinear and non-autonomous."""
    return -y * y + torch.cos(t) * y


def reference(y0, t_end, t0=0.0):
    return odeint(riccati, y0, torch.tensor([t0, t_end], dtype=torch.float64), rtol=1e-13, atol=1e-14,
                  method="dopri8")[-1]


def test_coefficients_are_the_classical_tables():
    assert adams_bashforth(2) == (1.5, -0.5)
    assert [float(v) * 24 for v in adams_bashforth(4)] == [55, -59, 37, -9]
    assert [float(v) * 24 for v in adams_moulton(4)] == [9, 19, -5, 1]
    for k in range(1, 13):  # order k: exact for polynomials of degree < k on the nodes 0, -1, ... (AB), 1, 0, ... (AM)
        for m in range(k):
            assert sum(w * Fraction(-i) ** m for i, w in enumerate(adams_bashforth(k))) == Fraction(1, m + 1)
            assert sum(w * Fraction(1 - i) ** m for i, w in enumerate(adams_moulton(k))) == Fraction(1, m + 1)


# High-order Adams-Bashforth is only stable for tiny h*lambda (AB11 diverges here at h=0.01): explicit up to 6.
# Bounds: about 3x the measured error against the dopri8 reference (step 0.025; at orders >= 7 the two 3/8-rule
# bootstrap steps dominate).
CASES = [("explicit_adams", 4, 5e-5), ("explicit_adams", 6, 6e-6), ("implicit_adams", 4, 3e-7),
         ("implicit_adams", 7, 5e-8), ("implicit_adams", 12, 5e-8), ("fixed_adams", 12, 5e-8)]


@pytest.mark.parametrize("method,max_order,bound", CASES)
@pytest.mark.parametrize("reverse", [False, True])
def test_fixed_adams_agree_with_torchdiffeq(method, max_order, bound, reverse):
    y0 = torch.tensor([0.8, 1.5], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    if reverse:  # back along the same trajectory (from its state at t=1), where it stays bounded
        t, y0 = t.flip(0), reference(y0, 1.0)
    options = {"step_size": 0.025, "max_order": max_order}
    ours = odeint(riccati, y0, t, method=method, options=options)
    theirs = torchdiffeq.odeint(riccati, y0, t, method=method, options=options)
    assert torch.allclose(ours, theirs, rtol=1e-12, atol=1e-13)
    exact = torch.stack([reference(y0, float(ti), float(t[0])) for ti in t[1:]])
    assert (ours[1:] - exact).abs().max() < bound * (3 if reverse else 1)  # backwards the error grows


def _order(method, options, steps):
    y0 = torch.tensor([0.8, 1.5], dtype=torch.float64)
    exact = reference(y0, 1.0)
    xs, ls = [], []
    for n in steps:
        ys = odeint(riccati, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method=method,
                    rtol=1e-14, atol=1e-15, options={"step_size": 1.0 / n, **options})
        xs.append(math.log(1.0 / n))
        ls.append(math.log((ys[-1] - exact).abs().max().item()))
    mx, ml = sum(xs) / len(xs), sum(ls) / len(ls)
    return sum((x - mx) * (l - ml) for x, l in zip(xs, ls)) / sum((x - mx) ** 2 for x in xs)


@pytest.mark.parametrize("method,max_order,expected", [
    ("explicit_adams", 3, 4),   # below 4: every step is a 3/8-rule RK4 step
    ("explicit_adams", 4, 3),   # AB3 after two RK4 bootstrap steps
    ("explicit_adams", 5, 4),
    ("implicit_adams", 4, 4),   # AB3 predictor, AM4 corrector iterated to convergence
    ("implicit_adams", 5, 5),
])
def test_fixed_adams_converge_at_their_order(method, max_order, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        order = _order(method, {"max_order": max_order, "max_iters": 20}, [20, 40, 80])
    assert abs(order - expected) < 0.35, order


def test_fixed_adams_count_their_evaluations():
    y0 = torch.tensor([0.8, 1.5], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    with collect_stats() as s:
        odeint(riccati, y0, t, method="explicit_adams", options={"step_size": 0.05})
    # 20 steps, f at each step start, 3 more stages in each of the two 3/8-rule bootstrap steps
    assert (s.nfe_forward, s.steps_accepted) == (20 + 2 * 3, 20)
    calls = []

    def counted(t, y):
        calls.append(1)
        return riccati(t, y)

    with collect_stats() as s:
        odeint(counted, y0, t, method="implicit_adams", options={"step_size": 0.05})
    assert s.nfe_forward == len(calls) > 20 + 2 * 3 + 18  # at least one corrector evaluation per Adams step


def test_outputs_inside_steps_use_hermite_interpolation():
    y0 = torch.tensor([0.8, 1.5], dtype=torch.float64)
    t = torch.tensor([0.0, 0.013, 0.5, 0.77, 1.0], dtype=torch.float64)
    ys = odeint(riccati, y0, t, method="implicit_adams", options={"step_size": 0.01})
    exact = torch.stack([reference(y0, float(ti)) for ti in t[1:]])
    assert (ys[1:] - exact).abs().max() < 1e-7


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams"])
@pytest.mark.parametrize("adjoint", [False, True])
def test_fixed_adams_gradients_match_finite_differences(method, adjoint):
    field = Field()
    y0 = torch.tensor([0.5, 1.2], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.6, 1.0], dtype=torch.float64)
    # explicit: max_order 5 (higher-order Adams-Bashforth is near its stability limit at this step)
    options = {"step_size": 0.02, "max_order": 5 if method == "explicit_adams" else 12}
    kwargs = dict(method=method, options=options, rtol=1e-12, atol=1e-12)
    # backprop differentiates the discrete solution exactly; the adjoint the continuous one (O(h^3..4))
    check_gradients(field, y0, t, kwargs, adjoint, tol=(2e-5 if method == "explicit_adams" else 1e-6) if adjoint else 1e-8)


class Field(torch.nn.Module):
    """f(t, y) = tanh(w * y) + sin(t) y with a parameter w of the state's shape (2,)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.7, -0.4], dtype=torch.float64))

    def forward(self, t, y):
        return torch.tanh(self.w * y) + torch.sin(t) * y


def check_gradients(field, y0, t, kwargs, adjoint, tol, eps=1e-6):
    """Gradients of sum(y(t)^2) w.r.t. y0 and the field's parameter against central differences."""
    solve = odeint_adjoint if adjoint else odeint
    solve(field, y0, t, **kwargs).square().sum().backward()
    w = field.w

    def loss(y0_, w_):
        with torch.no_grad():
            old = w.detach().clone()
            w.copy_(w_)
            value = odeint(field, y0_, t, **kwargs).square().sum()
            w.copy_(old)
        return value

    y0_d, w_d = y0.detach(), w.detach().clone()
    for i in range(2):
        e = torch.zeros(2, dtype=torch.float64)
        e[i] = eps
        fd_y0 = (loss(y0_d + e, w_d) - loss(y0_d - e, w_d)) / (2 * eps)
        fd_w = (loss(y0_d, w_d + e) - loss(y0_d, w_d - e)) / (2 * eps)
        assert abs(y0.grad[i] - fd_y0) < tol, (y0.grad, fd_y0)
        assert abs(w.grad[i] - fd_w) < tol, (w.grad, fd_w)


def test_fixed_adams_option_errors():
    y0 = torch.ones(2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="max_order"):
        odeint(riccati, y0, t, method="implicit_adams", options={"step_size": 0.1, "max_order": 13})
    with pytest.raises(ValueError, match="max_iters"):
        odeint(riccati, y0, t, method="implicit_adams", options={"step_size": 0.1, "max_iters": 0})
    with pytest.raises(ValueError, match="unknown option.*'first_step'.*valid options: step_size"):
        odeint(riccati, y0, t, method="explicit_adams", options={"first_step": 0.1})
    with pytest.raises(ValueError, match="valid methods: .*explicit_adams.*implicit_adams"):
        odeint(riccati, y0, t, method="adams_typo")
    with pytest.warns(UserWarning, match="3/8-rule"):
        odeint(riccati, y0, t, method="explicit_adams", options={"step_size": 0.1, "max_order": 2})
    with pytest.raises(TooManyStepsError, match="max_num_steps=5"):
        odeint(riccati, y0, t, method="explicit_adams", options={"step_size": 0.1, "max_num_steps": 5})


def test_implicit_adams_warns_when_the_corrector_does_not_converge():
    y0 = torch.tensor([0.8, 1.5], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="corrector did not converge"):
        ours = odeint(riccati, y0, t, method="implicit_adams", options={"step_size": 0.1, "max_iters": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = torchdiffeq.odeint(riccati, y0, t, method="implicit_adams", options={"step_size": 0.1,
                                                                                       "max_iters": 1})
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-13)  # same order reduction after non-convergence


# --- adaptive variable-order adams -------------------------------------------------------------------------
DAMPED = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)


def damped_rotation(t, y):
    return y @ DAMPED.T.to(y.dtype)


def damped_exact(y0, t):
    return torch.stack([y0 @ torch.linalg.matrix_exp(DAMPED * (ti - t[0])).T.to(y0.dtype) for ti in t.double()])


@pytest.mark.parametrize("tol,bound", [(1e-3, 0.1), (1e-6, 2e-4), (1e-9, 2e-7), (1e-12, 5e-10)])
def test_adams_meets_tolerance_and_counts_work(tol, bound):
    y0 = torch.tensor([1.0, 0.5], dtype=torch.float64)
    t = torch.linspace(0.0, 20.0, 9, dtype=torch.float64)
    with collect_stats() as s:
        ys = odeint(damped_rotation, y0, t, method="adams", rtol=tol, atol=tol)
    assert (ys - damped_exact(y0, t)).abs().max() < bound
    # f(t0), the first-step probe, one evaluation per attempt, one more per accepted step (PECE)
    assert s.nfe_forward == 2 + 2 * s.steps_accepted + s.steps_rejected
    # errors shrink with the tolerance, NFE grows slowly: the order rises (Adams' strength at tight tolerances)
    with collect_stats() as d:
        odeint(damped_rotation, y0, t, method="dopri5", rtol=tol, atol=tol)
    if tol <= 1e-6:
        assert s.nfe_forward < d.nfe_forward


@pytest.mark.parametrize("max_order,bound", [(1, 3e-2), (2, 2e-4), (4, 6e-6), (12, 6e-6)])
def test_adams_max_order_limits_the_order(max_order, bound):
    y0 = torch.tensor([0.8, 1.5], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    with collect_stats() as s:
        ys = odeint(riccati, y0, t, method="adams", rtol=1e-6, atol=1e-6, options={"max_order": max_order})
    exact = torch.stack([y0] + [reference(y0, float(ti)) for ti in t[1:]])
    assert (ys - exact).abs().max() < bound
    if max_order == 1:
        assert s.nfe_forward > 200  # order 1 needs many steps at 1e-6


def test_adams_dense_output_reversed_time_and_float32():
    y0 = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], dtype=torch.float64)  # batch of 2
    t = torch.linspace(0.0, 4.0, 201, dtype=torch.float64)
    with collect_stats() as s:
        ys = odeint(damped_rotation, y0, t, method="adams", rtol=1e-9, atol=1e-9)
    assert ys.shape == (201, 2, 2)
    assert (ys - damped_exact(y0, t)).abs().max() < 1e-7
    assert s.steps_accepted < 150  # outputs come from the interpolant, not from extra steps
    t_rev = torch.tensor([3.0, 2.0, 0.5], dtype=torch.float64)
    y3 = damped_exact(y0, torch.tensor([0.0, 3.0], dtype=torch.float64))[-1]
    ys = odeint(damped_rotation, y3, t_rev, method="adams", rtol=1e-9, atol=1e-9)
    assert (ys - damped_exact(y3, t_rev)).abs().max() < 1e-7
    ys32 = odeint(damped_rotation, y0.float(), t.float(), method="adams", rtol=1e-5, atol=1e-5)
    assert ys32.dtype == torch.float32 and (ys32.double() - damped_exact(y0, t)).abs().max() < 1e-3


@pytest.mark.parametrize("adjoint", [False, True])
def test_adams_gradients_match_finite_differences(adjoint):
    y0 = torch.tensor([0.5, 1.2], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.6, 1.0], dtype=torch.float64)
    # backprop differentiates the discrete solve (step sizes are constants): close to FD of the same solve
    check_gradients(Field(), y0, t, dict(method="adams", rtol=1e-10, atol=1e-10), adjoint, tol=1e-6)


def test_adams_adjoint_backward_costs_less_than_its_forward_on_one_output_time():
    field = Field()
    y0 = torch.tensor([0.5, 1.2], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with collect_stats() as s:
        odeint_adjoint(field, y0, t, method="adams", rtol=1e-6, atol=1e-6)[-1].sum().backward()
    assert s.nfe_backward > 0 and s.backward_steps_accepted > 0
    assert torch.isfinite(y0.grad).all() and torch.isfinite(field.w.grad).all()


def test_adams_errors_are_solver_errors():
    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    with pytest.raises(StepSizeUnderflowError, match=r"step size underflow at t=(0\.99|1)"):
        odeint(lambda t_, y: y * y, y0, t, method="adams", rtol=1e-6, atol=1e-6)  # blows up at t = 1
    with pytest.raises(TooManyStepsError, match="max_num_steps=10"):
        odeint(damped_rotation, torch.ones(2, dtype=torch.float64), torch.tensor([0.0, 50.0], dtype=torch.float64),
               method="adams", options={"max_num_steps": 10})
    with pytest.raises(ValueError, match=r"max_order.*\[1, 12\]"):
        odeint(riccati, y0, t, method="adams", options={"max_order": 0})
    with pytest.raises(ValueError, match="unknown option.*'step_size'"):
        odeint(riccati, y0, t, method="adams", options={"step_size": 0.1})
