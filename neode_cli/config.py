"""Config schemas (dataclasses in Hydra's ConfigStore) and the checks that types alone cannot express.

Each yaml in ``conf/<group>/`` lists its schema first in its defaults (``- <name>_schema``), so a typo in a
key or a wrong type fails while Hydra composes the config, with Hydra's own message, before any work.
:func:`validate` then checks values (signs, known names, combinations) and raises :class:`ConfigError`
with one line saying what is wrong and what to do.

Model and data schemas follow one pattern (see the marked section at the end of this file)::

    @dataclasses.dataclass
    class ODENetSchema:
        _target_: str = "neode_cli.models.odenet.ODENet"
        channels: int = 64

    register("model", "odenet_schema", ODENetSchema)

and ``conf/model/odenet.yaml`` starts with ``defaults: [odenet_schema, _self_]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .integrator import GRADIENT_METHODS
# The solver core's own lists (fixed-grid methods need ``solver.step_size``).
from .ode import ADAPTIVE_METHODS, BACKENDS
from .ode import FIXED_METHODS as FIXED_GRID_METHODS

__all__ = [
    "ConfigError",
    "SolverSchema",
    "GradSchema",
    "RegSchema",
    "OptimSchema",
    "TrainerSchema",
    "LoggerSchema",
    "TrainSchema",
    "FIXED_GRID_METHODS",
    "ADAPTIVE_METHODS",
    "register",
    "validate",
]

OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
LOGGERS = ("tensorboard", "none")


class ConfigError(ValueError):
    """A config value that composes but cannot work; the message is one line: what is wrong, what to do."""


def register(group: Optional[str], name: str, node: Any) -> None:
    """Store ``node`` (a dataclass) in Hydra's ConfigStore as ``<group>/<name>`` (root when group is None)."""
    ConfigStore.instance().store(group=group, name=name, node=node)


# ---------------------------------------------------------------------------------------------------------
# C1: loop and CLI schemas (solver, grad, optim, trainer, logger, root). Keep field names stable.
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SolverSchema:
    """One ODE solver of ``neode_cli.ode`` and its options (None: the solver's own default)."""

    method: str = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-3
    step_size: Optional[float] = None  # fixed-grid methods: the step (required there)
    first_step: Optional[float] = None  # adaptive methods: initial step (None: chosen automatically)
    max_num_steps: Optional[int] = None
    safety: Optional[float] = None
    ifactor: Optional[float] = None
    dfactor: Optional[float] = None
    backend: str = "neode"  # neode | torchdiffeq (the reference implementation)


@dataclasses.dataclass
class GradSchema:
    """How gradients flow through the solver: backprop | adjoint | adjoint_seminorm | checkpoint."""

    method: str = "adjoint"


@dataclasses.dataclass
class RegSchema:
    """RNODE regularisers (Finlay et al. 2020) added to the training loss: weights of the integrated kinetic
    energy ``int ||f||^2 dt`` and Jacobian Frobenius norm ``int ||df/dz||_F^2 dt`` (0: not integrated)."""

    kinetic_weight: float = 0.0
    jacobian_weight: float = 0.0


@dataclasses.dataclass
class OptimSchema:
    """Optimizer and step learning-rate schedule (epochs at which lr is multiplied by ``gamma``)."""

    name: str = "sgd"  # sgd | adam
    lr: float = 0.1
    # lr is scaled by data.batch_size / batch_reference (paper: lr 0.1 at batch 128); null: no scaling.
    batch_reference: Optional[int] = None
    momentum: float = 0.0  # sgd only
    nesterov: bool = False  # sgd only
    betas: List[float] = dataclasses.field(default_factory=lambda: [0.9, 0.999])  # adam only
    weight_decay: float = 0.0
    milestones: List[int] = dataclasses.field(default_factory=list)
    gamma: float = 0.1


@dataclasses.dataclass
class TrainerSchema:
    """Loop settings: epochs, how much of each epoch/evaluation to run, device, checkpoints."""

    max_epochs: int = 160
    # A float in (0, 1] is a fraction of the batches, an int a count; null: all.
    limit_train_batches: Optional[Union[int, float]] = None
    limit_test_batches: Optional[Union[int, float]] = None
    device: str = "auto"  # auto | cpu | cuda
    threads: Optional[int] = None  # CPU threads for torch (null: torch's default, one per core)
    resume: bool = False  # continue the run in hydra.run.dir from its last checkpoint
    checkpoint: bool = True  # write checkpoint.pt after every epoch
    progress: bool = True  # tqdm progress bar per epoch
    figures_every_n_epochs: int = 0  # task.log_figures every n epochs (0: only at the end)


