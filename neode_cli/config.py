"""Config schemas (dataclasses in Hydra's ConfigStore) and the checks that types alone cannot express.

Each yaml in ``conf/<group>/`` lists its schema first in its defaults (``- <name>_schema``; the loop groups
are typed by the root schema), so a typo in a key or a wrong type fails while Hydra composes the config, with
Hydra's own message, before any work. :func:`validate` then checks values and raises :class:`ConfigError`
with one line saying which key is wrong and what to do.

One source for every default:
- model and data schemas are generated from the signature of what they build (:func:`target_schema`): the
  constructor's defaults *are* the config's, and ``conf/model/*.yaml`` / ``conf/data/*.yaml`` state only what
  an option changes;
- the loop groups (solver, grad, optim, trainer, logger) are the dataclasses below, and their yamls too state
  only what an option changes; the key that names an option (``solver.method``, ``optim.name``, ...) has no
  default: every option file states it, and ``conf/train.yaml``'s defaults list picks the default option.
``tests/test_config.py`` fails if a yaml restates a default.

Validate once: solver options are checked by the solver core itself
(:meth:`neode_cli.integrator.Integrator.check`), the ``data`` group's values by the ``check_options`` of its
builder's module (``neode_cli/tasks/base.py``), the same function the builder calls first; :func:`validate`
only names the config key that was refused. The loop's own keys (optim, trainer, seed) are checked here.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import importlib
import inspect
import math
import types
import typing
from typing import Any, Callable, Dict, List, Optional, Union

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from .integrator import Integrator
from .ode import FIXED_METHODS

__all__ = [
    "ConfigError",
    "SolverSchema",
    "GradSchema",
    "RegSchema",
    "OptimSchema",
    "TrainerSchema",
    "LoggerSchema",
    "TrainSchema",
    "CompareSchema",
    "SOLVER_OPTIONS",
    "register",
    "target_schema",
    "build_integrator",
    "validate",
]

OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
LOGGERS = ("tensorboard", "none")
SEED_RANGE = 2 ** 32  # numpy's seeds are 32-bit


class ConfigError(ValueError):
    """A config value that composes but cannot work; the message is one line: what is wrong, what to do."""


def register(group: Optional[str], name: str, node: Any) -> None:
    """Store ``node`` (a dataclass) in Hydra's ConfigStore as ``<group>/<name>`` (root when group is None)."""
    ConfigStore.instance().store(group=group, name=name, node=node)


# ---------------------------------------------------------------------------------------------------------
# The loop groups and the root. Keep field names stable (run records and experiments use them).
# ---------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class SolverSchema:
    """One ODE solver of ``neode_cli.ode`` and its options (None: the solver's own default)."""

    method: str = MISSING  # stated by each conf/solver/<method>.yaml
    rtol: float = Integrator.rtol  # the paper's classification tolerance
    atol: float = Integrator.atol
    step_size: Optional[float] = None  # fixed-grid methods: the step (required there)
    first_step: Optional[float] = None  # adaptive methods: initial step (None: chosen automatically)
    max_num_steps: Optional[int] = None
    safety: Optional[float] = None
    ifactor: Optional[float] = None
    dfactor: Optional[float] = None
    controller: Optional[str] = None  # adaptive Runge-Kutta: "i" (integral, the default) or "pi"
    backend: str = Integrator.backend  # neode | torchdiffeq (the reference implementation)
    # Method-specific options passed to the solver as given (Adams max_order/max_iters, scipy_solver solver=...).
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)


#: The solver keys handed to the solver as ``options`` (every key but the method, tolerances and backend).
SOLVER_OPTIONS = tuple(f.name for f in dataclasses.fields(SolverSchema)
                       if f.name not in ("method", "rtol", "atol", "backend", "options"))


@dataclasses.dataclass
class GradSchema:
    """How gradients flow through the solver: backprop | adjoint | adjoint_seminorm | checkpoint."""

    method: str = MISSING  # stated by each conf/grad/<method>.yaml


