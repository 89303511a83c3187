"""Latent time series: irregularly observed spirals, interpolation and extrapolation (the paper's Table 2).

A model for this task is any module with the :class:`SequenceModel` methods (the latent ODE and the RNN
baseline both have them), so the task and the loop never branch on which model it is. Training sees only
the ``n_obs`` observed (noisy) points of each training spiral's window. Evaluation conditions on the
observed points of each test spiral and predicts the whole window and the ``n_extrap`` points after it;
RMSEs are against the noise-free trajectory, over all points and both coordinates:

- ``test_rmse``: extrapolation (the ``n_extrap`` points after the window), the number of Table 2;
- ``test_rmse_interp``: all ``n_window`` window points, observed or not;
- ``test_loss`` and ``test_<term>`` for each term of the model's loss (latent ODE: ``neg_elbo``,
  ``recon_nll``, ``kl``; RNN: ``nll``), per test spiral;
- ``test_nfe_forward``: function evaluations of the prediction solve, per test batch (0 without an ODE).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch

from ..data.spirals import SpiralSet, check_spiral_options, make_spirals
from ..models.regularization import collect_regularization
from ..ode import collect_stats
from .base import OptionError, Task, batch_limit, present, require_at_least

__all__ = ["LatentTask", "SequenceModel", "SpiralBatch", "build_task", "check_options"]

#: Seed of the (forked) RNG that draws the ELBO's samples during evaluation: same model, same numbers.
EVAL_SEED = 1234


@runtime_checkable
class SequenceModel(Protocol):
    """What this task needs from a model. ``obs_t (B, n)`` increasing per row, ``obs_x (B, n, 2)``."""

    def loss(self, obs_t: torch.Tensor, obs_x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar training loss on these observations and its named terms (floats, per sequence)."""

    def predict(self, obs_t: torch.Tensor, obs_x: torch.Tensor, query_t: torch.Tensor) -> torch.Tensor:
        """Point predictions ``(B, Q, 2)`` at the shared increasing times ``query_t (Q,)``."""


class SpiralBatch(NamedTuple):
    """Observed times ``(B, n_obs)`` and noisy values ``(B, n_obs, 2)`` of ``B`` spirals."""

    obs_t: torch.Tensor
    obs_x: torch.Tensor


class _Batches:
    """Spirals ``rows`` in slices of ``size``; ``len()`` is the number of batches."""

    def __init__(self, task: "LatentTask", rows: torch.Tensor, size: int):
        self.task, self.rows, self.size = task, rows, size

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.size)

    def __iter__(self):
        for start in range(0, len(self.rows), self.size):
            yield self.task.batch(self.rows[start:start + self.size])


