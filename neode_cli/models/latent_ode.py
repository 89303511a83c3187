"""The latent ODE of the paper's Section 5 (Table 2): an RNN encoder, ODE dynamics in latent space, a decoder.

Generative model: ``z(0) ~ N(0, I)``, ``dz/dt = f(z)``, ``x(t) ~ N(decoder(z(t)), likelihood_std^2 I)``.
Inference: a recognition RNN reads the observations backwards in time (value and time gap to the previous
observation) and outputs the mean and log-variance of ``q(z(0) | x)``. Training maximises the ELBO. The
ODE is solved by the integrator the model is given (any method and gradient method), from the window start
``t = 0`` to every observed and predicted time, in one solve for the whole batch.

Same sequence-model interface as :mod:`neode_cli.models.rnn`: ``loss(obs_t, obs_x)`` and
``predict(obs_t, obs_x, query_t)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .augment import augment
from .regularization import Regularization, solve_regularized
from .rnn import Cell, make_recurrent, time_gaps

__all__ = ["LatentODE", "LatentDynamics", "ACTIVATIONS"]

#: Hidden-layer nonlinearities of the dynamics. ELU is the authors' example's; tanh is smooth, so adaptive
#: steps and the adjoint meet no kink (ELU's second derivative jumps at 0).
ACTIVATIONS = {"elu": nn.ELU, "tanh": nn.Tanh}


class LatentDynamics(nn.Module):
    """Autonomous latent vector field ``f(z)``: one hidden layer (the paper: 20 units)."""

    def __init__(self, latent_dim: int, hidden: int, activation: str = "elu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}")
        self.net = nn.Sequential(nn.Linear(latent_dim, hidden), ACTIVATIONS[activation](),
                                 nn.Linear(hidden, latent_dim))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``dz/dt`` at state ``z (B, L)``; ``t`` is unused (time-invariant dynamics)."""
        return self.net(z)


class LatentODE(nn.Module):
    """Latent ODE with the paper's sizes by default (encoder 25, latent 4, dynamics 20, decoder 20).

    ``integrator``: called as ``integrator(func, z0, t)``; ``likelihood_std``: the fixed observation noise
    of the Gaussian likelihood; ``cell``: the recognition RNN's cell (``rnn`` or ``gru``); ``activation``: the
    dynamics' nonlinearity (:data:`ACTIVATIONS`); ``augment_dim``: zero dimensions appended to the sampled
    ``z(0)`` (augmented neural ODE, Dupont et al. 2019), so the dynamics run in ``latent_dim + augment_dim``
    dimensions and the decoder reads all of them (the prior and posterior stay on ``latent_dim``);
    ``regularization``: RNODE weights (Finlay et al. 2020) whose terms training solves integrate.
    """

    # These defaults are the config's too (``model=latent_ode``): the schema is generated from this signature.
    def __init__(self, integrator,
                 obs_dim: int = 2,
                 latent_dim: int = 4,  # paper: 4
                 rec_hidden: int = 25,  # recognition RNN units (paper: 25)
                 dyn_hidden: int = 20,  # dynamics f: one hidden layer (paper: 20 units)
                 dec_hidden: int = 20,  # decoder: one hidden layer (paper: 20 units), ReLU
                 likelihood_std: float = 0.3,  # fixed std of the Gaussian likelihood (latent_ode.yaml: the data's)
                 cell: Cell | str = "rnn",  # recognition RNN: rnn (plain tanh RNN, as the authors' example) | gru
                 activation: str = "elu",  # of the dynamics: elu (authors' example) | tanh (smooth)
                 augment_dim: int = 0,  # > 0: zero dimensions appended to z(0) (augmented ODE, Dupont et al. 2019)
                 regularization: Regularization | None = None):  # RNODE weights, passed in like the integrator
        super().__init__()
        if likelihood_std <= 0:
            raise ValueError(f"likelihood_std must be positive, got {likelihood_std}")
        if augment_dim < 0:
            raise ValueError(f"augment_dim must be >= 0, got {augment_dim}")
        self.integrator = integrator
        self.likelihood_std = likelihood_std
        self.augment_dim = augment_dim
        self.regularization = regularization
        self.encoder = make_recurrent(cell, obs_dim + 1, rec_hidden)
        self.encoder_out = nn.Linear(rec_hidden, 2 * latent_dim)   # mean, log-variance of q(z0|x)
        state_dim = latent_dim + augment_dim
        self.dynamics = LatentDynamics(state_dim, dyn_hidden, activation)
        self.decoder = nn.Sequential(nn.Linear(state_dim, dec_hidden), nn.ReLU(), nn.Linear(dec_hidden, obs_dim))

    def encode(self, obs_t: torch.Tensor, obs_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance ``(B, L)`` of ``q(z(0) | observations)``."""
        inputs = torch.cat((obs_x, time_gaps(obs_t).unsqueeze(-1)), dim=-1)     # (B, n, D+1)
        # Backwards in time, so the final state sits at the first observation, nearest to t = 0; the gap
        # read last (first observation minus 0) tells the encoder how far that is from the window start.
        _, state = self.encoder(inputs.flip(1))                                 # (1, B, H)
        mean, logvar = self.encoder_out(state.squeeze(0)).chunk(2, dim=-1)
        return mean, logvar

    def decode_at(self, z0: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
        """Decoded means ``(B, T, D)`` at the increasing times ``times (T,)`` (with ``times[0] >= 0``).

        ``z0 (B, L)`` is the sampled initial latent state; the augmented zeros are appended here.
        """
        solve_t = times if bool(times[0] == 0) else torch.cat((times.new_zeros(1), times))
        z = solve_regularized(self.integrator, self.dynamics, augment(z0, self.augment_dim), solve_t,
                              self.regularization, self.training)                # (T', B, L + A)
        if solve_t is not times:
            z = z[1:]
        return self.decoder(z.transpose(0, 1))

    def loss(self, obs_t: torch.Tensor, obs_x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative ELBO per sequence (mean over the batch), one reparameterised sample of ``z(0)``.

        Terms: ``neg_elbo = recon_nll + kl``, the Gaussian NLL of the observations summed over points and
        dimensions, and ``KL(q(z0|x) || N(0, I))``.
        """
        mean, logvar = self.encode(obs_t, obs_x)
        z0 = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        # One solve at the union of the batch's observation times; each row then picks its own.
        times = torch.unique(obs_t)                                      # sorted, (T,)
        decoded = self.decode_at(z0, times)                              # (B, T, D)
        position = torch.searchsorted(times, obs_t)                      # (B, n)
        rows = torch.arange(obs_t.shape[0], device=obs_t.device).unsqueeze(1)
        predicted = decoded[rows, position]                              # (B, n, D)
        std = self.likelihood_std
        recon = (0.5 * ((obs_x - predicted) / std) ** 2 + math.log(std) + 0.5 * math.log(2 * math.pi)).sum((1, 2))
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)
        neg_elbo = (recon + kl).mean()
        return neg_elbo, {"neg_elbo": float(neg_elbo.detach()), "recon_nll": float(recon.detach().mean()),
                          "kl": float(kl.detach().mean())}

    def predict(self, obs_t: torch.Tensor, obs_x: torch.Tensor, query_t: torch.Tensor) -> torch.Tensor:
        """Decoded trajectory ``(B, Q, D)`` from the posterior mean of ``z(0)`` at the times ``query_t (Q,)``."""
        mean, _ = self.encode(obs_t, obs_x)
        return self.decode_at(mean, query_t)
