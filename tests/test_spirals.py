"""The spiral generator: shapes, geometry, directions, irregular sampling, determinism."""

import math

import pytest
import torch

from neode_cli.data.spirals import make_spirals, sample_observation_indices, spiral_curve

SMALL = dict(n_spirals=40, n_train=30, n_window=20, n_extrap=10, n_obs=7, n_grid=200, noise_std=0.1)


def test_shapes_split_and_time_grid():
    data = make_spirals(**SMALL)
    assert data.times.shape == (30,)
    assert data.clean.shape == data.noisy.shape == (40, 30, 2)
    assert data.obs_index.shape == (40, 7) and data.n_obs == 7
    assert data.n_train == 30 and data.n_window == 20
    dt = 6 * math.pi / 199
    assert torch.allclose(data.times, torch.arange(30) * dt)
    obs_t, obs_x = data.observations(torch.tensor([3, 5]))
    assert obs_t.shape == (2, 7) and obs_x.shape == (2, 7, 2)
    assert torch.equal(obs_x[1, 2], data.noisy[5, data.obs_index[5, 2]])
    assert torch.equal(obs_t[1], data.times[data.obs_index[5]])


def test_points_lie_on_archimedean_spirals_with_noise_of_the_given_size():
    data = make_spirals(n_spirals=200, n_train=100, n_grid=1000, noise_std=0.3, b=0.3, centre=5.0)
    centre_x = torch.where(data.clockwise, -5.0, 5.0).unsqueeze(1)
    dx, dy = data.clean[..., 0] - centre_x, data.clean[..., 1]
    theta = (data.start_index.unsqueeze(1) + torch.arange(200)) * (6 * math.pi / 999)
    assert torch.allclose(torch.hypot(dx, dy), 0.3 * theta, atol=1e-4)          # r = a + b * theta, a = 0
    noise = data.noisy - data.clean
    assert abs(float(noise.std()) - 0.3) < 0.01 and abs(float(noise.mean())) < 0.01


def test_exactly_half_clockwise_and_the_sense_of_rotation_matches():
    data = make_spirals(**SMALL)
    assert int(data.clockwise.sum()) == 20
    centre_x = torch.where(data.clockwise, -5.0, 5.0).unsqueeze(1)
    relative = data.clean - torch.stack((centre_x.expand(-1, 30), torch.zeros(40, 30)), -1)
    step = relative[:, 1:] - relative[:, :-1]
    # z-component of (position from the centre) x (velocity): positive counter-clockwise, negative clockwise.
    cross = (relative[:, :-1, 0] * step[..., 1] - relative[:, :-1, 1] * step[..., 0]).sum(1)
    assert torch.equal(cross < 0, data.clockwise)


def test_mirror_image_turns_the_other_way():
    theta = torch.linspace(1.0, 2.0, 5, dtype=torch.float64)
    ccw = spiral_curve(theta, torch.tensor(False), a=0.1, b=0.3, centre=5.0)
    cw = spiral_curve(theta, torch.tensor(True), a=0.1, b=0.3, centre=5.0)
    assert torch.allclose(cw[:, 0] + 5.0, -(ccw[:, 0] - 5.0)) and torch.allclose(cw[:, 1], ccw[:, 1])


def test_observations_are_distinct_sorted_and_inside_the_window():
    index = sample_observation_indices(500, 20, 7, torch.Generator().manual_seed(3))
    assert index.shape == (500, 7)
    assert bool((index[:, 1:] > index[:, :-1]).all())                       # sorted and without repeats
    assert int(index.min()) >= 0 and int(index.max()) < 20
    # Uniform over the window: every index is chosen about 7/20 of the time.
    frequency = torch.bincount(index.flatten(), minlength=20).float() / 500
    assert float((frequency - 7 / 20).abs().max()) < 0.1
    assert torch.equal(sample_observation_indices(3, 20, 20, torch.Generator()), torch.arange(20).expand(3, 20))
    with pytest.raises(ValueError, match="n_obs=21"):
        sample_observation_indices(3, 20, 21, torch.Generator())


def test_deterministic_by_seed_and_spirals_independent_of_n_obs():
    a, b = make_spirals(**SMALL, seed=5), make_spirals(**SMALL, seed=5)
    for name in ("times", "clean", "noisy", "clockwise", "start_index", "obs_index"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    other = make_spirals(**SMALL, seed=6)
    assert not torch.equal(a.noisy, other.noisy)
    more = make_spirals(**{**SMALL, "n_obs": 15}, seed=5)
    assert torch.equal(a.noisy, more.noisy) and not torch.equal(a.obs_index, more.obs_index[:, :7])


def test_bad_sizes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="n_grid"):
        make_spirals(**{**SMALL, "n_grid": 25})
    with pytest.raises(ValueError, match="n_train"):
        make_spirals(**{**SMALL, "n_train": 40})