class LatentTask(Task):
    """Spiral data on a device, batching, the losses and metrics above, and figures of test spirals."""

    name = "latent"

    def __init__(self, data: SpiralSet, device: torch.device | str, batch_size: int, test_batch_size: int,
                 figure_spirals: int):
        check_options(batch_size=batch_size, test_batch_size=test_batch_size, figure_spirals=figure_spirals)
        self.data = data
        self.device = torch.device(device)
        self.times = data.times.to(self.device)                     # (T,) window then extrapolation
        self.clean = data.clean.to(self.device)                     # (N, T, 2)
        self.obs_t, self.obs_x = (v.to(self.device) for v in data.observations(slice(None)))
        self.batch_size, self.test_batch_size = batch_size, test_batch_size
        self.figure_spirals = figure_spirals
        self.test_rows = torch.arange(data.n_train, len(data.clean))

    def batch(self, rows: torch.Tensor) -> SpiralBatch:
        """The observations of spirals ``rows`` (indices into the whole set) on the task's device."""
        rows = rows.to(self.device)
        return SpiralBatch(self.obs_t[rows], self.obs_x[rows])

    def train_batches(self, epoch: int) -> _Batches:
        """The training spirals in a fresh random order (global CPU torch RNG), ``batch_size`` per batch."""
        return _Batches(self, torch.randperm(self.data.n_train), self.batch_size)

    def training_loss(self, model: SequenceModel, batch: SpiralBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The model's own loss (negative ELBO, or NLL for the RNN) on the batch plus its RNODE penalty, if any;
        its terms and the regulariser values (``reg_kinetic``, ``reg_jacobian``)."""
        with collect_regularization() as reg:
            loss, terms = model.loss(batch.obs_t, batch.obs_x)
        return reg.add_to(loss), {**terms, **reg.metrics()}

    @torch.no_grad()
    def evaluate(self, model: SequenceModel, limit_batches: float | int | None = None) -> dict[str, float]:
        """Test metrics (module docstring) over the first ``limit_batches`` test batches.

        Sampling inside the loss (the ELBO's ``z0``) uses a forked RNG with a fixed seed, so evaluation is
        reproducible and leaves the training RNG untouched.
        """
        chunks = self.test_rows.split(self.test_batch_size)
        count = batch_limit(len(chunks), limit_batches)
        n_window = self.data.n_window
        sq_interp = sq_extrap = 0.0
        seen, nfe = 0, 0
        terms_sum: dict[str, float] = {}
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(EVAL_SEED)
            for rows in chunks[:count]:
                obs_t, obs_x = self.batch(rows)
                with collect_stats() as stats:
                    prediction = model.predict(obs_t, obs_x, self.times)                  # (B, T, 2)
                nfe += stats.nfe_forward
                error = prediction - self.clean[rows.to(self.device)]
                sq_interp += float(error[:, :n_window].pow(2).mean()) * len(rows)
                sq_extrap += float(error[:, n_window:].pow(2).mean()) * len(rows)
                loss, terms = model.loss(obs_t, obs_x)
                for name, value in {"loss": float(loss), **terms}.items():
                    terms_sum[name] = terms_sum.get(name, 0.0) + value * len(rows)
                seen += len(rows)
        metrics = {"test_rmse": math.sqrt(sq_extrap / seen), "test_rmse_interp": math.sqrt(sq_interp / seen)}
        metrics.update({f"test_{name}": value / seen for name, value in terms_sum.items()})
        metrics["test_nfe_forward"] = nfe / count
        return metrics

    def record_fields(self) -> dict[str, Any]:
        """The data setup: observed points per window, window and extrapolation lengths, split sizes."""
        data = self.data
        return {"data": "spirals", "n_obs": data.n_obs, "n_window": data.n_window,
                "n_extrap": len(data.times) - data.n_window, "n_train": data.n_train,
                "n_test": len(self.test_rows)}

    def figure_rows(self) -> torch.Tensor:
        """The test spirals drawn in figures: the first counter-clockwise ones, then the first clockwise."""
        clockwise = self.data.clockwise[self.test_rows]
        k = self.figure_spirals
        return torch.cat((self.test_rows[~clockwise][: (k + 1) // 2], self.test_rows[clockwise][: k // 2]))

    @torch.no_grad()
    def log_figures(self, model: SequenceModel, run_dir: Path, writer: Any, epoch: int) -> None:
        """``<run_dir>/figures/spirals.png`` (overwritten; TensorBoard keeps each epoch's under ``spirals``)."""
        from matplotlib.figure import Figure  # lazy: plotting is off the training path

        rows = self.figure_rows().to(self.device)
        obs_t, obs_x = self.obs_t[rows], self.obs_x[rows]
        was_training = model.training
        model.eval()
        prediction = model.predict(obs_t, obs_x, self.times).cpu()           # (K, T, 2)
        model.train(was_training)
        clean, w = self.clean[rows].cpu(), self.data.n_window
        figure = Figure(figsize=(3.2 * len(rows), 3.4))
        for k in range(len(rows)):
            ax = figure.add_subplot(1, len(rows), k + 1)
            ax.plot(clean[k, :, 0], clean[k, :, 1], color="0.75", lw=3, label="truth")
            ax.plot(clean[k, :1, 0], clean[k, :1, 1], "o", color="0.5", ms=6, label="start")
            ax.plot(prediction[k, :w, 0], prediction[k, :w, 1], color="tab:blue", lw=1.5, label="reconstruction")
            ax.plot(prediction[k, w - 1:, 0], prediction[k, w - 1:, 1], color="tab:red", lw=1.5, ls="--",
                    label="extrapolation")
            ax.scatter(obs_x[k, :, 0].cpu(), obs_x[k, :, 1].cpu(), s=8, color="k", zorder=3, label="observed")
            ax.set_title(f"test spiral {int(rows[k])}", fontsize=9)
            ax.set_xlabel("x")
            ax.set_ylabel("y")
            ax.set_aspect("equal", adjustable="datalim")
        figure.axes[0].legend(fontsize=7, loc="best")
        figure.suptitle(f"{type(model).__name__}, {self.data.n_obs} observed points, epoch {epoch}", fontsize=10)
        # Fixed margins instead of tight_layout: same look here, several times faster to draw.
        figure.subplots_adjust(left=0.06, right=0.98, bottom=0.14, top=0.84, wspace=0.3)
        folder = Path(run_dir) / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        figure.savefig(folder / "spirals.png", dpi=100)
        if writer is not None:
            writer.add_figure("spirals", figure, global_step=epoch)


def check_options(**options) -> None:
    """Raise :class:`~neode_cli.tasks.base.OptionError` naming the first of ``options`` (keyword arguments of
    :func:`build_task`, those of :func:`~neode_cli.data.spirals.make_spirals` included) that cannot work."""
    require_at_least(1, **present(options, "batch_size", "test_batch_size"))
    require_at_least(0, **present(options, "figure_spirals"))
    spirals = {k: v for k, v in options.items() if k not in ("batch_size", "test_batch_size", "figure_spirals")}
    try:
        check_spiral_options(**spirals)
    except ValueError as exc:
        raise OptionError(str(exc).split("=", 1)[0], str(exc)) from None


def build_task(*, device: torch.device | str = "cpu",
               batch_size: int = 100,  # spirals per optimizer step (8 steps per epoch of 800)
               test_batch_size: int = 200,  # the whole test set in one batch
               figure_spirals: int = 4,  # test spirals drawn in spirals.png (half of each direction)
               **spirals) -> LatentTask:
    """Generate the spirals with ``spirals`` (the keyword arguments of
    :func:`neode_cli.data.spirals.make_spirals`: deterministic by the data ``seed``, independent of the run's
    seed) and wrap them in a :class:`LatentTask`; the ``_target_`` of ``conf/data/spirals.yaml``."""
    check_options(batch_size=batch_size, test_batch_size=test_batch_size, figure_spirals=figure_spirals, **spirals)
    return LatentTask(make_spirals(**spirals), device=device, batch_size=batch_size,
                      test_batch_size=test_batch_size, figure_spirals=figure_spirals)
