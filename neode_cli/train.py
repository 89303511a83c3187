"""The training loop: task-agnostic; it owns epochs, optimizer steps, measurement, checkpoints and the record.

The task (``neode_cli.tasks``) decides what a batch's loss is and what an evaluation measures; the model
receives an integrator built from the ``solver`` and ``grad`` groups; the solver counts its own NFE. The loop
never branches on model or task names.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import logging
import math
import platform
import random
import signal
import sys
import threading
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
from .config import ConfigError, validate
from .integrator import Integrator
from .measure import PeakMemory, Stopwatch, count_parameters
from .models.regularization import Regularization
from .ode import SolverError, collect_stats
from .runs import RunRecord
from .tensorboard_log import open_writer, write_hparams

__all__ = ["RunError", "train", "batch_limit", "resolve_device", "build_integrator", "build_regularization",
           "build_model", "build_optimizer"]

log = logging.getLogger(__name__)

MB = 1024.0 * 1024.0


class RunError(Exception):
    """A run that could not start or finish. ``str()`` is the one line shown to the user; ``exit_code`` the
    process's exit status (2: bad config, 1: failed, 130: interrupted)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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


def rng_states() -> dict[str, Any]:
    """Every random generator's state, for checkpoints (restored by :func:`set_rng_states`)."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_states`."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def build_integrator(solver: Any, grad: Any) -> Integrator:
    """The :class:`Integrator` a model receives, from the ``solver`` and ``grad`` config groups."""
    options = {name: solver[name] for name in ("step_size", "first_step", "max_num_steps", "safety", "ifactor", "dfactor")
               if solver.get(name) is not None}
    return Integrator(method=solver.method, rtol=float(solver.rtol), atol=float(solver.atol), gradient=grad.method,
                      options=options or None, backend=solver.backend)


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


def batch_limit(total: int | None, limit: int | float | None) -> int | None:
    """How many of ``total`` batches to run: a float is a fraction (at least 1 batch), an int a count."""
    if limit is None:
        return total
    if isinstance(limit, float):
        return None if total is None else max(1, int(total * limit))
    return limit if total is None else min(total, limit)


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


class _StopRequest:
    """Ctrl-C during training: the first one lets the current batch finish, then the run stops as
    ``interrupted`` (a KeyboardInterrupt raised inside autograd or a ``__del__`` could otherwise be swallowed);
    a second one raises at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_StopRequest":
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C was pressed (called between batches)."""
        if self.requested:
            raise KeyboardInterrupt

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@dataclass
class _Progress:
    """Counters that a checkpoint carries so a resumed run continues exactly."""

    epoch: int = 0  # epochs finished
    global_step: int = 0  # optimizer steps taken
    train_time_s: float = 0.0  # sum of the epochs' training time
    rows: list = field(default_factory=list)  # metrics.jsonl rows so far


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


def train(cfg: DictConfig, run_dir: str | Path, choices: dict | None = None,
          start_if_nothing_to_resume: bool = False) -> dict[str, Any]:
    """Train per ``cfg`` in ``run_dir``, writing the run record; return the final ``metrics.json`` dict.

    ``choices`` are the config-group options picked (Hydra's ``runtime.choices``), recorded as ``model``,
    ``data``, ``experiment`` and ``budget``. With ``trainer.resume=true`` the run continues from
    ``run_dir/checkpoint.pt``; a run already completed to ``trainer.max_epochs`` is left as it is; with no
    checkpoint it is an error, unless ``start_if_nothing_to_resume`` (a sweep rerun with resume: jobs that
    never got far start afresh). Raises :class:`RunError` (one-line message) when the run cannot start or
    fails; ``metrics.json`` then says ``failed`` (or ``interrupted``) with the reason, and the last
    checkpoint is kept.
    """
    run_dir = Path(run_dir)
    record = RunRecord(run_dir)
    choices = dict(choices or {})
    resume = bool(cfg.trainer.resume)
    if resume:
        previous = record.read_summary()
        if previous and previous.get("status") == "completed" and previous.get("epochs", 0) >= cfg.trainer.max_epochs:
            log.info("%s already completed %d epochs; nothing to resume", run_dir, previous["epochs"])
            return previous
        if not record.has_checkpoint():
            if not start_if_nothing_to_resume:
                raise RunError(f"trainer.resume=true but {run_dir} holds no checkpoint.pt; pass hydra.run.dir=<the run folder to continue>", 2)
            resume = False  # nothing saved: this job starts from scratch
    elif record.has_checkpoint() or record.summary_path.exists():
        raise RunError(f"run folder {run_dir} already holds a run; continue it with trainer.resume=true or choose another hydra.run.dir", 2)

    summary = _summary_head(cfg, choices)
    summary.update(device=None, peak_memory_kind=None, started_at=_dt.datetime.now().isoformat(timespec="seconds"),
                   finished_at=None, run_dir=str(run_dir), versions=versions(),
                   config=OmegaConf.to_container(cfg, resolve=True))
    progress = _Progress()
    writer = None
    run_dir.mkdir(parents=True, exist_ok=True)
    stop = _StopRequest()
    try:
        validate(cfg)
        device = resolve_device(cfg.trainer.device)
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
        model = build_model(cfg.model, build_integrator(cfg.solver, cfg.grad), build_regularization(cfg.reg)).to(device)
        summary["params"] = count_parameters(model)
        optimizer, scheduler = build_optimizer(cfg.optim, model.parameters(), cfg.data.get("batch_size"))
        summary["lr"] = optimizer.param_groups[0]["lr"]
        meter = PeakMemory(device)
        summary["peak_memory_kind"] = meter.kind

        if resume:
            # On the CPU: RNG states must stay CPU tensors; load_state_dict moves weights and optimizer state.
            state = record.load_checkpoint(map_location="cpu")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            set_rng_states(state["rng"])
            progress = _Progress(state["epoch"], state["global_step"], state["train_time_s"],
                                 [r for r in record.epochs() if r["epoch"] <= state["epoch"]])
            record.keep_epochs(progress.rows)  # epochs logged after the checkpoint will be run again
            log.info("resuming %s after epoch %d", run_dir, progress.epoch)
        if cfg.logger.name == "tensorboard":
            writer = open_writer(run_dir / "tb", purge_step=progress.global_step if resume else None)
        log.info("run folder %s | device %s | %s parameters", run_dir, device, f"{summary['params']:,}")
        _update_summary(summary, progress)
        record.write_summary(summary)

        for epoch in range(progress.epoch, cfg.trainer.max_epochs):
            with stop:
                row = _train_epoch(cfg, task, model, optimizer, meter, writer, progress, epoch, device, stop)
                stop.check()
            scheduler.step()
            with collect_stats() as eval_stats:
                eval_start = time.perf_counter()
                model.eval()
                with torch.no_grad():
                    test = task.evaluate(model, cfg.trainer.limit_test_batches)
                row["eval_time_s"] = time.perf_counter() - eval_start
            row.update(test)
            if eval_stats.solves and "test_nfe_forward" not in row:
                row["test_nfe_forward"] = eval_stats.nfe_forward / eval_stats.solves  # mean per test solve
            progress.epoch = epoch + 1
            progress.train_time_s += row["epoch_time_s"]
            progress.rows.append(row)
            record.append_epoch(row)
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, (int, float)):
                        writer.add_scalar(f"{'test' if key.startswith('test_') else 'epoch'}/{key}", value, progress.epoch)
            if cfg.trainer.checkpoint:
                record.save_checkpoint({
                    "epoch": progress.epoch, "global_step": progress.global_step,
                    "train_time_s": progress.train_time_s, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng_states(), "config": summary["config"],
                })
            _update_summary(summary, progress)
            record.write_summary(summary)
            every = cfg.trainer.figures_every_n_epochs
            if every and progress.epoch % every == 0 and progress.epoch < cfg.trainer.max_epochs:
                _log_figures(task, model, run_dir, writer, progress.epoch, summary)
        _log_figures(task, model, run_dir, writer, progress.epoch, summary)
        summary["status"] = "completed"
        tests = ", ".join(f"{k} {v:.4g}" for k, v in (progress.rows[-1] if progress.rows else {}).items()
                          if k.startswith("test_") and isinstance(v, (int, float)))
        log.info("completed %d epochs: %s | run record: %s", progress.epoch, tests, record.summary_path)
    except KeyboardInterrupt:
        summary.update(status="interrupted", error=f"interrupted during epoch {progress.epoch + 1}")
        if record.has_checkpoint():
            hint = (f"epoch {progress.epoch} is saved: continue with the same command plus "
                    f"trainer.resume=true hydra.run.dir={run_dir}")
        else:
            hint = "no checkpoint was saved yet"
        raise RunError(f"interrupted during epoch {progress.epoch + 1}; {hint}", 130)
    except Exception as exc:  # noqa: BLE001 - every failure ends as a record plus one line
        message = _one_line(exc)
        where = f"at epoch {progress.epoch + 1}: " if summary.get("params") is not None else ""
        summary.update(status="failed", error=message)
        (run_dir / "error.log").write_text(traceback.format_exc())
        exit_code = 2 if isinstance(exc, ConfigError) else 1
        kept = " (last checkpoint kept)" if record.has_checkpoint() else ""
        raise RunError(f"{where}{message}{kept}", exit_code) from exc
    finally:
        summary["finished_at"] = _dt.datetime.now().isoformat(timespec="seconds")
        _update_summary(summary, progress)
        if summary["status"] == "running":
            summary.update(status="failed", error=summary["error"] or "stopped")
        record.write_summary(summary)
        if writer is not None:
            write_hparams(writer, summary, progress.global_step)
            writer.close()
    return summary


def _train_epoch(cfg, task, model, optimizer, meter: PeakMemory, writer, progress: _Progress, epoch: int,
                 device: torch.device, stop: _StopRequest) -> dict[str, Any]:
    """One epoch of optimizer steps; returns the epoch's row (means per batch) for ``metrics.jsonl``."""
    model.train()
    batches = task.train_batches(epoch)
    total = len(batches) if hasattr(batches, "__len__") else None
    limit = batch_limit(total, cfg.trainer.limit_train_batches)
    forward_watch, backward_watch = Stopwatch(device), Stopwatch(device)
    sums: dict[str, float] = {}
    peak_bytes = 0
    count = 0
    every = max(1, cfg.logger.log_every_n_batches)
    bar = tqdm(total=limit, desc=f"epoch {epoch + 1}/{cfg.trainer.max_epochs}", disable=not cfg.trainer.progress,
               file=sys.stderr, dynamic_ncols=True, leave=True)
    start = time.perf_counter()
    try:
        for index, batch in enumerate(batches):
            if limit is not None and index >= limit:
                break
            optimizer.zero_grad(set_to_none=True)
            with collect_stats() as stats, meter.step():
                with forward_watch:
                    loss, metrics = task.training_loss(model, batch)
                with backward_watch:
                    loss.backward()
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise RunError(f"training loss became {loss_value} at batch {index + 1}; lower optim.lr or tighten the solver tolerance")
            optimizer.step()
            progress.global_step += 1
            count += 1
            peak_bytes = max(peak_bytes, meter.last_bytes)
            values = {"loss": loss_value, **{k: float(v) for k, v in metrics.items()},
                      "nfe_forward": stats.nfe_forward, "nfe_backward": stats.nfe_backward,
                      "forward_time_s": forward_watch.seconds, "backward_time_s": backward_watch.seconds}
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + value
            if writer is not None and progress.global_step % every == 0:
                for key, value in values.items():
                    writer.add_scalar(f"train/{key}", value, progress.global_step)
            postfix = {"loss": f"{loss_value:.4f}"}
            if "accuracy" in metrics:
                postfix["acc"] = f"{float(metrics['accuracy']):.3f}"
            postfix["nfe"] = f"{stats.nfe_forward}/{stats.nfe_backward}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            stop.check()
    finally:
        bar.close()
    epoch_time = time.perf_counter() - start
    if count == 0:
        raise RunError(f"epoch {epoch + 1} had no training batches; check the data and trainer.limit_train_batches")
    means = {k: v / count for k, v in sums.items()}
    row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": means.pop("loss")}
    for key in ("nfe_forward", "nfe_backward", "forward_time_s", "backward_time_s"):
        row[key] = means.pop(key)
    row.update({f"train_{k}": v for k, v in means.items()})
    row.update(batches=count, peak_memory_mb=peak_bytes / MB, epoch_time_s=epoch_time,
               lr=optimizer.param_groups[0]["lr"])
    return row


_ROW_ONLY = ("epoch", "batches", "eval_time_s")


def _update_summary(summary: dict, progress: _Progress) -> None:
    """Fill the summary's measured keys from the last finished epoch (means per training batch)."""
    summary["epochs"] = progress.epoch
    summary["train_time_s"] = progress.train_time_s
    if progress.rows:
        last = progress.rows[-1]
        summary.update({k: v for k, v in last.items() if k not in _ROW_ONLY and k != "lr"})
        summary["final_lr"] = last.get("lr")


def _log_figures(task, model, run_dir: Path, writer, epoch: int, summary: dict) -> None:
    """``task.log_figures``; a figure that fails is reported, never allowed to lose the trained run."""
    try:
        model.eval()
        task.log_figures(model, run_dir, writer, epoch)
    except Exception as exc:  # noqa: BLE001 - figures are a by-product
        summary["figures_error"] = _one_line(exc)
        log.warning("figures failed: %s", summary["figures_error"])
