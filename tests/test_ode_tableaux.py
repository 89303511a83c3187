"""Each tableau checks its own consistency; declared orders hold algebraically and are measured numerically."""

import dataclasses
import math

import pytest
import torch

from neode_cli.ode import control
from neode_cli.ode.tableaux import ADAPTIVE_METHODS  # the Runge-Kutta ones (Adams: test_ode_adams.py)
from neode_cli.ode.integrate import SolveSettings, integrate
from neode_cli.ode.stats import WorkCounts
from neode_cli.ode.stepping import StepPlan
from neode_cli.ode.tableaux import TABLEAUX, Tableau, check_consistency, hermite_dense, order_condition_residual

HEUN = TABLEAUX["heun2"]


@pytest.mark.parametrize("method", list(TABLEAUX))
def test_every_shipped_tableau_is_consistent(method):
    tab = TABLEAUX[method]
    check_consistency(tab)  # also runs when a Tableau is built; called here so a failure names the method
    assert tab.adaptive == (tab.b_err is not None)


@pytest.mark.parametrize("change,message", [
    (dict(c=(0.0, 0.9)), "c\\[1\\] = 0.9 but row 1 of a sums to 1.0"),
    (dict(a=((), (1.0, 0.0))), "row 1 of a has 2 entries"),                       # not explicit
    (dict(b=(0.5, 0.6)), "the weights b sum to"),
    (dict(b_err=(-0.5, 0.4), adaptive=True, error_order=1), "the embedded weights sum to 1.1, not 1"),
    (dict(fsal=True), "declared FSAL"),
    (dict(dense=((1.0,), (0.0,), (0.0,))), "dense output of stage 0 at theta=1"),
])
def test_an_inconsistent_tableau_is_refused_with_the_reason(change, message):
    with pytest.raises(ValueError, match=f"tableau 'heun2': {message}"):
        dataclasses.replace(HEUN, **change)


def _embedded_weights(tab: Tableau) -> list[float]:
    padded = list(tab.b) + [0.0] * (len(tab.b_err) - len(tab.b))
    return [b - e for b, e in zip(padded, tab.b_err)]


@pytest.mark.parametrize("method", list(TABLEAUX))
def test_declared_orders_satisfy_the_order_conditions_exactly(method):
    """Butcher's conditions hold for every tree up to the declared order and fail at the next one."""
    tab = TABLEAUX[method]
    for weights, order in [(tab.b, tab.order)] + ([(_embedded_weights(tab), tab.error_order)] if tab.adaptive else []):
        for p in range(1, order + 1):
            assert order_condition_residual(tab.c, tab.a, weights, p) < 1e-12, (p, order)
        assert order_condition_residual(tab.c, tab.a, weights, order + 1) > 1e-6  # the order is not higher


def _embedded_method(tab: Tableau) -> Tableau:
    """The embedded solution as a method of its own (weights b - b_err), to measure its order."""
    weights, c, a = _embedded_weights(tab), tab.c, tab.a
    if len(weights) == tab.stages + 1:  # the estimate uses f(t1, y1): one more stage at (t1, y1)
        c, a = c + (1.0,), a + (tab.b,)
    return dataclasses.replace(tab, name=f"{tab.name}-embedded", c=c, a=a, b=tuple(weights), order=tab.error_order,
                               adaptive=False, b_err=None, error_order=None, fsal=False,
                               dense=hermite_dense(weights, False))


# Problems with known solutions, y0 = (0.5, 1): nonlinear autonomous, linear time-dependent, nonlinear with all
# derivatives of f non-zero. Each order is measured on a window of step counts where the leading error term
# dominates both the next term (some methods have very small leading constants) and rounding.
PROBLEMS = {
    "y'=-y^2": (lambda t, y: -y * y, lambda t, y0: y0 / (1 + t * y0)),
    "y'=cos(t)y": (lambda t, y: torch.cos(t) * y, lambda t, y0: y0 * math.exp(math.sin(t))),
    "y'=exp(-y)": (lambda t, y: torch.exp(-y), lambda t, y0: torch.log(t + torch.exp(y0))),
}
WINDOWS = {  # (method, solution or embedded): (problem, t_end, step counts)
    ("adaptive_heun", "solution"): ("y'=exp(-y)", 2.0, [16, 32, 64]),
    ("adaptive_heun", "embedded"): ("y'=exp(-y)", 2.0, [16, 32, 64]),
    ("fehlberg2", "solution"): ("y'=exp(-y)", 2.0, [16, 32, 64]),
    ("fehlberg2", "embedded"): ("y'=-y^2", 4.0, [4096, 8192, 16384]),  # first-order constant is 1/512
    ("bosh3", "solution"): ("y'=exp(-y)", 2.0, [16, 32, 64]),
    ("bosh3", "embedded"): ("y'=exp(-y)", 2.0, [16, 32, 64]),
    ("dopri5", "solution"): ("y'=cos(t)y", 10.0, [128, 256, 512]),
    ("dopri5", "embedded"): ("y'=exp(-y)", 2.0, [64, 128, 256]),
    ("tsit5", "solution"): ("y'=cos(t)y", 10.0, [128, 256, 512]),
    ("tsit5", "embedded"): ("y'=exp(-y)", 2.0, [64, 128, 256]),
    ("dopri8", "solution"): ("y'=cos(t)y", 10.0, [24, 32, 48]),
    ("dopri8", "embedded"): ("y'=-y^2", 10.0, [32, 64, 128]),
}


def _fixed_step_error(tab: Tableau, problem: str, t_end: float, n: int) -> float:
    field, exact = PROBLEMS[problem]
    y0 = torch.tensor([0.5, 1.0], dtype=torch.float64)
    settings = SolveSettings(plan=StepPlan(tab), rtol=0.0, atol=0.0, norm=control.make_norm(None),
                             controller=control.ConstantStepController(t_end / n))
    ys = integrate(lambda t, y: field(torch.tensor(t, dtype=torch.float64), y), y0, [0.0, t_end], 1.0, settings,
                   WorkCounts())
    return (ys[-1] - exact(t_end, y0)).abs().max().item()


def _slope(xs, ys):
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def test_every_adaptive_method_has_a_measurement_window():
    assert {m for m, _ in WINDOWS} == set(ADAPTIVE_METHODS)


@pytest.mark.parametrize("method,which", sorted(WINDOWS))
def test_adaptive_tableaux_converge_at_their_declared_orders(method, which):
    """Global error with a fixed step (the constant-step controller on the adaptive tableau) ~ h^order."""
    tab = TABLEAUX[method]
    tab, declared = (tab, tab.order) if which == "solution" else (_embedded_method(tab), tab.error_order)
    problem, t_end, steps = WINDOWS[(method, which)]
    errors = [_fixed_step_error(tab, problem, t_end, n) for n in steps]
    order = _slope([math.log(t_end / n) for n in steps], [math.log(e) for e in errors])
    assert abs(order - declared) < 0.35, (order, errors)
