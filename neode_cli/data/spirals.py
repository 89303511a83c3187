"""Bi-directional 2-D spirals, irregularly observed: the data set of the paper's Table 2.

Each spiral is a window of ``n_window`` equally spaced times cut from one of two Archimedean spirals,
``r = a + b * theta``, followed by ``n_extrap`` further times that are only ever predicted (extrapolation).
Half the spirals turn counter-clockwise around ``(+centre, 0)``, half clockwise around ``(-centre, 0)`` (the
mirror image); each starts at a random point of its spiral. Gaussian noise is added to every point; the
noise-free trajectory is kept as the ground truth for RMSE.

Observations are irregular: per spiral, ``n_obs`` of the ``n_window`` window times, sampled without
replacement (and sorted). Time is measured from the start of each window, so every spiral sees the same
grid ``times`` and only its start point on the underlying spiral differs.

The paper leaves the spiral equations, noise and split open; the defaults are the authors' example choices
(``a=0, b=0.3``, angle up to ``6*pi`` on a grid of 1000 points, centres at +-5, noise std 0.3). No Hydra,
no config: :func:`make_spirals` takes plain arguments.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import torch

__all__ = ["SpiralSet", "check_spiral_options", "make_spirals", "spiral_curve", "sample_observation_indices"]


@dataclasses.dataclass(frozen=True)
class SpiralSet:
    """A generated data set; all tensors float32 on CPU unless stated.

    ``times``: (T,) with T = n_window + n_extrap, ``times[0] == 0``, spacing ``dt``.
    ``clean``: (N, T, 2) noise-free positions; ``noisy``: (N, T, 2) the same plus Gaussian noise.
    ``clockwise``: (N,) bool. ``start_index``: (N,) int64, index of each window's first point on the
    underlying angle grid. ``obs_index``: (N, n_obs) int64, sorted distinct indices into the window
    (``< n_window``) of the observed points. ``n_train``: the first ``n_train`` spirals are the training set,
    the rest the test set (a fixed split; the order is already random).
    """

    times: torch.Tensor
    clean: torch.Tensor
    noisy: torch.Tensor
    clockwise: torch.Tensor
    start_index: torch.Tensor
    obs_index: torch.Tensor
    n_window: int
    n_train: int

    @property
    def n_obs(self) -> int:
        """Observed points per spiral."""
        return int(self.obs_index.shape[1])

    def observations(self, rows: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Observed times ``(B, n_obs)`` and noisy values ``(B, n_obs, 2)`` of the spirals ``rows``."""
        index = self.obs_index[rows]                                   # (B, n_obs)
        obs_t = self.times[index]                                      # (B, n_obs)
        obs_x = torch.gather(self.noisy[rows], 1, index.unsqueeze(-1).expand(-1, -1, 2))
        return obs_t, obs_x


def spiral_curve(theta: torch.Tensor, clockwise: torch.Tensor, a: float, b: float,
                 centre: float) -> torch.Tensor:
    """Points ``(..., 2)`` of the spiral ``r = a + b*theta`` at angles ``theta``.

    Counter-clockwise spirals are centred at ``(+centre, 0)``; clockwise ones are their mirror image in the
    y axis, centred at ``(-centre, 0)``. ``clockwise`` broadcasts against ``theta``.
    """
    radius = a + b * theta
    x = radius * torch.cos(theta)
    y = radius * torch.sin(theta)
    # Mirroring x reverses the sense of rotation while keeping the same radial motion.
    x = torch.where(clockwise, -x - centre, x + centre)
    return torch.stack((x, y), dim=-1)


def sample_observation_indices(n_spirals: int, n_window: int, n_obs: int,
                               generator: torch.Generator) -> torch.Tensor:
    """For each spiral, ``n_obs`` distinct window indices drawn uniformly without replacement, sorted.

    Returns an int64 tensor ``(n_spirals, n_obs)``. ``n_obs == n_window`` observes every point.
    """
    if not 1 <= n_obs <= n_window:
        raise ValueError(f"n_obs={n_obs} must be between 1 and n_window={n_window}")
    # Ranking i.i.d. uniforms gives a uniformly random subset per row, vectorised over spirals.
    keys = torch.rand(n_spirals, n_window, generator=generator)
    chosen = keys.argsort(dim=1)[:, :n_obs]
    return chosen.sort(dim=1).values


