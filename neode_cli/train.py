"""The training loop: task-agnostic; it owns epochs, optimizer steps, measurement, checkpoints and the record.

The task (``neode_cli.tasks``) decides what a batch's loss is and what an evaluation measures; the model
receives an integrator built from the ``solver`` and ``grad`` groups; the solver counts its own NFE. The loop
never branches on model or task names.

Under torchrun the same loop runs on every rank (``neode_cli.distributed``): each trains on its slice of the
global batch inside DDP; the ranks exchange, once per batch and before DDP's gradient reduction, whether a step
failed, then after the backward pass the batch's sums, NFE, peak memory, stop signals and rank 0's checkpoint
decision, so they stop, fail and checkpoint at the same batch. Rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import inspect
import itertools
import logging
import math
import os
import platform
import random
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from . import __version__
from .checkpoint import (CheckpointError, LoopPosition, PartialEpoch, capture, config_differences, restore,
                         result_changing, rng_states, set_rng_states)
from .config import ConfigError, validate
from .distributed import Processes, is_peer_loss
from .integrator import Integrator
from .measure import PeakMemory, Stopwatch, count_parameters
from .models.regularization import Regularization
from .ode import SolverError, collect_stats
from .interrupts import Interrupted, StopSignals, exit_code, signal_name
from .run_lock import RunLock, RunLocked
from .runs import RunRecord
from .tasks.base import batch_limit
from .tensorboard_log import open_writer, write_hparams

__all__ = ["RunError", "train", "resolve_device", "build_regularization", "build_model", "build_optimizer"]

log = logging.getLogger(__name__)

MB = 1024.0 * 1024.0
# Tags the SeedSequence of the epochs' data draws, apart from the steps' per-rank streams.
_EPOCH_DRAW_STREAM = 0xDA7A


class RunError(Exception):
    """A run that could not start or finish. ``str()`` is the one line shown to the user; ``exit_code`` the
    process's exit status (2: bad config or filesystem fault, 1: failed, 128 + signal number: stopped by a
    signal, so 130 for SIGINT and 143 for SIGTERM; see :mod:`neode_cli.interrupts`)."""

    def __init__(self, message: str, exit_code: int = 1, show: bool = True, agreed: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        # Under torchrun: whether this process prints the line (one line per run, not one per rank), and
        # whether every rank knows the run ended this way (then they wait for rank 0's record before exiting).
        self.show = show
        self.agreed = agreed

    @property
    def interrupted(self) -> bool:
        """Whether a signal stopped the run (a sweep then stops too)."""
        return self.exit_code >= 128


# ------------------------------------------------------------------------------------------ building blocks


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA is a :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device=cuda but CUDA is not available to torch {torch.__version__}; use trainer.device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (all devices) random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_regularization(reg: Any) -> Regularization:
    """The RNODE :class:`Regularization` a model receives, from the ``reg`` config group."""
    return Regularization(kinetic_weight=float(reg.kinetic_weight), jacobian_weight=float(reg.jacobian_weight))


def build_model(model_cfg: Any, integrator: Integrator, regularization: Regularization | None = None) -> torch.nn.Module:
    """``instantiate(model_cfg)``, handing it ``integrator`` (and ``regularization``) when its constructor takes one.

    Active regularisers for a model that takes none (no ODE) are a :class:`ConfigError`.
    """
    target = get_class(model_cfg._target_)
    parameters = inspect.signature(target).parameters
    # Through a partial: instantiate() would turn a dataclass kwarg (the Integrator) into a DictConfig.
    build = instantiate(model_cfg, _partial_=True)
    kwargs = {"integrator": integrator} if "integrator" in parameters else {}
    if regularization is not None and regularization.terms:
        if "regularization" not in parameters:
            raise ConfigError(f"reg= applies to models with an ODE (odenet, latent_ode, cnf), not {target.__name__}; "
                              "use reg=none")
        kwargs["regularization"] = regularization
    return build(**kwargs)


def build_optimizer(optim: Any, parameters, batch_size: int | None):
    """Optimizer and per-epoch MultiStepLR schedule; lr is scaled by ``batch_size / optim.batch_reference``."""
    lr = float(optim.lr)
    if optim.batch_reference and batch_size:
        lr *= batch_size / optim.batch_reference
    if optim.name == "sgd":
        optimizer = torch.optim.SGD(parameters, lr=lr, momentum=optim.momentum, nesterov=optim.nesterov,
                                    weight_decay=optim.weight_decay)
    else:
        optimizer = torch.optim.Adam(parameters, lr=lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(optim.milestones), gamma=optim.gamma)
    return optimizer, scheduler


def versions() -> dict[str, str | None]:
    """Versions of what ran (recorded in ``metrics.json``)."""
    import hydra
    import omegaconf

    return {"neode": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "hydra": hydra.__version__, "omegaconf": omegaconf.__version__,
            "cuda": torch.version.cuda}


def _one_line(exc: BaseException) -> str:
    """An exception as one line of text: Hydra's instantiate wrapper is unwrapped to the real cause."""
    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    text = " ".join(str(exc).split())
    # The project's own errors (and missing files) carry messages written for users: no type prefix.
    if type(exc).__module__.startswith("neode_cli") or isinstance(exc, (SolverError, FileNotFoundError)) or not text:
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


