"""The RNN baseline of Table 2, and the recurrent pieces the latent ODE's encoder shares with it.

Sequence models here take irregular observations ``obs_t (B, n)`` (increasing along each row, times measured
from the start of the window, so ``t >= 0``) and ``obs_x (B, n, D)``, and implement

- ``loss(obs_t, obs_x) -> (scalar loss, {term: float})``: the training objective on those observations;
- ``predict(obs_t, obs_x, query_t) -> (B, Q, D)``: point predictions at the shared increasing times
  ``query_t (Q,)``, conditioned on the observations.
"""

from __future__ import annotations

import enum
import math

import torch
from torch import nn

__all__ = ["RNNBaseline", "Cell", "make_recurrent", "time_gaps"]


class Cell(str, enum.Enum):
    """Recurrent cells (a ``str`` Enum so configs can type-check the name)."""

    gru = "gru"
    rnn = "rnn"


def make_recurrent(cell: Cell | str, input_size: int, hidden: int) -> nn.Module:
    """A one-layer batch-first recurrent net by cell name: ``gru`` or ``rnn`` (Elman, tanh).

    A whole sequence runs in one fused call (much faster than a Python loop of cells on CPU); one step is
    the same call on a length-1 sequence.
    """
    if cell == Cell.gru:
        return nn.GRU(input_size, hidden, batch_first=True)
    if cell == Cell.rnn:
        return nn.RNN(input_size, hidden, nonlinearity="tanh", batch_first=True)
    raise ValueError(f"unknown recurrent cell {cell!r}; valid: {', '.join(c.value for c in Cell)}")


def time_gaps(obs_t: torch.Tensor) -> torch.Tensor:
    """``t_k - t_{k-1}`` along the last axis, with ``t_{-1} = 0`` (the window start); same shape."""
    previous = torch.cat((torch.zeros_like(obs_t[..., :1]), obs_t[..., :-1]), dim=-1)
    return obs_t - previous


class RNNBaseline(nn.Module):
    """Recurrent Gaussian predictor with the time difference to the predicted point as an extra input.

    Step k reads ``(x_{k-1}, t_k - t_{k-1})`` (``x_{-1} = 0, t_{-1} = 0``) and outputs the mean and standard
    deviation of ``x_k``; training minimises the Gaussian negative log-likelihood of every observation
    (teacher forcing). A query between observations is one step from the last observation before it;
    queries after the last observation are predicted autoregressively, each predicted mean fed back as the
    next input. ``hidden=25`` is the paper's size.
    """

    # These defaults are the config's too (``model=rnn``): the schema is generated from this signature.
    def __init__(self, obs_dim: int = 2,
                 hidden: int = 25,  # paper: 25
                 cell: Cell | str = "rnn",  # rnn (plain tanh RNN: the paper's "RNN") | gru (a much stronger baseline)
                 min_std: float = 1e-3):  # floor of the predicted standard deviation (keeps the NLL finite)
        super().__init__()
        self.obs_dim = obs_dim
        self.min_std = min_std
        self.rnn = make_recurrent(cell, obs_dim + 1, hidden)
        self.head = nn.Linear(hidden, 2 * obs_dim)  # mean and pre-softplus std

    def _outputs(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation ``(..., D)`` read from states ``(..., H)``."""
        mean, raw_std = self.head(states).chunk(2, dim=-1)
        return mean, nn.functional.softplus(raw_std) + self.min_std

    def _step(self, prev_x: torch.Tensor, gap: torch.Tensor, state: torch.Tensor):
        """One step: ``(B, D), (B,), (B, H)`` -> new state ``(B, H)`` and mean ``(B, D)``."""
        inputs = torch.cat((prev_x, gap.unsqueeze(-1)), dim=-1).unsqueeze(1)     # (B, 1, D+1)
        _, state = self.rnn(inputs, state.unsqueeze(0).contiguous())
        state = state.squeeze(0)
        return state, self._outputs(state)[0]

    def _teacher_forced(self, obs_t: torch.Tensor, obs_x: torch.Tensor):
        """States before each step ``(B, n+1, H)`` and per-observation mean/std ``(B, n, D)``."""
        batch = obs_t.shape[0]
        prev_x = torch.cat((obs_x.new_zeros(batch, 1, self.obs_dim), obs_x[:, :-1]), dim=1)
        inputs = torch.cat((prev_x, time_gaps(obs_t).unsqueeze(-1)), dim=-1)    # (B, n, D+1)
        after, _ = self.rnn(inputs)                                              # (B, n, H)
        states = torch.cat((after.new_zeros(batch, 1, after.shape[-1]), after), dim=1)
        mean, std = self._outputs(after)
        return states, mean, std

    def loss(self, obs_t: torch.Tensor, obs_x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Gaussian NLL of the observations, summed over points and dimensions, mean over the batch."""
        _, mean, std = self._teacher_forced(obs_t, obs_x)
        nll = (0.5 * ((obs_x - mean) / std) ** 2 + std.log() + 0.5 * math.log(2 * math.pi)).sum((1, 2)).mean()
        return nll, {"nll": float(nll.detach())}

    def predict(self, obs_t: torch.Tensor, obs_x: torch.Tensor, query_t: torch.Tensor) -> torch.Tensor:
        """Predicted means ``(B, Q, D)`` at increasing ``query_t (Q,)``; see the class docstring."""
        batch, n = obs_t.shape
        states, _, _ = self._teacher_forced(obs_t, obs_x)
        # A query uses the state after the observations strictly before it (count c); the previous point
        # is observation c-1, or the zero point at t = 0 when c = 0.
        counts = (obs_t.unsqueeze(1) < query_t.view(1, -1, 1)).sum(-1)            # (B, Q)
        prev_x = torch.cat((obs_x.new_zeros(batch, 1, self.obs_dim), obs_x), dim=1)  # (B, n+1, D)
        prev_t = torch.cat((obs_t.new_zeros(batch, 1), obs_t), dim=1)               # (B, n+1)
        rows = torch.arange(batch, device=obs_t.device).unsqueeze(1)
        _, one_step = self._step(prev_x[rows, counts].flatten(0, 1),
                                    (query_t.unsqueeze(0) - prev_t[rows, counts]).flatten(),
                                    states[rows, counts].flatten(0, 1))
        prediction = one_step.view(batch, -1, self.obs_dim).clone()

        # Autoregressive rollout past the last observation (query times are shared, so a query is past
        # the end for row b iff counts[b] == n; roll out from the first such query of any row).
        beyond = counts == n                                                        # (B, Q)
        if bool(beyond.any()):
            first = int(beyond.any(0).nonzero()[0])
            state, x, t = states[:, n], obs_x[:, -1], obs_t[:, -1]
            for q in range(first, query_t.shape[0]):
                gap = query_t[q] - t
                new_state, mean = self._step(x, gap, state)
                # Rows whose query is still inside the observations keep their one-step prediction.
                active = beyond[:, q].unsqueeze(-1)
                state = torch.where(active, new_state, state)
                x = torch.where(active, mean, x)
                t = torch.where(beyond[:, q], query_t[q].expand_as(t), t)
                prediction[:, q] = torch.where(active, mean, prediction[:, q])
        return prediction