@dataclasses.dataclass
class RegSchema:
    """RNODE regularisers (Finlay et al. 2020) added to the training loss: weights of the integrated kinetic
    energy ``int ||f||^2 dt`` and Jacobian Frobenius norm ``int ||df/dz||_F^2 dt`` (0: not integrated)."""

    kinetic_weight: float = 0.0
    jacobian_weight: float = 0.0


@dataclasses.dataclass
class OptimSchema:
    """Optimizer and step learning-rate schedule (epochs at which lr is multiplied by ``gamma``)."""

    name: str = MISSING  # sgd | adam, stated by each conf/optim/<name>.yaml
    lr: float = MISSING  # each optimizer states its own
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

    max_epochs: int = 160  # the paper's classification protocol
    # A float in (0, 1] is a fraction of the batches (at least one), an int a count; null: all.
    limit_train_batches: Optional[Union[int, float]] = None
    limit_test_batches: Optional[Union[int, float]] = None  # the same, for the evaluation after each epoch
    device: str = "auto"  # auto (cuda when available) | cpu | cuda
    threads: Optional[int] = None  # CPU threads for torch (null: torch's default); on a busy machine 1 can be far faster
    resume: bool = False  # continue the run in hydra.run.dir from its last checkpoint
    checkpoint: bool = True  # write checkpoint.pt after every epoch (and periodically, and on a stop signal)
    checkpoint_every_minutes: Optional[float] = 10.0  # also mid-epoch, after the batch that passes this; null: off
    checkpoint_every_n_batches: Optional[int] = None  # also mid-epoch, every n optimizer steps; null: off
    progress: bool = True  # tqdm progress bar per epoch (loss, the task's batch metrics, NFE)
    figures_every_n_epochs: int = 0  # task.log_figures every n epochs (0: only at the end)


@dataclasses.dataclass
class LoggerSchema:
    """Where scalars go besides the run record: tensorboard | none."""

    name: str = MISSING  # stated by each conf/logger/<name>.yaml
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


# The root schema types the loop groups, so their yamls need no schema entry of their own.
register(None, "train_schema", TrainSchema)


@dataclasses.dataclass
class CompareSchema:
    """The root of ``neode compare``'s config (``conf/compare.yaml``).

    ``experiment`` is the same name as train's ``experiment=`` group option on purpose: ``neode compare
    experiment=table1`` reports the runs of ``neode train -m experiment=table1``. Here it is a plain string
    (compare composes its config without train's groups: ``neode_cli.report.compare.register_primary_config``).
    """

    experiment: Optional[str] = None  # NAME: the runs of `neode train -m experiment=NAME`
    runs: Any = dataclasses.field(default_factory=list)  # one path or a list of paths
    budget: Optional[str] = None
    out: Optional[str] = None
    root: str = "outputs"


register(None, "compare_schema", CompareSchema)


# ---------------------------------------------------------------------------------------------------------
# Model and data schemas, generated from what they build.
# ---------------------------------------------------------------------------------------------------------

#: Parameters the loop passes itself, never config keys.
PASSED_BY_THE_LOOP = ("integrator", "regularization", "device", "data")