@dataclasses.dataclass
class LoggerSchema:
    """Where scalars go besides the run record: tensorboard | none."""

    name: str = "tensorboard"
    log_every_n_batches: int = 1  # per-batch scalars (loss, NFE) every n batches


@dataclasses.dataclass
class TrainSchema:
    """The root of ``conf/train.yaml``: one group per experiment axis, plus the seed."""

    model: Any = MISSING
    data: Any = MISSING
    solver: SolverSchema = dataclasses.field(default_factory=SolverSchema)
    grad: GradSchema = dataclasses.field(default_factory=GradSchema)
    reg: RegSchema = dataclasses.field(default_factory=RegSchema)
    optim: OptimSchema = dataclasses.field(default_factory=OptimSchema)
    trainer: TrainerSchema = dataclasses.field(default_factory=TrainerSchema)
    logger: LoggerSchema = dataclasses.field(default_factory=LoggerSchema)
    seed: int = 0


# The root schema types the C1 groups, so their yamls need no schema entry of their own.
register(None, "train_schema", TrainSchema)


def _check_limit(name: str, value: Union[int, float, None]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or value <= 0 or (isinstance(value, float) and value > 1.0):
        raise ConfigError(f"{name}={value!r} is invalid: use a fraction in (0, 1], a positive batch count, or null for all")


def validate(cfg: Any) -> None:
    """Check the composed train config beyond types; raise :class:`ConfigError` (one line) on the first problem."""
    solver = cfg.solver
    known = FIXED_GRID_METHODS + ADAPTIVE_METHODS
    if solver.method not in known:
        raise ConfigError(f"unknown solver method {solver.method!r}; valid: {', '.join(known)} (e.g. solver=dopri5)")
    if solver.backend not in BACKENDS:
        raise ConfigError(f"unknown solver.backend {solver.backend!r}; valid: {', '.join(BACKENDS)}")
    for name in ("rtol", "atol"):
        if getattr(solver, name) < 0:
            raise ConfigError(f"solver.{name}={getattr(solver, name)} is negative; tolerances must be >= 0 (e.g. solver.{name}=1e-3)")
    if solver.method in ADAPTIVE_METHODS and solver.rtol == 0 and solver.atol == 0:
        raise ConfigError("solver.rtol and solver.atol are both 0; an adaptive solver needs a positive tolerance")
    if solver.method in FIXED_GRID_METHODS:
        if solver.step_size is None:
            raise ConfigError(f"fixed-step solver {solver.method!r} needs a step size: add solver.step_size=0.1 (or pick an adaptive solver, e.g. solver=dopri5)")
    if solver.method in ADAPTIVE_METHODS and solver.step_size is not None:
        raise ConfigError(f"solver.step_size applies to fixed-step methods only, not {solver.method!r}; use solver.first_step for an initial step or drop it")
    adaptive_only = [n for n in ("first_step", "safety", "ifactor", "dfactor") if getattr(solver, n) is not None]
    if solver.method in FIXED_GRID_METHODS and adaptive_only:
        raise ConfigError(f"solver.{adaptive_only[0]} applies to adaptive methods only, not fixed-step {solver.method!r}; drop it")
    if solver.step_size is not None and solver.step_size <= 0:
        raise ConfigError(f"solver.step_size={solver.step_size} must be positive")
    for name in ("max_num_steps",):
        value = getattr(solver, name)
        if value is not None and value <= 0:
            raise ConfigError(f"solver.{name}={value} must be positive")
    if cfg.grad.method not in GRADIENT_METHODS:
        raise ConfigError(f"unknown gradient method grad.method={cfg.grad.method!r}; valid: {', '.join(GRADIENT_METHODS)}")
    if cfg.grad.method == "checkpoint" and solver.backend != "neode":
        raise ConfigError("grad=checkpoint needs solver.backend=neode (torchdiffeq has no checkpointed steps)")
    for name in ("kinetic_weight", "jacobian_weight"):
        if cfg.reg[name] < 0:
            raise ConfigError(f"reg.{name}={cfg.reg[name]} is negative; regulariser weights must be >= 0")
    optim = cfg.optim
    if optim.name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer optim.name={optim.name!r}; valid: {', '.join(OPTIMIZERS)}")
    if optim.lr <= 0:
        raise ConfigError(f"optim.lr={optim.lr} must be positive")
    if optim.batch_reference is not None and optim.batch_reference <= 0:
        raise ConfigError(f"optim.batch_reference={optim.batch_reference} must be positive (or null for no lr scaling)")
    trainer = cfg.trainer
    if trainer.max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs={trainer.max_epochs} must be at least 1")
    _check_limit("trainer.limit_train_batches", trainer.limit_train_batches)
    _check_limit("trainer.limit_test_batches", trainer.limit_test_batches)
    if trainer.threads is not None and trainer.threads < 1:
        raise ConfigError(f"trainer.threads={trainer.threads} must be at least 1 (or null for torch's default)")
    if trainer.device not in DEVICES:
        raise ConfigError(f"unknown trainer.device={trainer.device!r}; valid: {', '.join(DEVICES)}")
    if cfg.logger.name not in LOGGERS:
        raise ConfigError(f"unknown logger.name={cfg.logger.name!r}; valid: {', '.join(LOGGERS)} (e.g. logger=none)")
    if cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed} must be non-negative")


