"""method="scipy_solver": SciPy's solve_ivp forward, gradients by the adjoint, NFE counted, errors clear."""

import warnings

import pytest
import torch

from neode_cli.ode import (SolverError, StepSizeUnderflowError, collect_stats, odeint, odeint_adjoint)

from test_ode_adams import Field, check_gradients, reference, riccati

torchdiffeq = pytest.importorskip("torchdiffeq")
scipy_integrate = pytest.importorskip("scipy.integrate")

SOLVERS = ("LSODA", "RK45", "DOP853", "BDF", "Radau")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy warns about min_step for non-LSODA solvers (torchdiffeq too)
        yield


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scipy_solvers_match_exact_solution_and_torchdiffeq(solver, reverse, dtype):
    y0 = torch.tensor([0.8, 1.5], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 6, dtype=torch.float64)
    if reverse:
        t, y0 = t.flip(0), reference(y0, 1.0)
    exact = torch.stack([y0] + [reference(y0, float(ti), float(t[0])) for ti in t[1:]])
    y0, t = y0.to(dtype), t.to(dtype)
    options = {"solver": solver}
    ours = odeint(riccati, y0, t, method="scipy_solver", options=options)
    theirs = torchdiffeq.odeint(riccati, y0, t, method="scipy_solver", options=options)
    assert ours.dtype == dtype and ours.shape == (6, 2) and not ours.requires_grad
    assert (ours.double() - exact).abs().max() < 2e-5
    # same SciPy call; LSODA differs from torchdiffeq's by ~1e-9 (below its own error)
    assert torch.allclose(ours, theirs, rtol=1e-7, atol=1e-9 if dtype == torch.float64 else 1e-6)


def test_nfe_counts_every_call_including_finite_difference_jacobians():
    y0 = torch.tensor([0.8, 1.5], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for solver in ("RK45", "BDF", "LSODA"):
        calls = []

        def counted(t_, y):
            calls.append(1)
            return riccati(t_, y)

        with collect_stats() as s:
            odeint(counted, y0, t, method="scipy_solver", options={"solver": solver})
        ref = scipy_integrate.solve_ivp(lambda s_, z: (-z * z + __import__("math").cos(s_) * z), (0.0, 1.0),
                                        y0.numpy(), method=solver, rtol=1e-7, atol=1e-9, t_eval=[0.0, 1.0])
        assert s.nfe_forward == len(calls) and s.solves == 1
        if solver == "RK45":
            assert s.nfe_forward == ref.nfev
        if solver == "BDF":  # SciPy's nfev leaves out the Jacobian's difference quotients (njev >= 1)
            assert ref.njev >= 1 and s.nfe_forward >= ref.nfev + 2 * ref.njev


@pytest.mark.parametrize("solver", ["LSODA", "RK45", "BDF"])
def test_adjoint_gradients_through_scipy_match_finite_differences(solver):
    y0 = torch.tensor([0.5, 1.2], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.6, 1.0], dtype=torch.float64)
    with collect_stats() as s:
        check_gradients(Field(), y0, t, dict(method="scipy_solver", options={"solver": solver}, rtol=1e-10,
                                             atol=1e-10), adjoint=True, tol=1e-6)
    assert s.nfe_backward > 0


def test_adjoint_against_torchdiffeq_and_with_another_backward_method():
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    grads = []
    for run in ("ours", "theirs", "dopri5_backward"):
        field = Field()
        y0 = torch.tensor([0.5, 1.2], dtype=torch.float64, requires_grad=True)
        kwargs = dict(method="scipy_solver", options={"solver": "RK45"}, rtol=1e-10, atol=1e-10)
        if run == "theirs":
            out = torchdiffeq.odeint_adjoint(field, y0, t, **kwargs)
        elif run == "ours":
            out = odeint_adjoint(field, y0, t, **kwargs)
        else:
            out = odeint_adjoint(field, y0, t, adjoint_method="dopri5", adjoint_options={}, **kwargs)
        out[-1].square().sum().backward()
        grads.append(torch.cat([y0.grad, field.w.grad]))
    assert torch.allclose(grads[0], grads[1], atol=1e-7) and torch.allclose(grads[0], grads[2], atol=1e-7)


def test_backprop_gives_no_graph_as_torchdiffeq():
    y0 = torch.tensor([0.5, 1.2], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    out = odeint(Field(), y0, t, method="scipy_solver")
    assert not out.requires_grad
    assert not torchdiffeq.odeint(Field(), y0, t, method="scipy_solver").requires_grad


def test_single_time_and_errors():
    y0 = torch.tensor([1.0], dtype=torch.float64)
    assert torch.equal(odeint(riccati, y0, torch.tensor([0.5], dtype=torch.float64), method="scipy_solver"),
                       y0[None])
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="not a solve_ivp method; valid: LSODA, RK45"):
        odeint(riccati, y0, t, method="scipy_solver", options={"solver": "lsoda"})
    with pytest.raises(ValueError, match="unknown option.*'step_size'"):
        odeint(riccati, y0, t, method="scipy_solver", options={"step_size": 0.1})
    # y' = y^2, y(0) = 1 blows up at t = 1
    with pytest.raises(StepSizeUnderflowError, match=r"scipy_solver \(RK45\) failed at t=1.*step size"):
        odeint(lambda t_, y: y * y, y0, t, method="scipy_solver", options={"solver": "RK45"})
    assert issubclass(StepSizeUnderflowError, SolverError)
