"""Latent ODE and RNN baseline on a tiny spiral problem: shapes, likelihoods, gradients, learning."""

import math

import pytest
import torch

from neode_cli.integrator import Integrator
from neode_cli.models.latent_ode import LatentODE
from neode_cli.models.rnn import RNNBaseline, time_gaps
from neode_cli.tasks.latent import SequenceModel, build_task

TINY = dict(n_spirals=24, n_train=16, n_window=12, n_extrap=6, n_obs=5, n_grid=120, batch_size=8,
            test_batch_size=8, noise_std=0.1)


def observations(batch=3, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs_t = (torch.rand(batch, n, generator=g) * 2).sort(1).values
    return obs_t, torch.randn(batch, n, 2, generator=g)


def latent_ode(gradient="adjoint", dtype=torch.float32, activation="elu"):
    torch.manual_seed(0)
    return LatentODE(Integrator(method="dopri5", rtol=1e-6, atol=1e-6, gradient=gradient),
                     activation=activation).to(dtype)


@pytest.mark.parametrize("make", [latent_ode, RNNBaseline])
def test_both_models_implement_the_task_interface_with_the_right_shapes(make):
    model = make()
    assert isinstance(model, SequenceModel)
    obs_t, obs_x = observations()
    loss, terms = model.loss(obs_t, obs_x)
    assert loss.shape == () and math.isfinite(loss.item()) and terms
    query = torch.tensor([0.1, 0.5, 1.9, 2.5, 3.0])              # inside and past the observations
    assert model.predict(obs_t, obs_x, query).shape == (3, 5, 2)


def test_time_gaps_start_from_the_window_start():
    gaps = time_gaps(torch.tensor([[0.5, 0.7, 1.5]]))
    assert torch.allclose(gaps, torch.tensor([[0.5, 0.2, 0.8]]))


def test_latent_ode_elbo_terms_are_the_gaussian_nll_and_the_kl():
    model = latent_ode()
    obs_t, obs_x = observations()
    torch.manual_seed(7)
    loss, terms = model.loss(obs_t, obs_x)
    assert terms["neg_elbo"] == pytest.approx(terms["recon_nll"] + terms["kl"], rel=1e-5)
    assert loss.item() == pytest.approx(terms["neg_elbo"], rel=1e-6)
    # Recompute both terms from the same sample of z0 with torch.distributions, one sequence at a time.
    with torch.no_grad():
        mean, logvar = model.encode(obs_t, obs_x)
        torch.manual_seed(7)
        z0 = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        decoded = torch.stack([model.decode_at(z0[b:b + 1], obs_t[b])[0] for b in range(3)])
        likelihood = torch.distributions.Normal(decoded, model.likelihood_std)
        recon = -likelihood.log_prob(obs_x).sum((1, 2)).mean()
        posterior = torch.distributions.Normal(mean, (0.5 * logvar).exp())
        kl = torch.distributions.kl_divergence(posterior, torch.distributions.Normal(0.0, 1.0)).sum(-1).mean()
    assert terms["recon_nll"] == pytest.approx(recon.item(), rel=1e-4)
    assert terms["kl"] == pytest.approx(kl.item(), rel=1e-4)


def test_latent_ode_adjoint_gradients_reach_every_parameter_and_match_backprop():
    obs_t, obs_x = (v.double() for v in observations())
    grads = {}
    # tanh: a smooth field, so both gradients converge to the exact one with the tolerance (ELU's kink at 0
    # leaves a gap of ~1e-4 between them at any tolerance).
    for gradient in ("adjoint", "backprop"):
        model = latent_ode(gradient, torch.float64, activation="tanh")
        torch.manual_seed(3)
        loss, _ = model.loss(obs_t, obs_x)
        loss.backward()
        grads[gradient] = {name: p.grad.clone() for name, p in model.named_parameters()}
    for name, grad in grads["adjoint"].items():
        assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0, name
        reference = grads["backprop"][name]
        assert float((grad - reference).abs().max()) < 1e-4 * float(reference.abs().max()), name


def test_rnn_nll_is_the_gaussian_log_likelihood_of_its_one_step_predictions():
    torch.manual_seed(0)
    model = RNNBaseline()
    obs_t, obs_x = observations()
    loss, terms = model.loss(obs_t, obs_x)
    _, mean, std = model._teacher_forced(obs_t, obs_x)
    expected = -torch.distributions.Normal(mean, std).log_prob(obs_x).sum((1, 2)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and terms["nll"] == pytest.approx(loss.item())


def test_rnn_predicts_observed_times_one_step_ahead_and_rolls_out_past_the_end():
    torch.manual_seed(0)
    model = RNNBaseline()
    obs_t, obs_x = observations(batch=2, n=4)
    _, mean, _ = model._teacher_forced(obs_t, obs_x)
    # At an observed time, the prediction is the teacher-forced one (made before seeing that point).
    for b in range(2):
        at_obs = model.predict(obs_t[b:b + 1], obs_x[b:b + 1], obs_t[b])
        assert torch.allclose(at_obs[0], mean[b], atol=1e-6)
    # Past the last observation each prediction is fed back as the next input.
    end = float(obs_t.max())
    query = torch.tensor([end + 0.1, end + 0.3, end + 0.4])
    predicted = model.predict(obs_t, obs_x, query)
    states, _, _ = model._teacher_forced(obs_t, obs_x)
    state, x, t = states[:, -1], obs_x[:, -1], obs_t[:, -1]
    for q in range(3):
        state, x = model._step(x, query[q] - t, state)
        t = query[q].expand(2)
        assert torch.allclose(predicted[:, q], x, atol=1e-6)


@pytest.mark.parametrize("which", ["latent_ode", "rnn"])
def test_training_on_tiny_spirals_lowers_the_loss_and_the_extrapolation_error(which):
    task = build_task(**TINY)
    torch.manual_seed(0)
    model = (LatentODE(Integrator(method="dopri5", rtol=1e-3, atol=1e-3, gradient="adjoint"))
             if which == "latent_ode" else RNNBaseline())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    before = task.evaluate(model.eval())
    model.train()
    losses = []
    for epoch in range(8):
        for batch in task.train_batches(epoch):
            loss, _ = task.training_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    after = task.evaluate(model.eval())
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3])
    assert after["test_loss"] < before["test_loss"]
    assert after["test_rmse_interp"] < before["test_rmse_interp"]
