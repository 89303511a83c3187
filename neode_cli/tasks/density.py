"""Density tasks for 2-D flows: maximum likelihood on toy data and density matching to a target energy.

Both work with any model of the density-model protocol (:mod:`neode_cli.models.cnf`): ``log_prob(x,
fraction)``, ``sample(n, generator) -> (x, log_q)``, ``trajectory(n, fractions, generator)``, ``dim``. So
``model=cnf`` and ``model=planar_nf`` go through the same code and the loop never branches on names.

Training runs by iterations: there is no fixed training set (each epoch draws ``batches_per_epoch`` fresh
batches), so ``trainer.max_epochs * data.batches_per_epoch`` is the number of optimizer steps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from ..data.energies import ENERGIES, get_energy
from ..data.toy2d import TOY_SAMPLERS, sample_toy
from ..ode import SolveStats, collect_stats
from .base import Task, batch_limit, present, require_at_least, require_choice, require_positive
from ..models.regularization import collect_regularization

#: Fractions of the integration time (or of the K layers of a discrete flow) shown in the snapshots.
SNAPSHOT_FRACTIONS = (0.05, 0.2, 0.4, 0.6, 0.8, 1.0)


def reverse_kl(model: torch.nn.Module, energy: Callable[[torch.Tensor], torch.Tensor], n: int,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Monte-Carlo ``E_q[log q(x) + U(x)] = KL(q || exp(-U)/Z) - log Z`` over ``n`` model samples (scalar)."""
    x, log_q = model.sample(n, generator=generator)
    return (log_q + energy(x)).mean()


def _learned_state(model: torch.nn.Module) -> dict[str, float]:
    """The model's ``record_values()`` when it has one (a CNF with ``learn_t1``: ``{"t1": ...}``), else nothing."""
    record = getattr(model, "record_values", None)
    return dict(record()) if callable(record) else {}


def _draw_seed() -> int:
    # Batches come from a numpy generator seeded from the global torch RNG: deterministic given its state.
    return int(torch.randint(0, 2 ** 31 - 1, (1,)).item())


def _with_solver_work(metrics: dict[str, float], stats: SolveStats) -> dict[str, float]:
    """``metrics`` plus ``test_nfe_forward`` (mean forward NFE per evaluation solve) when the model solved."""
    if stats.solves:
        metrics["test_nfe_forward"] = stats.nfe_forward / stats.solves
    return metrics