# ----------------------------------------------------------------------------------------------- the loop


class _PeerFailed(Exception):
    """Another rank failed at a point where all ranks agree on failures; ``str()`` names it and its reason."""

    def __init__(self, rank: int, message: str) -> None:
        super().__init__(f"rank {rank}: {message}")


def _agree_start(processes: Processes, failure: RunError | None) -> None:
    """Start-up steps end the same way on every rank: raise ``failure`` (or the first failing rank's) on all
    ranks when any rank failed; only rank 0 prints it."""
    if not processes.distributed:
        if failure is not None:
            raise failure
        return
    outcomes = processes.gather(None if failure is None else (str(failure), failure.exit_code))
    failed = [(rank, outcome) for rank, outcome in enumerate(outcomes) if outcome is not None]
    if failed:
        rank, (message, code) = failed[0]
        raise RunError(message if rank == 0 else f"rank {rank}: {message}", code, show=processes.is_main,
                       agreed=True)


class _Stopped(Exception):
    """The loop saved its state after a stop signal and ends the run (``signum``: the signal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


@dataclass
class _Plan:
    """What :func:`_plan_run` decided for a folder: continue from ``state``, start (over), or nothing to do."""

    state: dict | None = None  # checkpoint to continue from
    previous: dict | None = None  # metrics.json as found
    done: bool = False  # already completed to max_epochs: left as it is
    changed: dict = field(default_factory=dict)  # config keys that differ from the checkpoint's (allowed ones)


@dataclass
class _Built:
    """What a run trains: the task, model, optimizer, schedule and memory meter on the chosen device."""

    task: Any
    model: torch.nn.Module  # the model itself (evaluated, saved); DDP wraps it for training steps only
    optimizer: Any
    scheduler: Any
    meter: PeakMemory
    device: torch.device


def _summary_head(cfg: DictConfig, choices: dict) -> dict[str, Any]:
    """The summary keys known before anything runs (what was asked for)."""
    solver = cfg.solver
    return {
        "status": "running", "error": None, "task": None,
        "model": choices.get("model") or str(cfg.model.get("_target_", "")).rsplit(".", 1)[-1],
        "data": choices.get("data"),
        "solver": solver.method, "grad": cfg.grad.method, "rtol": solver.rtol, "atol": solver.atol,
        "step_size": solver.step_size, "backend": solver.backend, "seed": cfg.seed,
        "optim": cfg.optim.name, "lr": None, "batch_size": cfg.data.get("batch_size"),
        "params": None, "epochs": 0, "max_epochs": cfg.trainer.max_epochs,
        "experiment": choices.get("experiment"), "budget": choices.get("budget"),
        # The follow-up axes a model may have (augmented ODEs, FFJORD's learned end time), as flat keys.
        **{key: cfg.model[key] for key in ("augment_dim", "learn_t1") if key in cfg.model},
        "reg_kinetic_weight": cfg.reg.kinetic_weight, "reg_jacobian_weight": cfg.reg.jacobian_weight,
    }


def _filesystem_fault(exc: BaseException) -> str | None:
    """``<path>: <OS reason>`` for an OSError that is a filesystem fault (full disk, permissions, a file where
    a folder belongs, ...); None for anything else (a missing data file keeps its own message)."""
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError) and exc.errno is not None:
        where = exc.filename if exc.filename is not None else "a file of the run"
        return f"{where}: {exc.strerror or os.strerror(exc.errno)}"
    return None


def _take_folder(run_dir: Path) -> RunLock:
    """Create ``run_dir`` and lock it (:mod:`neode_cli.run_lock`); :class:`RunError` (exit 2) when it cannot."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return RunLock(run_dir).acquire()
    except RunLocked as exc:
        raise RunError(str(exc), 2) from None
    except OSError as exc:
        raise RunError(f"cannot use run folder {run_dir}: {_filesystem_fault(exc) or _one_line(exc)}", 2) from None


def _has_run(record: RunRecord) -> bool:
    """Whether the folder holds traces of a run (its record or its config), with or without a checkpoint."""
    return (record.summary_path.exists() or record.epochs_path.exists() or record.has_checkpoint()
            or (record.run_dir / ".hydra" / "config.yaml").exists())


def _read_previous(record: RunRecord) -> dict | None:
    """``metrics.json`` as found, or None when absent or unreadable (the checkpoint is what counts)."""
    try:
        return record.read_summary()
    except (OSError, ValueError):
        return None


