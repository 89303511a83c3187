"""The 2-D toy densities: deterministic by seed, right shapes, and the geometry each name promises."""

import numpy as np
import pytest

from neode_cli.data.toy2d import TOY_SAMPLERS, sample_toy

NAMES = ["circles", "moons", "8gaussians", "pinwheel", "2spirals", "checkerboard", "rings", "swissroll"]


def test_all_eight_toys_are_registered():
    assert sorted(TOY_SAMPLERS) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_toy_is_deterministic_by_seed(name):
    a = sample_toy(name, 500, seed=3)
    b = sample_toy(name, 500, seed=3)
    c = sample_toy(name, 500, seed=4)
    assert a.shape == (500, 2) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.isfinite(a).all()
    assert np.abs(a).max() < 8.0  # FFJORD's scale: inside roughly [-4, 4]^2 (a few noisy points beyond)


def test_circles_lie_on_two_radii():
    r = np.linalg.norm(sample_toy("circles", 4000, seed=0), axis=1)
    assert np.mean(np.abs(r - 3.0) < 0.5) == pytest.approx(0.5, abs=0.03)
    assert np.mean(np.abs(r - 1.5) < 0.5) == pytest.approx(0.5, abs=0.03)


def test_rings_lie_on_four_radii():
    r = np.linalg.norm(sample_toy("rings", 4000, seed=0), axis=1)
    nearest = np.min(np.abs(r[:, None] - np.array([3.0, 2.25, 1.5, 0.75])), axis=1)
    assert np.mean(nearest < 0.3) > 0.99


def test_eight_gaussians_cluster_around_eight_centres():
    x = sample_toy("8gaussians", 4000, seed=0)
    angles = 2 * np.pi * np.arange(8) / 8
    centres = 4.0 / np.sqrt(2.0) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    owner = np.argmin(np.linalg.norm(x[:, None] - centres[None], axis=2), axis=1)
    counts = np.bincount(owner, minlength=8)
    assert counts.min() > 400  # 500 expected per component


def test_checkerboard_fills_only_black_squares():
    x = sample_toy("checkerboard", 4000, seed=0) / 2.0  # board of unit squares on [-2, 2]^2
    colour = (np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2
    assert np.all(colour == colour[0])
    assert np.abs(x).max() <= 2.0


def test_unknown_toy_names_the_valid_ones():
    with pytest.raises(ValueError, match="valid: circles, moons"):
        sample_toy("spiral", 10, seed=0)