# ---------------------------------------------------------------------------------------------------------
# Model and data schemas (C2, E, F append here, one delimited block per owner; do not edit others' blocks).
# Pattern: a dataclass with ``_target_`` and the constructor kwargs, then
# ``register("model", "<name>_schema", Schema)`` (or group "data"); the yaml lists ``<name>_schema`` first.
# ---------------------------------------------------------------------------------------------------------

# ---- C2: MNIST classification (models odenet | rknet | resnet | mlp; data mnist | fashion_mnist) --------
from .models.blocks import Downsampling  # noqa: E402  (an Enum: a typo like downsampling=cnv fails at compose)


@dataclasses.dataclass
class ODENetSchema:
    """ODE-Net / RK-Net (``neode_cli.models.odenet.ODENet``); the integrator is passed in by the loop."""

    _target_: str = "neode_cli.models.odenet.ODENet"
    downsampling: Downsampling = Downsampling.conv
    channels: int = 64
    in_channels: int = 1
    num_classes: int = 10
    augment_dim: int = 0  # zero channels added before the ODE block (augmented neural ODE, Dupont et al. 2019)


@dataclasses.dataclass
class ResNetSchema:
    """ResNet baseline (``neode_cli.models.resnet.ResNet``)."""

    _target_: str = "neode_cli.models.resnet.ResNet"
    downsampling: Downsampling = Downsampling.conv
    num_blocks: int = 6
    channels: int = 64
    in_channels: int = 1
    num_classes: int = 10


@dataclasses.dataclass
class MLPSchema:
    """784-300-10 MLP (``neode_cli.models.mlp.MLP``)."""

    _target_: str = "neode_cli.models.mlp.MLP"
    in_features: int = 784
    hidden: int = 300
    num_classes: int = 10


@dataclasses.dataclass
class ClassificationDataSchema:
    """MNIST-like classification data (``neode_cli.tasks.classification.build_task``); the loop adds device."""

    _target_: str = "neode_cli.tasks.classification.build_task"
    name: str = "mnist"  # mnist | fashion_mnist
    root: str = "data/mnist"
    mirrors: Optional[List[str]] = None
    download: bool = True
    batch_size: int = 128
    test_batch_size: int = 1000
    augmentation: bool = True
    crop_padding: int = 4
    mean: float = 0.0
    std: float = 1.0
    drop_last: bool = True
    ode_error_samples: int = 128


register("model", "odenet_schema", ODENetSchema)
register("model", "rknet_schema", ODENetSchema)
register("model", "resnet_schema", ResNetSchema)
register("model", "mlp_schema", MLPSchema)
register("data", "mnist_schema", ClassificationDataSchema)
register("data", "fashion_mnist_schema", ClassificationDataSchema)
# ---- end C2 ----------------------------------------------------------------------------------------------


# ---- F: continuous normalizing flows (models cnf | planar_nf; data toy2d | energy) ------------------------


@dataclasses.dataclass
class CNFSchema:
    """Continuous normalizing flow (``neode_cli.models.cnf.CNF``); the integrator is passed in by the loop."""

    _target_: str = "neode_cli.models.cnf.CNF"
    field: str = "planar"  # planar (paper: gated units from a hypernetwork of t) | mlp (FFJORD)
    dim: int = 2
    units: int = 64  # planar: hidden units M
    hyper_hidden: int = 32  # planar: hypernetwork hidden units
    hidden_dims: List[int] = dataclasses.field(default_factory=lambda: [64, 64, 64])  # mlp
    layer: str = "concatsquash"  # mlp: concatsquash | concat
    trace: str = "exact"  # exact | hutchinson (training only; evaluation is always exact)
    noise: str = "gaussian"  # hutchinson probe: gaussian | rademacher
    t1: float = 1.0  # integration time [0, t1]
    base_std: float = 1.0  # base density N(0, base_std^2 I)
    learn_t1: bool = False  # learn t1 (FFJORD's train_T), initialised at t1


@dataclasses.dataclass
class PlanarFlowSchema:
    """Discrete planar flow baseline (``neode_cli.models.planar.PlanarFlow``)."""

    _target_: str = "neode_cli.models.planar.PlanarFlow"
    dim: int = 2
    units: int = 8  # K one-unit planar layers
    base_std: float = 1.0
    init_std: float = 0.1