def _plan_run(cfg: DictConfig, record: RunRecord, start_if_nothing_to_resume: bool) -> _Plan:
    """Step 1: decide from the folder's contents and ``trainer.resume`` what this run does; writes nothing.

    Refusals (:class:`RunError`, exit 2): a folder holding a run without ``trainer.resume=true``; a resume with
    no run to resume; a checkpoint that cannot be read; a config that differs in a key that changes the result.
    """
    run_dir = record.run_dir
    previous = _read_previous(record)
    if not cfg.trainer.resume:
        if _has_run(record):
            raise RunError(f"run folder {run_dir} already holds a run; continue it with trainer.resume=true (a run "
                           "that saved no checkpoint starts over), or choose another hydra.run.dir", 2)
        return _Plan()
    if previous and previous.get("status") == "completed" and previous.get("epochs", 0) >= cfg.trainer.max_epochs:
        log.info("%s already completed %d epochs; nothing to resume", run_dir, previous["epochs"])
        return _Plan(previous=previous, done=True)
    if not record.has_checkpoint():
        if _has_run(record) or start_if_nothing_to_resume:
            log.info("%s saved no checkpoint: starting the run over in it", run_dir)
            return _Plan(previous=previous)
        raise RunError(f"trainer.resume=true but {run_dir} holds no checkpoint.pt and no run record; "
                       "pass hydra.run.dir=<the run folder to continue>", 2)
    try:
        state = record.load_checkpoint()
    except CheckpointError as exc:
        raise RunError(f"{exc}; nothing was changed: restore the file, or move the folder away and start anew", 2) from None
    saved = state.get("config") or (previous or {}).get("config") or {}
    differences = config_differences(saved, OmegaConf.to_container(cfg, resolve=True)) if saved else {}
    refused = result_changing(differences)
    if refused:
        raise RunError(f"cannot resume {run_dir}: {', '.join(refused)} differ{'s' if len(refused) == 1 else ''} from "
                       "the checkpoint's config, and that changes what is trained (only trainer.max_epochs, device, "
                       "threads, progress, checkpoint intervals and logger.* may change); drop those overrides or "
                       "start a new run in another hydra.run.dir", 2)
    changed = {k: list(v) for k, v in differences.items() if k != "trainer.resume"}
    return _Plan(state=state, previous=previous, changed=changed)


def train(cfg: DictConfig, run_dir: str | Path, choices: dict | None = None,
          start_if_nothing_to_resume: bool = False, resume_command: str | None = None,
          hydra_files: dict[str, str] | None = None, processes: Processes | None = None) -> dict[str, Any]:
    """Train per ``cfg`` in ``run_dir``, writing the run record; return the final ``metrics.json`` dict.

    Steps: take the folder (create, lock) -> plan (fresh, resume or nothing to do) -> build (task, model,
    optimizer) -> restore (a resume) -> open the record -> epochs -> finish. ``choices`` are the config-group
    options picked (Hydra's ``runtime.choices``), recorded as ``model``, ``data``, ``experiment`` and
    ``budget``. ``resume_command`` is the command that continues this run (printed when it stops);
    ``hydra_files`` (``name: text``) are written to ``.hydra/`` once the folder may be used.

    With ``trainer.resume=true`` the run continues from ``checkpoint.pt`` (mid-epoch included); a run already
    completed to ``trainer.max_epochs`` is left as it is; a folder whose run saved no checkpoint is started
    over; with no run in the folder it is an error, unless ``start_if_nothing_to_resume`` (a sweep rerun).
    A resume that cannot start (unreadable or mismatched checkpoint, a config that differs where it matters,
    a build failure) changes nothing on disk.

    Raises :class:`RunError` (one-line message) when the run cannot start, fails or is stopped by a signal;
    ``metrics.json`` then says ``failed`` (or ``interrupted``) with the reason, and the last checkpoint is kept.

    ``processes`` (default: this process alone) are the ranks of a DDP run started by torchrun; every rank
    calls this with the same arguments. Rank 0 takes the lock and writes the folder; the others read it
    through a :class:`~neode_cli.runs.ReadOnlyRunRecord`. ``cfg.data.batch_size`` is the global batch.
    """
    processes = processes or Processes()
    run_dir = Path(run_dir)
    command = resume_command or f"the same command plus trainer.resume=true hydra.run.dir={run_dir}"
    with StopSignals(repeat_stops_at_once=not processes.distributed) as stop:
        lock = None
        try:
            failure = None
            try:
                if processes.is_main:
                    lock = _take_folder(run_dir)
                    RunRecord(run_dir).remove_stray_temporaries()
            except RunError as exc:
                failure = exc
            _agree_start(processes, failure)
            record = RunRecord(run_dir) if processes.is_main else RunRecord(run_dir).read_only()
            plan, failure = None, None
            try:
                plan = _plan_run(cfg, record, start_if_nothing_to_resume)
            except RunError as exc:
                failure = exc
            _agree_start(processes, failure)
            if plan.done:
                return plan.previous
            return _Run(cfg, record, dict(choices or {}), command, stop, processes).execute(plan, hydra_files)
        except Interrupted as exc:
            raise RunError("interrupted during start-up; nothing was changed", exit_code(exc.signum),
                           show=processes.is_main) from None
        finally:
            if lock is not None:
                lock.release()


