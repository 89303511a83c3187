"""Density tasks and target energies: determinism, losses with known values, figures written."""

import math

import pytest
import torch
from torch import nn

from neode_cli.data.energies import ENERGIES, get_energy, u1, u2, u3, u4
from neode_cli.integrator import Integrator
from neode_cli.models.cnf import CNF
from neode_cli.models.planar import PlanarFlow
from neode_cli.tasks.base import Task
from neode_cli.tasks.density import build_energy_task, build_toy_task, reverse_kl


class ZeroField(nn.Module):
    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, t, z):
        return torch.zeros_like(z) + 0 * self.unused


def fast_cnf(**kwargs) -> CNF:
    """A small CNF on a fixed rk4 grid: seconds-scale tests."""
    return CNF(Integrator(method="rk4", gradient="backprop", options={"step_size": 0.25}), units=4, **kwargs)


def test_energies_match_rezende_mohamed_formulas_at_a_point():
    z = torch.tensor([[1.0, 0.5]])
    w1 = math.sin(2 * math.pi / 4)
    w2 = 3 * math.exp(0.0)
    w3 = 3 / (1 + math.exp(0.0))
    expected_u1 = 0.5 * ((math.hypot(1.0, 0.5) - 2) / 0.4) ** 2 - math.log(
        math.exp(-0.5 * (1 / 0.6) ** 2) + math.exp(-0.5 * (3 / 0.6) ** 2))
    assert u1(z).item() == pytest.approx(expected_u1, rel=1e-6)
    assert u2(z).item() == pytest.approx(0.5 * ((0.5 - w1) / 0.4) ** 2, rel=1e-6)
    assert u3(z).item() == pytest.approx(-math.log(math.exp(-0.5 * ((0.5 - w1) / 0.35) ** 2)
                                                   + math.exp(-0.5 * ((0.5 - w1 + w2) / 0.35) ** 2)), rel=1e-6)
    assert u4(z).item() == pytest.approx(-math.log(math.exp(-0.5 * ((0.5 - w1) / 0.4) ** 2)
                                                   + math.exp(-0.5 * ((0.5 - w1 + w3) / 0.35) ** 2)), rel=1e-6)


def test_energies_stay_finite_far_from_the_modes():
    far = torch.tensor([[30.0, -30.0], [-25.0, 40.0]])
    for energy in ENERGIES.values():
        assert torch.isfinite(energy(far)).all()
    with pytest.raises(ValueError, match="valid: u1, u2, u3, u4"):
        get_energy("u5")


def test_reverse_kl_of_base_against_its_own_energy_is_minus_log_z():
    # q = N(0, I) (a CNF whose field is zero) and U = |z|^2 / 2: log q + U = -log(2 pi) for every sample.
    model = fast_cnf()
    model.field = ZeroField()
    value = reverse_kl(model, lambda z: 0.5 * z.pow(2).sum(1), 256)
    assert value.item() == pytest.approx(-math.log(2 * math.pi), abs=1e-5)


def test_toy_task_batches_are_deterministic_given_the_torch_rng():
    task = build_toy_task(name="moons", batch_size=32, batches_per_epoch=3, n_test=100, test_batch_size=40)
    assert isinstance(task, Task)
    torch.manual_seed(0)
    a = list(task.train_batches(0))
    torch.manual_seed(0)
    b = list(task.train_batches(0))
    c = list(task.train_batches(0))
    assert len(a) == 3 and a[0].shape == (32, 2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("make_model", [lambda: fast_cnf(trace="hutchinson"), lambda: PlanarFlow(units=3)])
def test_toy_task_trains_and_evaluates_any_density_model(make_model):
    torch.manual_seed(0)
    task = build_toy_task(name="circles", batch_size=16, batches_per_epoch=2, n_test=50, test_batch_size=20)
    model = make_model()
    loss, metrics = task.training_loss(model, next(iter(task.train_batches(0))))
    loss.backward()
    assert math.isfinite(metrics["nll"]) and all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():
        full = task.evaluate(model)
        part = task.evaluate(model, limit_batches=1)
    solves = isinstance(model, CNF)  # the task reports its own solver work, only where there is some
    assert set(full) == {"test_nll", "test_nll_se"} | ({"test_nfe_forward"} if solves else set())
    assert math.isfinite(full["test_nll"]) and (not solves or full["test_nfe_forward"] >= 2)
    assert full["test_nll"] != part["test_nll"]  # 50 points vs the first 20
    assert task.record_fields()["dataset"] == "circles"


def test_energy_task_evaluation_is_reproducible_and_reports_kl_loss():
    torch.manual_seed(0)
    task = build_energy_task(target="u2", batch_size=16, batches_per_epoch=2, n_eval=100, eval_batch_size=64)
    assert list(task.train_batches(0)) == [16, 16]
    model = PlanarFlow(units=2)
    loss, metrics = task.training_loss(model, 16)
    loss.backward()
    assert math.isfinite(metrics["kl"])
    first, second = task.evaluate(model), task.evaluate(model)
    assert first == second and set(first) == {"kl_loss", "kl_loss_se"}
    assert task.record_fields()["target"] == "u2"


class RecordingWriter:
    def __init__(self):
        self.tags = []

    def add_figure(self, tag, figure, step):
        self.tags.append((tag, step))


@pytest.mark.parametrize("build", [
    lambda: build_toy_task(name="8gaussians", n_test=200, grid_size=12, figure_samples=50),
    lambda: build_energy_task(target="u1", grid_size=12, figure_samples=50),
])
def test_log_figures_writes_density_and_snapshot_pngs(tmp_path, build):
    torch.manual_seed(0)
    task, model, writer = build(), fast_cnf(), RecordingWriter()
    model.train()
    task.log_figures(model, tmp_path, writer, epoch=3)
    for name in ("density", "snapshots"):
        png = tmp_path / "figures" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert writer.tags == [("figures/density", 3), ("figures/snapshots", 3)]
    assert model.training  # the figures put the model back in the mode they found it in