def check_spiral_options(**options) -> None:
    """Raise ``ValueError`` if the keyword arguments ``options`` of :func:`make_spirals` (absent ones take its
    defaults) cannot make a data set; the message starts with ``<argument>=<value>``. Nothing is generated."""
    bound = inspect.signature(make_spirals).bind(**options)
    bound.apply_defaults()
    o = bound.arguments
    for name in ("n_spirals", "n_window", "n_grid"):
        if not o[name] >= 1:
            raise ValueError(f"{name}={o[name]} must be at least 1")
    if not o["n_extrap"] >= 0:
        raise ValueError(f"n_extrap={o['n_extrap']} must be >= 0")
    if not 0 < o["n_train"] < o["n_spirals"]:
        raise ValueError(f"n_train={o['n_train']} must be between 1 and n_spirals - 1 = {o['n_spirals'] - 1}")
    if o["n_grid"] < o["n_window"] + o["n_extrap"]:
        raise ValueError(f"n_grid={o['n_grid']} is shorter than n_window + n_extrap = {o['n_window'] + o['n_extrap']}")
    if not 1 <= o["n_obs"] <= o["n_window"]:
        raise ValueError(f"n_obs={o['n_obs']} must be between 1 and n_window={o['n_window']}")
    if not (math.isfinite(o["theta_max"]) and o["theta_max"] > 0):
        raise ValueError(f"theta_max={o['theta_max']} must be a finite number > 0")
    if not (math.isfinite(o["noise_std"]) and o["noise_std"] >= 0):
        raise ValueError(f"noise_std={o['noise_std']} must be a finite number >= 0")


# These defaults are the config's too (``data=spirals``): the schema is generated from this signature.
def make_spirals(*,
                 n_spirals: int = 1000,  # paper: 1000
                 n_train: int = 800,  # the rest is the test set (our choice; the paper does not say)
                 n_window: int = 100,  # paper: 100 equally spaced times per trajectory window
                 n_extrap: int = 100,  # paper: RMSE on 100 time points beyond the window
                 n_obs: int = 100,  # observed points per window, without replacement (paper: 30 | 50 | 100)
                 n_grid: int = 1000,  # points of the spiral on [0, theta_max] (authors' example)
                 theta_max: float = 6 * math.pi,  # authors' example
                 a: float = 0.0,  # r = a + b * theta (authors' example)
                 b: float = 0.3,
                 centre: float = 5.0,  # centres at (+-centre, 0) (authors' example)
                 noise_std: float = 0.3,  # Gaussian observation noise (authors' example)
                 seed: int = 0,  # data seed: spirals, starts, directions, noise and observation pattern
                 ) -> SpiralSet:
    """Generate the spiral data set, deterministically from ``seed``.

    The underlying angle grid has ``n_grid`` equally spaced points on ``[0, theta_max]``; window time equals
    angle, so ``dt = theta_max / (n_grid - 1)``. Each spiral's start index is uniform over the grid points
    that leave room for ``n_window + n_extrap`` points. Exactly ``n_spirals // 2`` spirals are clockwise.
    The spirals themselves do not depend on ``n_obs`` (the observation pattern uses its own random stream),
    so runs with different ``n_obs`` see the same trajectories.
    """
    check_spiral_options(n_spirals=n_spirals, n_train=n_train, n_window=n_window, n_extrap=n_extrap, n_obs=n_obs,
                         n_grid=n_grid, theta_max=theta_max, noise_std=noise_std)
    length = n_window + n_extrap
    spirals_rng = torch.Generator().manual_seed(seed)
    dt = theta_max / (n_grid - 1)
    start_index = torch.randint(0, n_grid - length + 1, (n_spirals,), generator=spirals_rng)
    clockwise = torch.zeros(n_spirals, dtype=torch.bool)
    clockwise[: n_spirals // 2] = True
    clockwise = clockwise[torch.randperm(n_spirals, generator=spirals_rng)]

    steps = torch.arange(length, dtype=torch.float64)
    theta = (start_index.to(torch.float64).unsqueeze(1) + steps) * dt          # (N, T)
    clean = spiral_curve(theta, clockwise.unsqueeze(1), a, b, centre)         # (N, T, 2)
    noise = torch.randn(clean.shape, generator=spirals_rng, dtype=torch.float64) * noise_std

    obs_rng = torch.Generator().manual_seed(seed + 1_000_003)
    obs_index = sample_observation_indices(n_spirals, n_window, n_obs, obs_rng)
    return SpiralSet(times=(steps * dt).float(), clean=clean.float(), noisy=(clean + noise).float(),
                     clockwise=clockwise, start_index=start_index, obs_index=obs_index,
                     n_window=n_window, n_train=n_train)