class _Run:
    """One run in a locked folder: the steps after planning (build, restore, record, epochs, finish)."""

    def __init__(self, cfg: DictConfig, record: RunRecord, choices: dict, resume_command: str,
                 stop: StopSignals, processes: Processes | None = None) -> None:
        self.cfg, self.record, self.run_dir, self.stop = cfg, record, record.run_dir, stop
        self.processes = processes or Processes()
        self.step = None  # the training step (DDP-wrapped under torchrun), made once all ranks have built
        self.agreed = False  # the run ended at a point every rank knows of (DDP)
        self._fork_pending = False  # rank > 0 resumed without its own RNG state: derive one
        self.resume_command = resume_command
        self.position = LoopPosition()
        self.rows: list[dict] = []
        self.pending_rng: dict | None = None  # the checkpoint's RNG states, applied where the loop resumes
        self.saved: LoopPosition | None = None  # the position of the last checkpoint on disk
        self.writer = None
        self.summary = _summary_head(cfg, choices)
        self.summary.update(device=None, peak_memory_kind=None,
                            started_at=_dt.datetime.now().isoformat(timespec="seconds"), finished_at=None,
                            run_dir=str(record.run_dir), versions=versions(),
                            config=OmegaConf.to_container(cfg, resolve=True))
        self.summary["world_size"] = self.processes.world_size
        self._since_save = (time.monotonic(), 0)  # (clock, batches) at the last checkpoint

    # ------------------------------------------------------------------------------------------ steps

    def execute(self, plan: _Plan, hydra_files: dict[str, str] | None) -> dict[str, Any]:
        """Build, restore (a resume), open the record, train, finish; see :func:`train`."""
        if plan.state is not None:
            # A resume changes nothing on disk until the checkpoint is loaded into what was built.
            failure = None
            try:
                built = self.build()
                self.restore(built, plan)
            except RunError as exc:
                failure = exc
            except CheckpointError as exc:
                failure = RunError(f"{exc}; nothing was changed", 2)
            except Exception as exc:  # noqa: BLE001
                fault = _filesystem_fault(exc)
                code = 2 if fault or isinstance(exc, ConfigError) else 1
                failure = RunError(f"cannot resume {self.run_dir}: {fault or _one_line(exc)}; nothing was changed", code)
            _agree_start(self.processes, failure)
            return self._supervised(lambda: self.open_record(hydra_files, plan), lambda: self.train_and_finish(built))
        return self._supervised(lambda: self.open_record(hydra_files, plan), self._build_and_train)

    def _build_and_train(self) -> None:
        failure, built = None, None
        try:
            built = self.build()
        except Exception as exc:  # noqa: BLE001 - every rank learns of it (DDP), then it ends the run
            failure = exc
        self._agree(failure)
        self.train_and_finish(built)

    def _agree(self, failure: BaseException | None) -> None:
        """Every rank learns whether any failed here: raise ``failure`` on the failing rank and
        :class:`_PeerFailed` on the others (one process alone: raise ``failure`` if any)."""
        processes = self.processes
        if not processes.distributed:
            if failure is not None:
                raise failure
            return
        if not processes.exchange([0.0 if failure is None else 1.0]).any():
            return
        messages = processes.gather(None if failure is None else _one_line(failure))
        self.agreed = True
        if failure is not None:
            raise failure
        rank = next(r for r, m in enumerate(messages) if m is not None)
        raise _PeerFailed(rank, messages[rank])

    def _agreed_signal(self, local: int | None) -> int | None:
        """The stop signal every rank acts on: ``local`` alone, or under DDP the first rank's that got one."""
        if not self.processes.distributed:
            return local
        signals = self.processes.exchange([local or 0])[:, 0]
        received = [int(s) for s in signals if s > 0]
        return received[0] if received else None

    def _seed_epoch_draw(self, epoch: int) -> None:
        """Seed the torch RNG for drawing epoch ``epoch``'s order and augmentation from ``(seed, epoch)`` alone.

        So each sample's crop in each epoch depends only on the seed and the epoch (as
        ``torch.utils.data.distributed.DistributedSampler`` seeds its shuffle with seed + epoch), not on how
        much randomness the steps before used: every rank of a DDP run draws the global batches of a 1-process
        run with the same seed without exchanging anything, also for models that draw noise inside their steps.
        """
        seed = np.random.SeedSequence([int(self.cfg.seed), epoch, _EPOCH_DRAW_STREAM]).generate_state(1)[0]
        torch.manual_seed(int(seed))

    def _fork_step_rng(self, epoch: int, batch: int) -> None:
        """Ranks > 0: a generator stream of their own for randomness inside steps (a latent ODE's sample, a
        Hutchinson probe), derived from the seed, the position and the rank, so ranks draw different noise."""
        seed = np.random.SeedSequence([int(self.cfg.seed), epoch, batch, self.processes.rank]).generate_state(1)[0]
        torch.manual_seed(int(seed))

    def build(self) -> _Built:
        """Validate the config, pick the device, seed, and build task, model, optimizer and schedule."""
        cfg, summary = self.cfg, self.summary
        integrator = validate(cfg)  # the solver and grad groups, checked by the solver core
        device = self.processes.place(resolve_device(cfg.trainer.device))
        summary["device"] = str(device)
        if cfg.trainer.threads is not None:
            torch.set_num_threads(cfg.trainer.threads)
        summary["threads"] = torch.get_num_threads()
        seed_everything(cfg.seed)
        task = instantiate(cfg.data, _partial_=True)(device=device)
        summary["task"] = getattr(task, "name", type(task).__name__)
        summary.update(task.record_fields())
        # Reseed so the model's initial weights do not depend on how much randomness the data used.
        torch.manual_seed(cfg.seed)
        model = build_model(cfg.model, integrator, build_regularization(cfg.reg)).to(device)
        summary["params"] = count_parameters(model)
        optimizer, scheduler = build_optimizer(cfg.optim, model.parameters(), cfg.data.get("batch_size"))
        summary["lr"] = optimizer.param_groups[0]["lr"]
        meter = PeakMemory(device)
        summary["peak_memory_kind"] = meter.kind
        return _Built(task, model, optimizer, scheduler, meter, device)

    def restore(self, built: _Built, plan: _Plan) -> None:
        """Load the checkpoint into ``built``; the rows of the epochs it covers become this run's rows."""
        self.position = restore(plan.state, self.record.checkpoint_path, built.model, built.optimizer,
                                built.scheduler, self.summary["model"])
        self.saved = dataclasses.replace(self.position)
        processes, per_rank = self.processes, plan.state.get("rng_ranks")
        if processes.distributed and per_rank and len(per_rank) == processes.world_size:
            self.pending_rng = per_rank[processes.rank]  # each rank continues its own stream
        else:
            self.pending_rng = plan.state["rng"]
            self._fork_pending = processes.rank > 0  # a run resumed on more processes than it was saved by
        # On the CPU the RNG states stay CPU tensors; load_state_dict moved weights and optimizer state.
        position = self.position
        self.rows = [r for r in self.record.epochs() if r.get("epoch", 0) <= position.epoch]
        resumed = list((plan.previous or {}).get("resumed") or [])
        resumed.append({"epoch": position.epoch + 1, "batch": position.batch,
                        "at": _dt.datetime.now().isoformat(timespec="seconds"), "changed": plan.changed})
        self.summary["resumed"] = resumed

    def open_record(self, hydra_files: dict[str, str] | None, plan: _Plan) -> None:
        """Write ``.hydra/``, bring ``metrics.jsonl`` to the restored epochs, open TensorBoard, write the
        ``running`` summary: the first writes of a run into its folder."""
        record = self.record
        if hydra_files:
            record.write_hydra_files(hydra_files)
        if plan.state is not None:
            torn = record.repair_epochs()
            if torn:
                log.warning("%s: dropped %d torn line(s) at its end (a crash mid-write)", record.epochs_path, torn)
            if len(self.rows) != len(record.epochs()):
                record.keep_epochs(self.rows)  # epochs logged after the checkpoint will be run again
            log.info("resuming %s at epoch %d, batch %d", self.run_dir, self.position.epoch + 1, self.position.batch)
        elif record.epochs_path.exists():
            record.keep_epochs([])  # starting over: the earlier attempt saved no checkpoint
        self._update_summary()
        record.write_summary(self.summary)

    def train_and_finish(self, built: _Built) -> None:
        """Open TensorBoard, run the epochs, draw the final figures and mark the run completed."""
        cfg, summary = self.cfg, self.summary
        self.step = self.processes.wrap(built.task, built.model, built.device)
        if cfg.logger.name == "tensorboard" and self.record.writes:
            self.writer = open_writer(self.run_dir / "tb",
                                      purge_step=self.position.global_step if self.saved else None)
        log.info("run folder %s | device %s | %s parameters", self.run_dir, built.device, f"{summary['params']:,}")
        self._update_summary()
        self.record.write_summary(summary)
        with self.stop.deferred():
            while self.position.epoch < cfg.trainer.max_epochs:
                row = self.train_epoch(built)
                self.end_epoch(built, row)
                signum = self._agreed_signal(self.stop.signum)
                if signum:  # arrived during evaluation: the epoch's checkpoint is on disk
                    raise _Stopped(signum)
            if self.record.writes:
                _log_figures(built.task, built.model, self.run_dir, self.writer, self.position.epoch, summary)
        summary["status"] = "completed"
        tests = ", ".join(f"{k} {v:.4g}" for k, v in (self.rows[-1] if self.rows else {}).items()
                          if k.startswith("test_") and isinstance(v, (int, float)))
        log.info("completed %d epochs: %s | run record: %s", self.position.epoch, tests, self.record.summary_path)

    # ------------------------------------------------------------------------------------------ epochs

    def _draw_batches(self, task, epoch: int):
        """The epoch's batches as an iterator positioned after the batches already done, with the RNG where
        an uninterrupted run would have it; also the RNG states at the draw (saved by mid-epoch checkpoints)."""
        position = self.position
        if position.mid_epoch:
            # Draw the epoch's order (and augmentation) again from the RNG states it was drawn with, skip
            # the batches already trained on, then put the RNG where the checkpoint left it.
            set_rng_states(position.epoch_rng)
            epoch_rng = position.epoch_rng
            batches = task.train_batches(epoch)
            iterator = iter(batches)
            for _ in itertools.islice(iterator, position.batch):  # skipped now, before the RNG is restored
                pass
            set_rng_states(self.pending_rng)
            if self._fork_pending:
                self._fork_step_rng(epoch, position.batch)
        else:
            if self.pending_rng is not None:
                set_rng_states(self.pending_rng)
            steps_rng = rng_states()
            self._seed_epoch_draw(epoch)
            epoch_rng = rng_states()
            batches = task.train_batches(epoch)
            iterator = iter(batches)
            set_rng_states(steps_rng)  # the steps' own stream continues where it was
            if self.processes.rank > 0:
                self._fork_step_rng(epoch, 0)
        self.pending_rng = None
        self._fork_pending = False
        return batches, iterator, epoch_rng

    def train_epoch(self, built: _Built) -> dict[str, Any]:
        """The optimizer steps of one epoch (from a mid-epoch position when resumed); returns its row (means
        per batch) for ``metrics.jsonl``. After each batch it saves a checkpoint when one is due and stops
        (:class:`_Stopped`) after saving when a stop signal arrived."""
        cfg, position, task, model, optimizer, meter = (self.cfg, self.position, built.task, built.model,
                                                        built.optimizer, built.meter)
        epoch = position.epoch
        model.train()
        batches, iterator, epoch_rng = self._draw_batches(task, epoch)
        position.epoch_rng = epoch_rng
        total = len(batches) if hasattr(batches, "__len__") else None
        limit = batch_limit(total, cfg.trainer.limit_train_batches)
        world = self.processes.world_size
        partial = (position.partial if position.mid_epoch and position.partial
                   else PartialEpoch(world_size=world))
        if partial.world_size != world:  # resumed mid-epoch on another number of processes
            partial.world_size = 0
        position.partial = partial
        forward_watch, backward_watch = Stopwatch(built.device), Stopwatch(built.device)
        every = max(1, cfg.logger.log_every_n_batches)
        bar = tqdm(total=limit, initial=position.batch, desc=f"epoch {epoch + 1}/{cfg.trainer.max_epochs}",
                   disable=not cfg.trainer.progress or not self.processes.is_main, file=sys.stderr,
                   dynamic_ncols=True, leave=True)
        start, elapsed_before = time.perf_counter(), partial.elapsed_s
        distributed = self.processes.distributed
        try:
            for index, batch in enumerate(iterator, start=position.batch):
                if limit is not None and index >= limit:
                    break
                shard = self.processes.shard(batch)
                optimizer.zero_grad(set_to_none=True)
                with collect_stats() as stats, meter.step():
                    failure = None
                    try:
                        with forward_watch:
                            loss, metrics = self.step(shard.batch)
                    except Exception as exc:  # noqa: BLE001 - all ranks must learn of it before DDP's backward
                        failure = exc
                    self._agree(failure)
                    with backward_watch:
                        (loss * shard.weight if distributed else loss).backward()
                if distributed:
                    loss_value, batch_metrics, signum, due = self._exchange_batch(shard, loss, metrics, stats,
                                                                                  meter.last_bytes)
                else:
                    loss_value = float(loss.detach())
                    batch_metrics = {k: float(v) for k, v in metrics.items()}
                    batch_metrics.update(nfe_forward=stats.nfe_forward, nfe_backward=stats.nfe_backward)
                    partial.peak_bytes = max(partial.peak_bytes, meter.last_bytes)
                if not math.isfinite(loss_value):
                    self.agreed = True  # the global loss: every rank sees the same number
                    raise RunError(f"training loss became {loss_value} at batch {index + 1}; lower optim.lr or "
                                   "tighten the solver tolerance")
                optimizer.step()
                position.global_step += 1
                position.batch = index + 1
                if not distributed:  # one process: sampled after the step, as it always was
                    signum, due = self.stop.signum, self._checkpoint_due()
                values = {"loss": loss_value, **batch_metrics,
                          "forward_time_s": forward_watch.seconds, "backward_time_s": backward_watch.seconds}
                for key, value in values.items():
                    partial.sums[key] = partial.sums.get(key, 0.0) + value
                if self.writer is not None and position.global_step % every == 0:
                    for key, value in values.items():
                        self.writer.add_scalar(f"train/{key}", value, position.global_step)
                bar.set_postfix(_postfix(loss_value, metrics, batch_metrics, task.progress_keys), refresh=False)
                bar.update(1)
                partial.elapsed_s = elapsed_before + time.perf_counter() - start
                if signum:
                    self.save_checkpoint(built)
                    raise _Stopped(signum)
                if due:
                    self.save_checkpoint(built)
        finally:
            bar.close()
        count = position.batch
        if count == 0:
            raise RunError(f"epoch {epoch + 1} had no training batches; check the data and trainer.limit_train_batches")
        means = {k: v / count for k, v in partial.sums.items()}
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": means.pop("loss")}
        for key in ("nfe_forward", "nfe_backward", "forward_time_s", "backward_time_s"):
            row[key] = means.pop(key)
        row.update({f"train_{k}": v for k, v in means.items()})
        row.update(batches=count, peak_memory_mb=partial.peak_bytes / MB,
                   epoch_time_s=elapsed_before + time.perf_counter() - start, lr=optimizer.param_groups[0]["lr"])
        if distributed and partial.world_size == self.processes.world_size:
            # each rank's own work next to the aggregate (NFE: mean over ranks; memory: max)
            for key, sums in partial.rank_sums.items():
                row[f"{key}_per_rank"] = [v / count for v in sums]
            row["peak_memory_mb_per_rank"] = [b / MB for b in partial.rank_peaks]
        return row

    def _exchange_batch(self, shard, loss, metrics: dict, stats, peak_bytes: int):
        """DDP: one all-gather per batch of each rank's sample-weighted loss and metrics, NFE, peak memory,
        stop signal and (rank 0's) checkpoint decision. Returns the global batch's loss and metrics (means
        over its samples, as one process computes them), the agreed stop signal and whether to checkpoint."""
        partial, world = self.position.partial, self.processes.world_size
        keys = list(metrics)
        mine = [shard.count * float(loss.detach()), *(shard.count * float(metrics[k]) for k in keys), shard.count,
                stats.nfe_forward, stats.nfe_backward, peak_bytes, self.stop.signum or 0,
                float(self.processes.is_main and self._checkpoint_due(pending_steps=1))]
        table = self.processes.exchange(mine)  # (world, len(mine))
        n = len(keys)
        samples = float(table[:, n + 1].sum())
        loss_value = float(table[:, 0].sum()) / samples
        batch_metrics = {k: float(table[:, 1 + i].sum()) / samples for i, k in enumerate(keys)}
        nfe = {"nfe_forward": table[:, n + 2].tolist(), "nfe_backward": table[:, n + 3].tolist()}
        per_rank_kept = partial.world_size == world  # (not after a resume on another world size mid-epoch)
        for key, per_rank in nfe.items():
            batch_metrics[key] = sum(per_rank) / world
            if per_rank_kept:
                sums = partial.rank_sums.setdefault(key, [0.0] * world)
                partial.rank_sums[key] = [a + b for a, b in zip(sums, per_rank)]
        peaks = [int(v) for v in table[:, n + 4].tolist()]
        if per_rank_kept:
            partial.rank_peaks = [max(a, b) for a, b in zip(partial.rank_peaks or [0] * world, peaks)]
        partial.peak_bytes = max(partial.peak_bytes, max(peaks))
        received = [int(v) for v in table[:, n + 5].tolist() if v > 0]
        return loss_value, batch_metrics, (received[0] if received else None), bool(table[0, n + 6])

    def end_epoch(self, built: _Built, row: dict[str, Any]) -> None:
        """Step the schedule, evaluate, append the row, log it, checkpoint, rewrite the summary, figures."""
        cfg, position, model, task = self.cfg, self.position, built.model, built.task
        built.scheduler.step()
        eval_start = time.perf_counter()
        model.eval()
        test = {}
        if self.processes.is_main:  # rank 0 evaluates (and records); the others wait at the checkpoint
            with torch.no_grad():
                test = task.evaluate(model, cfg.trainer.limit_test_batches)  # its own test_nfe_forward too
        row["eval_time_s"] = time.perf_counter() - eval_start
        row.update(test)
        position.epoch += 1
        position.batch, position.partial, position.epoch_rng = 0, None, None
        position.train_time_s += row["epoch_time_s"]
        self.rows.append(row)
        self.record.append_epoch(row)
        if self.writer is not None:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{'test' if key.startswith('test_') else 'epoch'}/{key}", value,
                                           position.epoch)
        if cfg.trainer.checkpoint:
            self.save_checkpoint(built)
        self._update_summary()
        self.record.write_summary(self.summary)
        every = cfg.trainer.figures_every_n_epochs
        if every and position.epoch % every == 0 and position.epoch < cfg.trainer.max_epochs and self.record.writes:
            _log_figures(task, model, self.run_dir, self.writer, position.epoch, self.summary)

    # --------------------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, built: _Built) -> None:
        """Write the current state to ``checkpoint.pt`` (atomically); a no-op with ``trainer.checkpoint=false``.

        This is the callable a launcher's own checkpoint hook (e.g. submitit's ``checkpoint()``) should reach:
        it is valid between batches, which is where the loop calls it."""
        if not self.cfg.trainer.checkpoint:
            return
        state = capture(built.model, built.optimizer, built.scheduler, self.position, self.summary["config"])
        if self.processes.distributed:  # every rank calls this at the same batch: it is a collective
            state["rng_ranks"] = self.processes.gather(rng_states())
            state["world_size"] = self.processes.world_size
        self.record.save_checkpoint(state)  # rank 0 writes; the others' record writes nothing
        self.saved = dataclasses.replace(self.position, partial=None, epoch_rng=None)
        self.summary["checkpoint"] = {"epoch": self.position.epoch, "batch": self.position.batch,
                                      "saved_at": _dt.datetime.now().isoformat(timespec="seconds")}
        self._since_save = (time.monotonic(), self.position.global_step)

    def _checkpoint_due(self, pending_steps: int = 0) -> bool:
        """Whether ``trainer.checkpoint_every_minutes`` or ``checkpoint_every_n_batches`` has passed (counting
        ``pending_steps`` optimizer steps about to be taken)."""
        trainer = self.cfg.trainer
        if not trainer.checkpoint:
            return False
        clock, step = self._since_save
        n_batches, minutes = trainer.get("checkpoint_every_n_batches"), trainer.get("checkpoint_every_minutes")
        return bool((n_batches and self.position.global_step + pending_steps - step >= n_batches)
                    or (minutes and time.monotonic() - clock >= 60.0 * minutes))

    # ------------------------------------------------------------------------------------------ outcome

    def _where(self) -> str:
        position = self.position
        return f"epoch {position.epoch + 1}" + (f", batch {position.batch}" if position.batch else "")

    def _saved_text(self) -> str:
        saved = self.saved
        if saved is None:
            return "nothing was saved yet"
        if saved.batch:
            return f"the checkpoint of epoch {saved.epoch + 1}, batch {saved.batch} is kept"
        return f"the checkpoint after epoch {saved.epoch} is kept"

    def _supervised(self, open_record, body) -> dict[str, Any]:
        """Run ``open_record`` then ``body``, turning every way they can end into the record plus one line."""
        summary, record = self.summary, self.record
        try:
            open_record()
            body()
        except (_Stopped, Interrupted, KeyboardInterrupt) as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            name = signal_name(signum)
            at_once = not isinstance(exc, _Stopped)
            summary.update(status="interrupted", error=f"interrupted by {name} during {self._where()}",
                           interrupted_at={"epoch": self.position.epoch + 1, "batch": self.position.batch,
                                           "signal": name})
            if isinstance(exc, _Stopped) and self.saved is not None:
                hint = f"saved at {self._where()}; continue with: {self.resume_command}"
            else:
                how = "continue" if self.saved is not None else "restart"
                hint = f"{'stopped at once; ' if at_once else ''}{self._saved_text()}; {how} with: {self.resume_command}"
            # Under DDP the ranks stopped together (_Stopped): rank 0 prints the line and they all wait for it.
            raise RunError(f"interrupted by {name} during {self._where()}; {hint}", exit_code(signum),
                           show=self.processes.is_main, agreed=isinstance(exc, _Stopped)) from None
        except Exception as exc:  # noqa: BLE001 - every failure ends as a record plus one line
            processes = self.processes
            # DDP: a failure every rank agreed on is printed by rank 0 alone. One they could not agree on broke
            # the group: the failing rank > 0 leaves its message for rank 0, which prints and records it (or,
            # finding none, that the rank was killed); the other ranks only see their collective broken.
            unheard = processes.distributed and not self.agreed
            lost = unheard and is_peer_loss(exc)
            fault = _filesystem_fault(exc)
            message = fault or _one_line(exc)
            show = processes.is_main if self.agreed else not lost
            if unheard and not lost and not processes.is_main and processes.tell_failure(message):
                show = False
            where = f"at {self._where()}: " if summary.get("params") is not None else ""
            if lost and processes.is_main:
                with self.stop.deferred():  # torchrun's SIGTERM to the survivors arrives while rank 0 waits
                    told = processes.told_failure()
                if told is None:  # a rank that can say nothing: killed (out of memory, kill -9) or crashed
                    message = ("another process of the run ended without a word: killed (e.g. for lack of "
                               "memory) or crashed")
                    summary.update(status="failed", error=message)
                    how = "continue" if self.saved is not None else "restart"
                    raise RunError(f"{where}{message}; {self._saved_text()}; {how} with: {self.resume_command}",
                                   1, show=True, agreed=False) from None
                message, show = f"rank {told[0]}: {told[1]}", True
            elif lost:
                message = "another process of the run ended (rank 0 says why)"
            summary.update(status="failed", error=message)
            with contextlib.suppress(OSError):
                record.write_error_log(traceback.format_exc())
            if fault:
                how = "continue" if self.saved is not None else "restart"
                raise RunError(f"{where}{message}; {self._saved_text()}: fix that, then {how} with: "
                               f"{self.resume_command}", 2, show=show, agreed=self.agreed) from None
            exit_code_ = 2 if isinstance(exc, ConfigError) else 1
            kept = " (last checkpoint kept)" if record.has_checkpoint() else ""
            raise RunError(f"{where}{message}{kept}", exit_code_, show=show, agreed=self.agreed) from exc
        finally:
            summary["finished_at"] = _dt.datetime.now().isoformat(timespec="seconds")
            self._update_summary()
            if summary["status"] == "running":
                summary.update(status="failed", error=summary["error"] or "stopped")
            try:
                record.write_summary(summary)
            except OSError as exc:  # e.g. the disk is still full: the line above already says so
                log.debug("could not write %s: %s", record.summary_path, exc)
            if self.writer is not None:
                with contextlib.suppress(Exception):
                    write_hparams(self.writer, summary, self.position.global_step)
                    self.writer.close()
        return summary

    def _update_summary(self) -> None:
        """Fill the summary's measured keys from the last finished epoch (means per training batch)."""
        summary, position = self.summary, self.position
        summary["epochs"] = position.epoch
        summary["train_time_s"] = position.train_time_s
        if self.rows:
            last = self.rows[-1]
            summary.update({k: v for k, v in last.items() if k not in _ROW_ONLY and k != "lr"})
            summary["final_lr"] = last.get("lr")


_ROW_ONLY = ("epoch", "batches", "eval_time_s")


def _postfix(loss_value: float, metrics: dict, batch_metrics: dict, keys) -> dict[str, str]:
    """The progress bar's postfix after a batch: the loss, the task's ``progress_keys`` metrics, NFE."""
    postfix = {"loss": f"{loss_value:.4f}"}
    postfix.update({key: f"{float(batch_metrics.get(key, metrics[key])):.3f}" for key in keys})
    postfix["nfe"] = f"{batch_metrics['nfe_forward']:g}/{batch_metrics['nfe_backward']:g}"
    return postfix


def _log_figures(task, model, run_dir: Path, writer, epoch: int, summary: dict) -> None:
    """``task.log_figures``; a figure that fails is reported, never allowed to lose the trained run."""
    try:
        model.eval()
        task.log_figures(model, run_dir, writer, epoch)
    except Exception as exc:  # noqa: BLE001 - figures are a by-product
        summary["figures_error"] = _one_line(exc)
        log.warning("figures failed: %s", summary["figures_error"])