@dataclasses.dataclass
class ToyDataSchema:
    """Maximum likelihood on a 2-D toy (``neode_cli.tasks.density.build_toy_task``); the loop adds device."""

    _target_: str = "neode_cli.tasks.density.build_toy_task"
    name: str = "circles"  # circles | moons | 8gaussians | pinwheel | 2spirals | checkerboard | rings | swissroll
    batch_size: int = 512
    batches_per_epoch: int = 63
    n_test: int = 5000
    test_batch_size: int = 1000
    test_seed: int = 1234
    plot_range: float = 4.0
    grid_size: int = 64
    figure_samples: int = 2000


@dataclasses.dataclass
class EnergyDataSchema:
    """Density matching to a target energy (``neode_cli.tasks.density.build_energy_task``)."""

    _target_: str = "neode_cli.tasks.density.build_energy_task"
    target: str = "u1"  # u1 | u2 | u3 | u4 (Rezende & Mohamed 2015)
    batch_size: int = 256
    batches_per_epoch: int = 63
    n_eval: int = 4096
    eval_batch_size: int = 1024
    eval_seed: int = 1234
    plot_range: float = 4.0
    grid_size: int = 64
    figure_samples: int = 2000


register("model", "cnf_schema", CNFSchema)
register("model", "planar_nf_schema", PlanarFlowSchema)
register("data", "toy2d_schema", ToyDataSchema)
register("data", "energy_schema", EnergyDataSchema)
# ---- end F -----------------------------------------------------------------------------------------------


# ---- D: `neode compare` (conf/compare.yaml) ---------------------------------------------------------------
@dataclasses.dataclass
class CompareSchema:
    """The root of ``conf/compare.yaml``: which runs to report and where (see neode_cli/report/compare.py)."""

    experiment: Optional[str] = None  # a plain name here, not the train config group
    runs: Any = dataclasses.field(default_factory=list)  # one path or a list of paths
    budget: Optional[str] = None
    out: Optional[str] = None
    root: str = "outputs"


register(None, "compare_schema", CompareSchema)
# ---- end D -----------------------------------------------------------------------------------------------


# ---- E: latent time series (models latent_ode | rnn; data spirals) ---------------------------------------
from .models.rnn import Cell  # noqa: E402  (an Enum: a typo like model.cell=lstm fails at compose)


@dataclasses.dataclass
class LatentODESchema:
    """Latent ODE (``neode_cli.models.latent_ode.LatentODE``); the integrator is passed in by the loop."""

    _target_: str = "neode_cli.models.latent_ode.LatentODE"
    obs_dim: int = 2
    latent_dim: int = 4  # paper: 4
    rec_hidden: int = 25  # recognition RNN units (paper: 25)
    dyn_hidden: int = 20  # dynamics MLP hidden units (paper: 20)
    dec_hidden: int = 20  # decoder hidden units (paper: 20)
    likelihood_std: float = 0.3  # fixed std of the Gaussian likelihood (latent_ode.yaml: ${data.noise_std})
    cell: Cell = Cell.rnn  # recognition RNN cell: rnn (Elman, as the paper and authors' example) | gru
    activation: str = "elu"  # dynamics nonlinearity: elu (authors' example) | tanh (smooth)
    augment_dim: int = 0  # zero dimensions added to z(0) (augmented neural ODE, Dupont et al. 2019)


@dataclasses.dataclass
class RNNSchema:
    """RNN baseline (``neode_cli.models.rnn.RNNBaseline``)."""

    _target_: str = "neode_cli.models.rnn.RNNBaseline"
    obs_dim: int = 2
    hidden: int = 25  # paper: 25
    cell: Cell = Cell.rnn  # rnn (Elman, the paper's "RNN") | gru
    min_std: float = 1e-3  # floor of the predicted standard deviation


@dataclasses.dataclass
class SpiralsDataSchema:
    """Irregularly observed spirals (``neode_cli.tasks.latent.build_task``); the loop adds device."""

    _target_: str = "neode_cli.tasks.latent.build_task"
    n_spirals: int = 1000
    n_train: int = 800
    n_window: int = 100
    n_extrap: int = 100
    n_obs: int = 100
    n_grid: int = 1000
    theta_max: float = 18.84955592153876  # 6 * pi
    a: float = 0.0
    b: float = 0.3
    centre: float = 5.0
    noise_std: float = 0.3
    seed: int = 0
    batch_size: int = 100
    test_batch_size: int = 200
    figure_spirals: int = 4


register("model", "latent_ode_schema", LatentODESchema)
register("model", "rnn_schema", RNNSchema)
register("data", "spirals_schema", SpiralsDataSchema)
# ---- end E -----------------------------------------------------------------------------------------------
