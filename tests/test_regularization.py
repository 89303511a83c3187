"""RNODE regularisers (Finlay et al. 2020) and FFJORD's learned end time: values against closed forms on a linear
field, gradients against finite differences, the penalty in the loss."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from neode_cli.integrator import Integrator
from neode_cli.models.cnf import CNF
from neode_cli.models.regularization import (Regularization, RegularizedDynamics, collect_regularization,
                                             solve_regularized)
from neode_cli.tasks.density import build_toy_task

A = torch.tensor([[0.3, -0.8], [0.5, -0.2]], dtype=torch.float64)


class LinearField(nn.Module):
    def __init__(self, a=A):
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, t, z):
        return z @ self.a.T


class TanhField(nn.Module):
    """A small nonlinear time-dependent field (float64)."""

    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = nn.Parameter(torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.7)
        self.w2 = nn.Parameter(torch.randn(5, 2, generator=g, dtype=torch.float64) * 0.7)

    def forward(self, t, z):
        return torch.tanh(torch.cat([z, t.expand(z.shape[0], 1)], dim=1) @ self.w1) @ self.w2


def tight(gradient="backprop"):
    return Integrator(method="dopri5", rtol=1e-10, atol=1e-10, gradient=gradient)


def kinetic_closed_form(z0, t1, nodes=40):
    """int_0^t1 ||A expm(A t) z0||^2 dt per sample, by Gauss-Legendre on the exact solution."""
    x, w = (torch.from_numpy(v) for v in np.polynomial.legendre.leggauss(nodes))
    ts, ws = 0.5 * t1 * (x + 1), 0.5 * t1 * w
    total = torch.zeros(z0.shape[0], dtype=torch.float64)
    for t, wt in zip(ts, ws):
        z = z0 @ torch.linalg.matrix_exp(A * t).T
        total += wt * (z @ A.T).pow(2).sum(1)
    return total


def test_kinetic_and_jacobian_of_a_linear_field_match_closed_forms():
    z0 = torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.2, -1.1]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.7], dtype=torch.float64)
    noise = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    zeros = torch.zeros(3, dtype=torch.float64)
    dynamics = RegularizedDynamics(LinearField(), ("kinetic", "jacobian"), noise)
    z, kinetic, jacobian = tight()(dynamics, (z0, zeros, zeros), t)
    torch.testing.assert_close(z[-1], z0 @ torch.linalg.matrix_exp(A * 0.7).T, atol=1e-9, rtol=0)
    torch.testing.assert_close(kinetic[-1], kinetic_closed_form(z0, 0.7), atol=1e-9, rtol=0)
    # Hutchinson with a fixed probe e: ||e^T A||^2 is constant along the flow; its mean over probes is ||A||_F^2.
    torch.testing.assert_close(jacobian[-1], 0.7 * (noise @ A).pow(2).sum(1), atol=1e-9, rtol=0)
    many = torch.randn(20000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    estimates = (many @ A).pow(2).sum(1)
    assert abs(estimates.mean() - A.pow(2).sum()) < 4 * estimates.std() / math.sqrt(len(estimates))


def linear_cnf(**kwargs):
    model = CNF(tight(kwargs.pop("gradient", "backprop")), **kwargs).double()
    model.field = LinearField()
    return model


def test_cnf_regularisers_of_a_linear_flow_match_closed_forms():
    # Exact trace: the Frobenius term is exact, ||A||_F^2 t1; kinetic: along the flow from the base samples.
    reg = Regularization(kinetic_weight=0.5, jacobian_weight=2.0)
    model = linear_cnf(t1=0.7, regularization=reg)
    model.train()
    torch.manual_seed(0)
    with collect_regularization() as terms:
        x, _ = model.sample(5)
    # sample() integrates from base samples z0 forwards; recover z0 from x by the exact inverse flow
    z0 = x.detach() @ torch.linalg.matrix_exp(-A * 0.7).T
    assert terms.values["jacobian"].item() == pytest.approx(0.7 * A.pow(2).sum().item(), abs=1e-9)
    assert terms.values["kinetic"].item() == pytest.approx(kinetic_closed_form(z0, 0.7).mean().item(), abs=1e-8)
    assert terms.penalty.item() == pytest.approx(0.5 * terms.values["kinetic"].item()
                                                 + 2.0 * terms.values["jacobian"].item(), rel=1e-12)
    # log_prob integrates from t1 back to 0: the terms are still positive integrals over the flow
    with collect_regularization() as back:
        model.log_prob(x.detach())
    assert back.values["jacobian"].item() == pytest.approx(0.7 * A.pow(2).sum().item(), abs=1e-9)
    assert back.values["kinetic"].item() == pytest.approx(terms.values["kinetic"].item(), rel=1e-7)
    # Hutchinson trace: the Frobenius term shares the trace's probe, so it is ||e^T A||^2 t1 for that probe
    model = linear_cnf(t1=0.7, regularization=reg, trace="hutchinson", noise="rademacher")
    model.train()
    with collect_regularization() as hutch:
        model.log_prob(x.detach())
    allowed = {round(0.7 * (torch.tensor(e, dtype=torch.float64) @ A).pow(2).sum().item(), 9)
               for e in ([1, 1], [1, -1])}
    assert 0.7 * A.pow(2).sum().item() == pytest.approx(sum(allowed) / 2, rel=1e-12)
    assert min(allowed) - 1e-9 <= hutch.values["jacobian"].item() <= max(allowed) + 1e-9
    # evaluation integrates no terms
    model.eval()
    with collect_regularization() as none:
        model.log_prob(x.detach())
    assert none.values == {} and none.add_to(torch.tensor(1.0)).item() == 1.0


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_regulariser_gradients_match_finite_differences(gradient):
    field = TanhField()
    z0 = torch.tensor([[0.4, -0.2], [0.1, 0.9]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    integrator = Integrator(method="rk4", gradient=gradient, options={"step_size": 0.05})
    fd_integrator = Integrator(method="rk4", gradient="backprop", options={"step_size": 0.05})
    reg = Regularization(kinetic_weight=0.3, jacobian_weight=0.7)

    def loss(solver):
        torch.manual_seed(3)  # the same Hutchinson probe every time
        with collect_regularization() as terms:
            z = solve_regularized(solver, field, z0, t, reg, training=True)
        return terms.add_to(z[-1].pow(2).sum())

    field.zero_grad()
    loss(integrator).backward()
    grads = torch.cat([p.grad.view(-1) for p in field.parameters()])
    fd = []
    with torch.no_grad():
        for p in field.parameters():
            flat = p.data.view(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + 1e-6
                up = loss(fd_integrator).item()
                flat[i] = old - 1e-6
                down = loss(fd_integrator).item()
                flat[i] = old
                fd.append((up - down) / 2e-6)
    # backprop and checkpoint differentiate the rk4 discretisation itself; the adjoint the continuous ODE
    # (its backward solve on the same grid differs by the discretisation error, about 1e-7 here)
    tol = dict(rtol=1e-5, atol=1e-6) if gradient == "adjoint" else dict(rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(grads, torch.tensor(fd, dtype=torch.float64), **tol)


@pytest.mark.parametrize("gradient", ["backprop", "adjoint", "checkpoint"])
def test_learned_end_time_gradient_matches_finite_differences(gradient):
    torch.manual_seed(4)
    model = CNF(tight(gradient), field="mlp", hidden_dims=[6], t1=0.6, learn_t1=True).double()
    x = torch.randn(8, 2, dtype=torch.float64)
    assert model.t1 == pytest.approx(0.6)
    model.zero_grad()
    (-model.log_prob(x).mean()).backward()
    raw = model.end_time.raw
    dloss_dt1 = raw.grad.item() / torch.sigmoid(raw).item()  # d softplus(raw) / d raw = sigmoid(raw)

    def loss_at(t1):
        other = CNF(tight(), field="mlp", hidden_dims=[6], t1=t1).double()
        other.field.load_state_dict(model.field.state_dict())
        with torch.no_grad():
            return (-other.log_prob(x).mean()).item()

    fd = (loss_at(0.6 + 1e-5) - loss_at(0.6 - 1e-5)) / 2e-5
    assert dloss_dt1 == pytest.approx(fd, rel=1e-5, abs=1e-8)


def test_learned_end_time_is_positive_and_trains():
    torch.manual_seed(5)
    model = CNF(Integrator(method="dopri5", rtol=1e-4, atol=1e-4, gradient="backprop"), field="planar", units=4,
                t1=0.3, learn_t1=True)
    task = build_toy_task("moons", batch_size=64, batches_per_epoch=1, n_test=64, test_batch_size=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(5):
        optimizer.zero_grad()
        loss, _ = task.training_loss(model, task.train_batches(0)[0])
        loss.backward()
        optimizer.step()
    assert model.t1 > 0 and model.t1 != pytest.approx(0.3, abs=1e-4)
    model.eval()
    with torch.no_grad():
        assert task.evaluate(model)["t1"] == pytest.approx(model.t1)


@pytest.mark.parametrize("integrator", [Integrator(method="dopri5", rtol=1e-6, atol=1e-6, gradient="backprop"),
                                        Integrator(method="bosh3", rtol=1e-5, atol=1e-5, gradient="adjoint",
                                                   backend="torchdiffeq")])
def test_regulariser_states_leave_the_step_sizes_alone(integrator):
    # The integrals ride along outside the error norm: the solver takes exactly the steps of the plain solve,
    # so a regularised run's NFE measures its dynamics, not the size of its accumulators.
    from neode_cli.ode import collect_stats

    field = TanhField()
    z0 = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 3
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    with collect_stats() as plain:
        expected = integrator(field, z0, t)
    reg = Regularization(kinetic_weight=1.0, jacobian_weight=1.0)
    with collect_stats() as regularised, collect_regularization() as terms:
        z = solve_regularized(integrator, field, z0, t, reg, training=True)
    assert regularised.nfe_forward == plain.nfe_forward
    torch.testing.assert_close(z, expected, rtol=0, atol=1e-12)
    assert set(terms.values) == {"kinetic", "jacobian"}
    # Counted in the norm, the same accumulators change the steps (what error_components prevents).
    with collect_stats() as counted:
        zeros = z0.new_zeros(16)
        integrator(RegularizedDynamics(field, ("kinetic", "jacobian"), torch.ones_like(z0)), (z0, zeros, zeros), t)
    def steps(stats):  # (the torchdiffeq backend counts evaluations only)
        return stats.nfe_forward, stats.steps_accepted, stats.steps_rejected

    assert steps(counted) != steps(plain)


def test_error_components_needs_a_tuple_state():
    with pytest.raises(ValueError, match="error_components=1 needs a tuple state"):
        tight()(TanhField(), torch.zeros(1, 2, dtype=torch.float64), torch.tensor([0.0, 1.0]), error_components=1)
