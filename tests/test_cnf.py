"""CNF numerics: exact trace vs the autograd Jacobian, Hutchinson's unbiasedness, closed-form log-densities."""

import math

import pytest
import torch
from torch import nn

from neode_cli.integrator import Integrator
from neode_cli.models.cnf import CNF, AugmentedDynamics, MLPField, PlanarField, draw_noise, exact_trace, hutchinson_trace


class LinearField(nn.Module):
    """dz/dt = A z: the flow is z(t) = expm(A t) z(0) and tr(df/dz) = tr(A) everywhere."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = nn.Parameter(a.clone())

    def forward(self, t, z):
        return z @ self.a.T


A = torch.tensor([[0.3, -0.8], [0.5, -0.2]], dtype=torch.float64)


def tight(gradient="backprop"):
    return Integrator(method="dopri5", rtol=1e-8, atol=1e-8, gradient=gradient)


def linear_cnf(a=A, **kwargs) -> CNF:
    model = CNF(tight(kwargs.pop("gradient", "backprop")), **kwargs).double()
    model.field = LinearField(a)  # a field with a known flow
    return model


def closed_form_log_prob(x, a, t1, std):
    """log q(x) for dz/dt = A z from N(0, std^2 I): z0 = expm(-A t1) x, minus t1 tr(A)."""
    z0 = x @ torch.linalg.matrix_exp(-a * t1).T
    base = -0.5 * (z0 / std).pow(2).sum(1) - 2 * math.log(std) - math.log(2 * math.pi)
    return base - t1 * torch.trace(a)


@pytest.mark.parametrize("field", [PlanarField(2, units=5), MLPField(2, [8, 8], "concatsquash"),
                                   MLPField(2, [8], "concat")])
def test_exact_trace_equals_trace_of_autograd_jacobian(field):
    torch.manual_seed(0)
    field = field.double()
    z = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.37, dtype=torch.float64)
    trace = exact_trace(field(t, z), z, create_graph=False)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda v: field(t, v[None])[0], z[i].detach())
        assert trace[i].item() == pytest.approx(torch.trace(jac).item(), abs=1e-12)


def test_planar_closed_form_divergence_equals_autograd_trace():
    torch.manual_seed(6)
    field = PlanarField(2, units=7).double()
    z = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(0.8, dtype=torch.float64)
    dz, trace = field.forward_with_divergence(t, z)
    torch.testing.assert_close(dz, field(t, z))
    torch.testing.assert_close(trace, exact_trace(field(t, z), z, create_graph=False))


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased_within_its_standard_error(noise):
    torch.manual_seed(1)
    field = LinearField(A)
    z = torch.randn(20000, 2, dtype=torch.float64, requires_grad=True)
    estimates = hutchinson_trace(field(0.0, z), z, draw_noise(z, noise), create_graph=False)
    se = estimates.std() / math.sqrt(len(estimates))
    assert se > 0  # a non-symmetric A: the estimator really is random
    assert abs(estimates.mean() - torch.trace(A)) < 4 * se


def test_rademacher_noise_is_plus_minus_one_and_gaussian_has_unit_variance():
    like = torch.zeros(10000, 2)
    r = draw_noise(like, "rademacher", torch.Generator().manual_seed(0))
    assert set(r.unique().tolist()) == {-1.0, 1.0}
    g = draw_noise(like, "gaussian", torch.Generator().manual_seed(0))
    assert g.var().item() == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="valid: gaussian, rademacher"):
        draw_noise(like, "uniform")


def test_hutchinson_probe_is_fixed_for_the_whole_solve():
    # With one Rademacher probe e per sample for the whole solve, the log-density change is exactly
    # -t1 * e^T A e, i.e. one of the two values tr(A) +- (a12 + a21) times -t1 (a probe redrawn at every
    # evaluation would average between them).
    torch.manual_seed(2)
    model = linear_cnf(trace="hutchinson", noise="rademacher", t1=0.5)
    model.train()
    x = torch.randn(64, 2, dtype=torch.float64)
    change = model.log_prob(x) - closed_form_log_prob(x, A, 0.5, 1.0) - 0.5 * torch.trace(A)
    allowed = torch.tensor([torch.trace(A) + (A[0, 1] + A[1, 0]), torch.trace(A) - (A[0, 1] + A[1, 0])],
                           dtype=torch.float64) * -0.5
    distance = (change[:, None] - allowed[None]).abs().min(dim=1).values
    assert distance.max() < 1e-6
    assert ((change - allowed[0]).abs() < 1e-6).any() and ((change - allowed[1]).abs() < 1e-6).any()


def test_log_density_of_linear_flow_matches_closed_form():
    model = linear_cnf(t1=0.7, base_std=1.3)
    x = torch.randn(16, 2, dtype=torch.float64)
    torch.testing.assert_close(model.log_prob(x), closed_form_log_prob(x, A, 0.7, 1.3), atol=1e-6, rtol=0)
    # Halfway along the flow: the marginal at time 0.35.
    torch.testing.assert_close(model.log_prob(x, fraction=0.5), closed_form_log_prob(x, A, 0.35, 1.3),
                               atol=1e-6, rtol=0)


def test_samples_carry_their_closed_form_log_density():
    torch.manual_seed(3)
    model = linear_cnf(t1=0.7)
    x, log_q = model.sample(16)
    torch.testing.assert_close(log_q, closed_form_log_prob(x, A, 0.7, 1.0), atol=1e-6, rtol=0)
    path = model.trajectory(8, [0.5, 1.0], generator=torch.Generator().manual_seed(0))
    assert path.shape == (2, 8, 2)


def test_evaluation_uses_the_exact_trace_even_when_training_uses_hutchinson():
    model = linear_cnf(trace="hutchinson", noise="gaussian")
    x = torch.randn(16, 2, dtype=torch.float64)
    model.eval()
    torch.testing.assert_close(model.log_prob(x), closed_form_log_prob(x, A, 1.0, 1.0), atol=1e-6, rtol=0)
    with torch.no_grad():  # as the loop evaluates: the trace still needs autograd inside
        torch.testing.assert_close(model.log_prob(x), closed_form_log_prob(x, A, 1.0, 1.0), atol=1e-6, rtol=0)
    model.train()
    assert not torch.allclose(model.log_prob(x), closed_form_log_prob(x, A, 1.0, 1.0), atol=1e-3)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_adjoint_gradient_matches_backprop_through_the_trace(trace):
    # The loss depends on the parameters through the trace too: the dynamics must keep that graph when
    # the adjoint differentiates them.
    grads = []
    for gradient in ("backprop", "adjoint"):
        torch.manual_seed(4)
        model = CNF(tight(gradient), field="planar", units=3, trace=trace).double()
        x = torch.randn(8, 2, dtype=torch.float64)
        torch.manual_seed(5)  # same Hutchinson probe in both runs
        model.log_prob(x).mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_augmented_dynamics_returns_field_and_negative_trace():
    field = LinearField(A)
    dz, dlogp = AugmentedDynamics(field, None)(torch.tensor(0.0), (torch.ones(3, 2, dtype=torch.float64),
                                                                   torch.zeros(3, dtype=torch.float64)))
    torch.testing.assert_close(dlogp, -torch.trace(A).expand(3))
    torch.testing.assert_close(dz, torch.ones(3, 2, dtype=torch.float64) @ A.T)


def test_unknown_choices_name_the_valid_ones():
    with pytest.raises(ValueError, match="valid: exact, hutchinson"):
        CNF(tight(), trace="stochastic")
    with pytest.raises(ValueError, match="valid: planar, mlp"):
        CNF(tight(), field="resnet")
