"""Augmented neural ODEs (Dupont et al. 2019): zero dimensions let a flow represent maps a plain ODE cannot."""

import pytest
import torch
from conftest import read_summary, run_neode
from test_latent_task import TINY_CLI

from neode_cli.integrator import Integrator
from neode_cli.models.augment import augment
from neode_cli.models.latent_ode import LatentDynamics, LatentODE
from neode_cli.models.odenet import ODEBlock, ODENet


def _fit_reflection(augment_dim: int, steps: int = 200) -> float:
    """Train ``x -> -x`` on [-1, 1] with a 1-D neural ODE (+ ``augment_dim`` zero dims); the final MSE.

    The prediction is the first coordinate of the flow at t = 1 (no learned read-out), so only the flow can
    reverse the order of the points.
    """
    torch.manual_seed(0)
    integrator = Integrator(method="rk4", gradient="backprop", options={"step_size": 0.25})
    block = ODEBlock(LatentDynamics(1 + augment_dim, 16, "tanh"), integrator, augment_dim=augment_dim)
    optimizer = torch.optim.Adam(block.parameters(), lr=3e-2)
    x = torch.linspace(-1, 1, 64).unsqueeze(1)  # (64, 1)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (block(x)[:, :1] + x).pow(2).mean()
        loss.backward()
        optimizer.step()
    return loss.item()


def test_plain_1d_ode_cannot_learn_reflection_but_augmented_one_can():
    # A 1-D flow is increasing in x, so the best it can do for -x is shrink everything towards 0:
    # MSE >= about E[x^2] = 1/3 on [-1, 1]. One extra dimension lets the flow rotate the line by pi.
    plain = _fit_reflection(0)
    augmented = _fit_reflection(1)
    assert plain > 0.3
    assert augmented < 0.01


def test_augment_appends_zero_channels():
    h = torch.randn(3, 2, 4, 4)
    out = augment(h, 5)
    assert out.shape == (3, 7, 4, 4)
    assert torch.equal(out[:, :2], h) and not out[:, 2:].any()
    assert augment(h, 0) is h


def test_augmented_odenet_and_latent_ode_shapes_and_sizes():
    integrator = Integrator(method="rk4", gradient="backprop", options={"step_size": 0.5})
    plain = ODENet(integrator, channels=4)
    net = ODENet(integrator, channels=4, augment_dim=3)  # GroupNorm groups adapt to 7 channels
    x = torch.rand(2, 1, 28, 28)
    assert net(x).shape == (2, 10)
    assert net.ode_block_output(x).shape[1] == 7
    assert sum(p.numel() for p in net.parameters()) > sum(p.numel() for p in plain.parameters())

    model = LatentODE(integrator, latent_dim=4, augment_dim=2)
    assert model.dynamics.net[0].in_features == 6
    obs_t = torch.tensor([[0.1, 0.5, 0.9], [0.2, 0.3, 0.8]])
    obs_x = torch.randn(2, 3, 2)
    loss, _ = model.loss(obs_t, obs_x)
    loss.backward()
    assert model.predict(obs_t, obs_x, torch.linspace(0, 1, 5)).shape == (2, 5, 2)
    with pytest.raises(ValueError, match="augment_dim"):
        LatentODE(integrator, augment_dim=-1)


def test_augment_dim_from_the_command_line(train_run, tmp_path):
    code, run_dir = train_run("model.augment_dim=2", "logger=none")
    assert code == 0
    assert read_summary(run_dir)["augment_dim"] == 2
    run_dir = tmp_path / "latent"
    code = run_neode(["train", "model=latent_ode", "model.augment_dim=1", *TINY_CLI, f"hydra.run.dir={run_dir}"])
    assert code == 0
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["augment_dim"] == 1
