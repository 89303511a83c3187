"""The discrete planar flow baseline: log-determinants vs autograd, invertibility, the numeric inverse."""

import pytest
import torch

from neode_cli.models.planar import PlanarFlow


def flow(layers=4, seed=0, init_std=1.0) -> PlanarFlow:
    torch.manual_seed(seed)
    return PlanarFlow(dim=2, units=layers, init_std=init_std).double()


def test_log_det_matches_autograd_jacobian():
    model = flow()
    z = torch.randn(5, 2, dtype=torch.float64)
    _, logdet = model.forward_layers(z)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: model.forward_layers(v[None])[0][0], z[i])
        assert logdet[i].item() == pytest.approx(torch.linalg.det(jac).abs().log().item(), abs=1e-10)


def test_constraint_keeps_every_layer_invertible():
    model = flow(layers=3)
    with torch.no_grad():  # u pointing against w: w^T u << -1 would make the raw layer non-invertible
        model.u.copy_(-5.0 * model.w)
    w, u_hat, _ = model.constrained_params()
    assert ((w * u_hat).sum(dim=1) > -1.0).all()


def test_log_prob_inverts_sampling():
    model = flow(layers=6)
    x, log_q = model.sample(64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model.log_prob(x), log_q, atol=1e-9, rtol=0)


def test_log_prob_gradient_matches_finite_differences():
    # The inverse is found by bisection; the gradient must still be exact (implicit-function step).
    model = flow(layers=3)
    x = torch.randn(4, 2, dtype=torch.float64)
    model.log_prob(x).sum().backward()
    eps = 1e-6
    for param in (model.w, model.u, model.b):
        numeric = torch.zeros_like(param)
        with torch.no_grad():
            for i in range(param.numel()):
                param.view(-1)[i] += eps
                up = model.log_prob(x).sum()
                param.view(-1)[i] -= 2 * eps
                down = model.log_prob(x).sum()
                param.view(-1)[i] += eps
                numeric.view(-1)[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(param.grad, numeric, atol=1e-6, rtol=1e-6)


def test_trajectory_and_fractional_density_use_the_first_layers():
    model = flow(layers=4)
    gen = torch.Generator().manual_seed(2)
    path = model.trajectory(10, [0.5, 1.0], generator=gen)
    z0 = 1.0 * torch.randn(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(path[0], model.forward_layers(z0, 0, 2)[0])
    torch.testing.assert_close(path[1], model.forward_layers(z0)[0])
    half, logdet = model.forward_layers(z0, 0, 2)
    torch.testing.assert_close(model.log_prob(half, fraction=0.5), model.base_log_prob(z0) - logdet)