class _FlowFigures:
    """Density heatmaps, samples and flow snapshots of a 2-D density model (PNG + TensorBoard)."""

    def __init__(self, plot_range: float, grid_size: int, figure_samples: int, seed: int):
        self.plot_range, self.grid_size, self.figure_samples, self.seed = plot_range, grid_size, figure_samples, seed

    def grid(self, device) -> tuple[np.ndarray, torch.Tensor]:
        """Axis values (g,) and the grid points ``(g*g, 2)`` covering ``[-plot_range, plot_range]^2``."""
        axis = np.linspace(-self.plot_range, self.plot_range, self.grid_size, dtype=np.float32)
        xx, yy = np.meshgrid(axis, axis)
        points = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], axis=1)).to(device)
        return axis, points

    def model_density(self, model, points: torch.Tensor, fraction: float = 1.0, chunk: int = 2500) -> np.ndarray:
        """Model density ``exp(log q)`` on ``points``, as a (g, g) image."""
        values = [model.log_prob(points[i:i + chunk], fraction=fraction).exp() for i in range(0, len(points), chunk)]
        return torch.cat(values).reshape(self.grid_size, self.grid_size).cpu().numpy()

    def _imshow(self, ax, image: np.ndarray, title: str, scale: str = "density") -> None:
        """A density image on the plot square, with axes and a colour scale labelled ``scale``."""
        r = self.plot_range
        shown = ax.imshow(image, origin="lower", extent=(-r, r, -r, r), cmap="viridis", aspect="equal")
        bar = ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
        bar.set_label(scale, fontsize=8)
        bar.ax.tick_params(labelsize=7)
        self._axes(ax, title)

    def _scatter(self, ax, points: np.ndarray, title: str) -> None:
        r = self.plot_range
        ax.scatter(points[:, 0], points[:, 1], s=1, alpha=0.4)
        ax.set_xlim(-r, r)
        ax.set_ylim(-r, r)
        ax.set_aspect("equal")
        self._axes(ax, title)

    @staticmethod
    def _axes(ax, title: str) -> None:
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("z1", fontsize=8, labelpad=1)
        ax.set_ylabel("z2", fontsize=8, labelpad=1)
        ax.tick_params(labelsize=7)

    def draw(self, model, target_image: np.ndarray, target_title: str, run_dir: Path, writer: Any,
             epoch: int, target_scale: str = "density") -> list[Path]:
        """Write ``figures/density.png`` and ``figures/snapshots.png`` (and to TensorBoard); return the paths."""
        from matplotlib.figure import Figure  # no pyplot: no global backend state in a library

        p = next(model.parameters())
        generator = torch.Generator(device=p.device).manual_seed(self.seed)
        _, points = self.grid(p.device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                path_states = model.trajectory(self.figure_samples, SNAPSHOT_FRACTIONS, generator=generator)
                states = path_states.cpu().numpy()
                densities = [self.model_density(model, points, f) for f in SNAPSHOT_FRACTIONS]
        finally:
            model.train(was_training)

        out_dir = Path(run_dir) / "figures"
        out_dir.mkdir(parents=True, exist_ok=True)
        density_fig = Figure(figsize=(10.5, 3.4))
        axes = density_fig.subplots(1, 3)
        self._imshow(axes[0], target_image, target_title, target_scale)
        self._imshow(axes[1], densities[-1], "model density q(z)")
        self._scatter(axes[2], states[-1], "model samples")
        density_fig.tight_layout()

        snap_fig = Figure(figsize=(2.6 * len(SNAPSHOT_FRACTIONS), 5.0))
        snap_axes = snap_fig.subplots(2, len(SNAPSHOT_FRACTIONS))
        for j, f in enumerate(SNAPSHOT_FRACTIONS):
            self._scatter(snap_axes[0, j], states[j], f"samples, {f:.0%} of the flow")
            self._imshow(snap_axes[1, j], densities[j], f"density, {f:.0%} of the flow")
        snap_fig.tight_layout()

        paths = []
        for name, fig in (("density", density_fig), ("snapshots", snap_fig)):
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=100)
            paths.append(path)
            if writer is not None:
                writer.add_figure(f"figures/{name}", fig, epoch)
        return paths