def _locate(path: str) -> Callable:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _config_type(hint: Any, where: str) -> Any:
    """The type OmegaConf can check for an annotation: Optional, List and Enum kept, unions narrowed."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        optional = type(None) in args
        rest = [a for a in args if a is not type(None)]
        # `Downsampling | str`: the Enum is what a config may say (a typo fails at compose).
        enums = [a for a in rest if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums:
            base = enums[0]
        elif len(rest) == 1:
            base = _config_type(rest[0], where)
        else:
            raise TypeError(f"{where}: annotation {hint} has no config type (use one type, an Enum or Optional)")
        return Optional[base] if optional else base
    if origin in (list, tuple, collections.abc.Sequence):
        return List[_config_type(args[0], where) if args else Any]
    if hint in (int, float, bool, str) or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return hint
    raise TypeError(f"{where}: annotation {hint} has no config type")


def _config_default(default: Any, kind: Any) -> Any:
    """A parameter default as a dataclass field: Enum names as members, sequences as fresh lists."""
    if default is inspect.Parameter.empty:
        return dataclasses.field(default=MISSING)
    base = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    if isinstance(base, type) and issubclass(base, enum.Enum) and default is not None:
        return dataclasses.field(default=base(default))
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda value=list(default): list(value))
    return dataclasses.field(default=default)


def config_parameters(source: Callable) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``source`` (a class: its ``__init__``) that are config keys, with their
    annotations resolved: everything except ``*args``, ``**kwargs`` and :data:`PASSED_BY_THE_LOOP`."""
    function = source.__init__ if inspect.isclass(source) else source
    hints = typing.get_type_hints(function)
    return {name: p.replace(annotation=hints.get(name, Any))
            for name, p in inspect.signature(source).parameters.items()
            if name not in PASSED_BY_THE_LOOP and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def target_schema(target: str, *forwards_to: str) -> type:
    """A dataclass schema for ``_target_: target``: one field per keyword parameter of ``target`` and of the
    callables ``forwards_to`` (dotted paths) that ``target`` hands its ``**options`` to, typed by the
    annotation and defaulting to the parameter's default.

    So a constructor's signature is the one place its defaults are written. A parameter of several of these
    callables must have the same default in each (``TypeError`` otherwise, at import).
    """
    fields: dict[str, tuple[Any, Any]] = {}
    for path in (target, *forwards_to):
        for name, p in config_parameters(_locate(path)).items():
            kind = _config_type(p.annotation, f"{path}({name})")
            if name in fields and fields[name][1] != p.default:
                raise TypeError(f"{name} defaults to {fields[name][1]!r} in one of {target}, {', '.join(forwards_to)} "
                                f"and to {p.default!r} in {path}: state it once")
            fields.setdefault(name, (kind, p.default))
    spec = [("_target_", str, dataclasses.field(default=target))]
    spec += [(name, kind, _config_default(default, kind)) for name, (kind, default) in fields.items()]
    return dataclasses.make_dataclass(f"{target.rsplit('.', 1)[-1]}Schema", spec)


#: group -> option -> (``_target_``, the callables it forwards ``**options`` to).
TARGETS: dict[str, dict[str, tuple[str, ...]]] = {
    "model": {
        "odenet": ("neode_cli.models.odenet.ODENet",),
        "rknet": ("neode_cli.models.odenet.ODENet",),  # the same module; grad=backprop makes it RK-Net
        "resnet": ("neode_cli.models.resnet.ResNet",),
        "mlp": ("neode_cli.models.mlp.MLP",),
        "latent_ode": ("neode_cli.models.latent_ode.LatentODE",),
        "rnn": ("neode_cli.models.rnn.RNNBaseline",),
        "cnf": ("neode_cli.models.cnf.CNF",),
        "planar_nf": ("neode_cli.models.planar.PlanarFlow",),
    },
    # The data group picks a dataset and, with it, the task that trains and evaluates on it: each target
    # builds a neode_cli.tasks Task.
    "data": {
        "mnist": ("neode_cli.tasks.classification.build_task", "neode_cli.tasks.classification.ClassificationTask"),
        "fashion_mnist": ("neode_cli.tasks.classification.build_task",
                          "neode_cli.tasks.classification.ClassificationTask"),
        "spirals": ("neode_cli.tasks.latent.build_task", "neode_cli.data.spirals.make_spirals"),
        "toy2d": ("neode_cli.tasks.density.build_toy_task",),
        "energy": ("neode_cli.tasks.density.build_energy_task",),
    },
}

for _group, _options in TARGETS.items():
    for _option, _paths in _options.items():
        register(_group, f"{_option}_schema", target_schema(*_paths))


# ---------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------


def build_integrator(solver: Any, grad: Any) -> Integrator:
    """The :class:`Integrator` the ``solver`` and ``grad`` groups describe (not yet checked: see :func:`validate`)."""
    options = {name: solver[name] for name in SOLVER_OPTIONS if solver.get(name) is not None}
    options.update({k: v for k, v in (solver.get("options") or {}).items() if v is not None})
    return Integrator(method=solver.method, rtol=float(solver.rtol), atol=float(solver.atol), gradient=grad.method,
                      options=options or None, backend=solver.backend)


def _checked_integrator(solver: Any, grad: Any) -> Integrator:
    """:func:`build_integrator`, checked by the solver core; its refusal becomes a :class:`ConfigError` naming
    the config key: keys are handed to the solver one at a time, and the first one it refuses is named."""
    steps = [("solver.method", "method", solver.method), ("solver.rtol", "rtol", float(solver.rtol)),
             ("solver.atol", "atol", float(solver.atol)), ("solver.backend", "backend", solver.backend),
             ("grad.method", "gradient", grad.method)]
    steps += [(f"solver.{name}", name, solver[name]) for name in SOLVER_OPTIONS if solver.get(name) is not None]
    steps += [(f"solver.options.{name}", name, value) for name, value in (solver.get("options") or {}).items()
              if value is not None]
    arguments: dict[str, Any] = {}
    options: dict[str, Any] = {}
    ARGUMENT_KEYS = {key for key, _, _ in steps[:5]}
    for key, name, value in steps:
        (arguments if key in ARGUMENT_KEYS else options)[name] = value
        try:
            Integrator(**arguments, options=dict(options) or None).check()
        except ValueError as exc:
            raise ConfigError(f"{key}={value}: {' '.join(str(exc).split())}") from None
    if solver.method == "scipy_solver" and grad.method == "backprop":
        raise ConfigError("solver.method=scipy_solver cannot backpropagate (SciPy's solve has no autograd graph); "
                          "use grad=adjoint")
    if solver.method in FIXED_METHODS and solver.step_size is None:
        # The solver would take one step per output time; in a config that is almost always an omission.
        raise ConfigError(f"fixed-step solver {solver.method!r} needs a step size: add solver.step_size=0.1 "
                          "(or pick an adaptive solver, e.g. solver=dopri5)")
    return build_integrator(solver, grad)


def _check_limit(name: str, value: Union[int, float, None]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not value > 0 or (isinstance(value, float) and value > 1.0):
        raise ConfigError(f"{name}={value!r} is invalid: use a fraction in (0, 1], a positive batch count, or null for all")


def _check_data(data: Any) -> None:
    """Hand the ``data`` group's values to the ``check_options`` of its builder's module (see
    ``neode_cli/tasks/base.py``); its :class:`~neode_cli.tasks.base.OptionError` names the key."""
    from .tasks.base import OptionError

    module = importlib.import_module(str(data._target_).rpartition(".")[0])
    check = getattr(module, "check_options", None)
    if check is None:
        return
    try:
        check(**{k: v for k, v in data.items() if k != "_target_"})
    except OptionError as exc:
        raise ConfigError(f"data.{exc}") from None


def validate(cfg: Any) -> Integrator:
    """Check the composed train config beyond types; return the integrator it describes, checked by the
    solver core. Raise :class:`ConfigError` (one line naming the key) on the first problem."""
    integrator = _checked_integrator(cfg.solver, cfg.grad)
    optim = cfg.optim
    if optim.name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer optim.name={optim.name!r}; valid: {', '.join(OPTIMIZERS)}")
    if not optim.lr > 0 or not math.isfinite(optim.lr):
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
    if not 0 <= cfg.seed < SEED_RANGE:
        raise ConfigError(f"seed={cfg.seed} is out of range: use 0 <= seed < 2**32")
    for name in ("kinetic_weight", "jacobian_weight"):
        if not cfg.reg[name] >= 0:
            raise ConfigError(f"reg.{name}={cfg.reg[name]} is invalid; regulariser weights must be >= 0")
    _check_data(cfg.data)
    return integrator
