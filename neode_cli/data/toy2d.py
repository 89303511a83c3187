"""Two-dimensional toy densities for maximum-likelihood flows (FFJORD's eight toys), generated here.

Every sampler is a pure function of ``(n, rng)`` and returns a float32 array of shape ``(n, 2)``; the
public entry point :func:`sample_toy` builds the generator from a seed, so the same ``(name, n, seed)``
always gives the same points. Scales follow the FFJORD convention (data roughly inside [-4, 4]^2), so one
standard-normal base density suits all of them.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Sampler = Callable[[int, np.random.Generator], np.ndarray]


def _circles(n: int, rng: np.random.Generator) -> np.ndarray:
    # Two concentric circles, radii 1 and 0.5 (factor 0.5), Gaussian noise 0.08, scaled by 3.
    n_outer = n // 2
    n_inner = n - n_outer
    angles = rng.uniform(0.0, 2 * np.pi, size=n)
    radii = np.concatenate([np.ones(n_outer), 0.5 * np.ones(n_inner)])
    x = radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    x += rng.normal(scale=0.08, size=x.shape)
    return 3.0 * x


def _moons(n: int, rng: np.random.Generator) -> np.ndarray:
    # Two interleaving half circles (upper one centred at 0, lower one at (1, 0.5)), noise 0.1,
    # then scaled by 2 and shifted so the pair is centred.
    n_upper = n // 2
    n_lower = n - n_upper
    theta_u = rng.uniform(0.0, np.pi, size=n_upper)
    theta_l = rng.uniform(0.0, np.pi, size=n_lower)
    upper = np.stack([np.cos(theta_u), np.sin(theta_u)], axis=1)
    lower = np.stack([1.0 - np.cos(theta_l), 0.5 - np.sin(theta_l)], axis=1)
    x = np.concatenate([upper, lower]) + rng.normal(scale=0.1, size=(n, 2))
    return 2.0 * x + np.array([-1.0, -0.2])


def _eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    # Mixture of 8 isotropic Gaussians (std 0.5) on a circle of radius 4, shrunk by sqrt(2).
    angles = 2 * np.pi * rng.integers(0, 8, size=n) / 8
    centres = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return (centres + 0.5 * rng.normal(size=(n, 2))) / np.sqrt(2.0)


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    # Five arms: points stretched radially, then rotated by an angle that grows with the radius.
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    labels = rng.integers(0, arms, size=n)
    feats = rng.normal(size=(n, 2)) * np.array([radial_std, tangential_std])
    feats[:, 0] += 1.0
    angles = 2 * np.pi * labels / arms + rate * np.exp(feats[:, 0])
    cos, sin = np.cos(angles), np.sin(angles)
    x = np.stack([cos * feats[:, 0] - sin * feats[:, 1], sin * feats[:, 0] + cos * feats[:, 1]], axis=1)
    return 2.0 * x


def _two_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    # Two interleaved Archimedean spirals (one the point reflection of the other), up to 1.5 turns.
    half = n // 2
    theta = np.sqrt(rng.uniform(size=n)) * 3 * np.pi
    arm = np.stack([-np.cos(theta) * theta, np.sin(theta) * theta], axis=1) + 0.5 * rng.uniform(size=(n, 2))
    arm[half:] *= -1.0
    return arm / 3.0 + 0.1 * rng.normal(size=(n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    # Uniform on the 8 "black" unit squares of a 4x4 board, scaled by 2 (board spans [-4, 4]^2).
    x1 = rng.uniform(-2.0, 2.0, size=n)
    x2 = rng.uniform(size=n) - 2.0 * rng.integers(0, 2, size=n) + np.floor(x1) % 2
    return 2.0 * np.stack([x1, x2], axis=1)


def _rings(n: int, rng: np.random.Generator) -> np.ndarray:
    # Four concentric rings of radii 1, 0.75, 0.5, 0.25 (times 3), equal mass, noise 0.08.
    ring = rng.integers(0, 4, size=n)
    radii = 3.0 * (1.0 - 0.25 * ring)
    angles = rng.uniform(0.0, 2 * np.pi, size=n)
    x = radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return x + 0.08 * rng.normal(size=(n, 2))


def _swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    # The 2-D swiss roll: (t cos t, t sin t) for t in [1.5 pi, 4.5 pi], noise 1.0, scaled by 1/5.
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(size=n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) + rng.normal(size=(n, 2))
    return x / 5.0


#: Name -> sampler; the names are the values of ``data.name`` in ``conf/data/toy2d.yaml``.
TOY_SAMPLERS: dict[str, Sampler] = {
    "circles": _circles,
    "moons": _moons,
    "8gaussians": _eight_gaussians,
    "pinwheel": _pinwheel,
    "2spirals": _two_spirals,
    "checkerboard": _checkerboard,
    "rings": _rings,
    "swissroll": _swissroll,
}


def sample_toy(name: str, n: int, seed: int) -> np.ndarray:
    """Return ``n`` points of toy density ``name`` as a float32 array of shape ``(n, 2)``.

    Deterministic in ``(name, n, seed)``; points are shuffled (no ordering by mixture component).
    Raises ``ValueError`` listing the valid names for an unknown ``name``.
    """
    if name not in TOY_SAMPLERS:
        raise ValueError(f"unknown toy density {name!r}; valid: {', '.join(TOY_SAMPLERS)}")
    if n < 0:
        raise ValueError(f"number of samples must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    x = TOY_SAMPLERS[name](n, rng)
    return x[rng.permutation(n)].astype(np.float32)