class ToyDensityTask(Task):
    """Maximum likelihood on a 2-D toy density: train ``-mean log q(x)``, evaluate held-out ``test_nll``.

    The evaluation uses the model in eval mode, so a CNF uses the exact trace there.
    """

    name = "density_ml"

    def __init__(self, name: str, batch_size: int, batches_per_epoch: int, n_test: int, test_batch_size: int,
                 test_seed: int, device: torch.device | str, figures: _FlowFigures):
        if name not in TOY_SAMPLERS:
            raise ValueError(f"unknown toy density {name!r}; valid: {', '.join(TOY_SAMPLERS)}")
        self.dataset, self.batch_size, self.batches_per_epoch = name, batch_size, batches_per_epoch
        self.test_batch_size, self.device, self.figures = test_batch_size, torch.device(device), figures
        self.test_x = torch.from_numpy(sample_toy(name, n_test, test_seed)).to(self.device)

    def train_batches(self, epoch: int) -> Iterable[torch.Tensor]:
        """``batches_per_epoch`` fresh batches ``(batch_size, 2)`` drawn with a seed from the torch RNG."""
        x = sample_toy(self.dataset, self.batch_size * self.batches_per_epoch, _draw_seed())
        return list(torch.from_numpy(x).to(self.device).split(self.batch_size))

    def training_loss(self, model, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative mean log-likelihood of the batch, plus the model's RNODE penalty, if any (metrics: ``nll``,
        ``reg_kinetic``, ``reg_jacobian``)."""
        with collect_regularization() as reg:
            nll = -model.log_prob(batch).mean()
        return reg.add_to(nll), {"nll": nll.item(), **reg.metrics()}

    def evaluate(self, model, limit_batches: float | int | None = None) -> dict[str, float]:
        """``test_nll``: mean negative log-likelihood (nats) over the held-out set; plus its standard error and,
        for a model that solves an ODE, ``test_nfe_forward`` (mean forward NFE per solve)."""
        batches = self.test_x.split(self.test_batch_size)
        with collect_stats() as stats:
            nll = torch.cat([-model.log_prob(b) for b in batches[:batch_limit(len(batches), limit_batches)]])
        return _with_solver_work({"test_nll": nll.mean().item(),
                                  "test_nll_se": (nll.std() / math.sqrt(len(nll))).item(),
                                  **_learned_state(model)}, stats)

    def record_fields(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "batches_per_epoch": self.batches_per_epoch, "n_test": len(self.test_x)}

    def log_figures(self, model, run_dir: Path, writer: Any, epoch: int) -> None:
        """Data histogram vs model density and samples; snapshots of the flow (``figures/*.png``)."""
        r, g = self.figures.plot_range, self.figures.grid_size
        hist, _, _ = np.histogram2d(self.test_x[:, 1].cpu().numpy(), self.test_x[:, 0].cpu().numpy(),
                                    bins=g, range=[[-r, r], [-r, r]])
        self.figures.draw(model, hist, f"test data ({self.dataset})", run_dir, writer, epoch, "points per cell")


class DensityMatchingTask(Task):
    """Density matching: minimise ``E_q[log q + U]`` (reverse KL to ``exp(-U)/Z`` up to ``log Z``).

    ``kl_loss`` is evaluated on ``n_eval`` model samples drawn with a fixed seed (comparable across epochs).
    """

    name = "density_matching"

    def __init__(self, target: str, batch_size: int, batches_per_epoch: int, n_eval: int, eval_batch_size: int,
                 eval_seed: int, device: torch.device | str, figures: _FlowFigures):
        self.target, self.energy = target, get_energy(target)
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.n_eval, self.eval_batch_size, self.eval_seed = n_eval, eval_batch_size, eval_seed
        self.device, self.figures = torch.device(device), figures

    def train_batches(self, epoch: int) -> Iterable[int]:
        """``batches_per_epoch`` batch sizes: the model draws its own base samples from the torch RNG."""
        return [self.batch_size] * self.batches_per_epoch

    def training_loss(self, model, batch: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Reverse KL (up to ``log Z``) on ``batch`` fresh model samples, plus the model's RNODE penalty, if any."""
        with collect_regularization() as reg:
            kl = reverse_kl(model, self.energy, batch)
        return reg.add_to(kl), {"kl": kl.item(), **reg.metrics()}

    def evaluate(self, model, limit_batches: float | int | None = None) -> dict[str, float]:
        """``kl_loss``: ``E_q[log q + U]`` over ``n_eval`` fixed-seed samples; plus its standard error and, for
        a model that solves an ODE, ``test_nfe_forward`` (mean forward NFE per solve)."""
        generator = torch.Generator(device=self.device).manual_seed(self.eval_seed)
        sizes = [self.eval_batch_size] * (self.n_eval // self.eval_batch_size)
        if self.n_eval % self.eval_batch_size:
            sizes.append(self.n_eval % self.eval_batch_size)
        terms = []
        with collect_stats() as stats:
            for size in sizes[:batch_limit(len(sizes), limit_batches)]:
                x, log_q = model.sample(size, generator=generator)
                terms.append(log_q + self.energy(x))
        values = torch.cat(terms)
        return _with_solver_work({"kl_loss": values.mean().item(),
                                  "kl_loss_se": (values.std() / math.sqrt(len(values))).item(),
                                  **_learned_state(model)}, stats)

    def record_fields(self) -> dict[str, Any]:
        return {"target": self.target, "batches_per_epoch": self.batches_per_epoch, "n_eval": self.n_eval}

    def log_figures(self, model, run_dir: Path, writer: Any, epoch: int) -> None:
        """Target ``exp(-U)`` vs model density and samples; snapshots of the flow (``figures/*.png``)."""
        _, points = self.figures.grid(self.device)
        with torch.no_grad():
            target = torch.exp(-self.energy(points)).reshape(self.figures.grid_size, -1).cpu().numpy()
        self.figures.draw(model, target, f"target exp(-{self.target.upper()})", run_dir, writer, epoch,
                          "unnormalised density")


def check_options(**options) -> None:
    """Raise :class:`~neode_cli.tasks.base.OptionError` naming the first of ``options`` (keyword arguments of
    :func:`build_toy_task` or :func:`build_energy_task`; absent ones are not checked) that cannot work."""
    if "name" in options:
        require_choice("name", options["name"], TOY_SAMPLERS)
    if "target" in options:
        require_choice("target", options["target"], ENERGIES)
    require_at_least(1, **present(options, "batch_size", "batches_per_epoch", "n_test", "test_batch_size", "n_eval",
                                  "eval_batch_size", "grid_size", "figure_samples"))
    require_at_least(0, **present(options, "test_seed", "eval_seed"))
    require_positive(**present(options, "plot_range"))


# The defaults of the two builders are the config's too (``data=toy2d``, ``data=energy``): the schemas are
# generated from these signatures.
def build_toy_task(name: str = "circles",  # circles | moons | 8gaussians | pinwheel | 2spirals | checkerboard
                                           # | rings | swissroll
                   batch_size: int = 512,  # authors' CNF example: 512 samples per iteration (FFJORD: 100)
                   batches_per_epoch: int = 63,  # x 160 epochs (trainer default) = 10,080 iterations
                   n_test: int = 5000,  # held-out points, drawn with test_seed: the same for every run
                   test_batch_size: int = 1000,
                   test_seed: int = 1234,
                   plot_range: float = 4.0,  # figures cover [-plot_range, plot_range]^2
                   grid_size: int = 64,  # density images: grid_size^2 points, each one solve back to the base
                   figure_samples: int = 2000,
                   *, device: torch.device | str = "cpu") -> Task:
    """The maximum-likelihood task on toy density ``name`` (``_target_`` of ``conf/data/toy2d.yaml``)."""
    check_options(name=name, batch_size=batch_size, batches_per_epoch=batches_per_epoch, n_test=n_test,
                  test_batch_size=test_batch_size, test_seed=test_seed, plot_range=plot_range, grid_size=grid_size,
                  figure_samples=figure_samples)
    return ToyDensityTask(name, batch_size, batches_per_epoch, n_test, test_batch_size, test_seed, device,
                          _FlowFigures(plot_range, grid_size, figure_samples, test_seed))


def build_energy_task(target: str = "u1",  # u1 | u2 | u3 | u4 (Rezende & Mohamed 2015)
                      batch_size: int = 256,  # model samples per iteration
                      batches_per_epoch: int = 63,  # x 160 epochs (trainer default) = 10,080 iterations
                      n_eval: int = 4096,  # model samples for kl_loss, drawn with eval_seed
                      eval_batch_size: int = 1024,
                      eval_seed: int = 1234,
                      plot_range: float = 4.0,  # figures cover [-plot_range, plot_range]^2
                      grid_size: int = 64,
                      figure_samples: int = 2000,
                      *, device: torch.device | str = "cpu") -> Task:
    """The density-matching task on target energy ``target`` (``_target_`` of ``conf/data/energy.yaml``)."""
    check_options(target=target, batch_size=batch_size, batches_per_epoch=batches_per_epoch, n_eval=n_eval,
                  eval_batch_size=eval_batch_size, eval_seed=eval_seed, plot_range=plot_range, grid_size=grid_size,
                  figure_samples=figure_samples)
    return DensityMatchingTask(target, batch_size, batches_per_epoch, n_eval, eval_batch_size, eval_seed, device,
                               _FlowFigures(plot_range, grid_size, figure_samples, eval_seed))
