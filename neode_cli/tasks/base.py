"""The contract between the training loop and one kind of experiment.

The loop (``neode_cli/train.py``) owns control flow: epochs, optimizer steps, measurement, checkpoints and
the run record. A task owns one decision: what a batch's loss is and what an evaluation measures. The loop
never branches on model or task names.

A task module whose builder is a ``_target_`` of ``conf/data/`` may define ``check_options(**options)``: the
checks of the builder's arguments that need no data, raising :class:`OptionError`. The builder calls it first,
and config validation (``neode_cli.config.validate``) calls the same function, so a value that cannot work
is refused before any work, by one rule.
"""

from __future__ import annotations

import abc
import math
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping

import torch

__all__ = ["Task", "OptionError", "batch_limit", "require_at_least", "require_positive", "require_choice",
           "present"]


class OptionError(ValueError):
    """An argument of a task builder that cannot work. ``name`` is the argument, which is also the config key
    under ``data.``; the message is one line that starts with ``name=value``."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def present(options: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """The entries of ``options`` called ``names`` (those that are there), for the ``require_*`` checks."""
    return {name: options[name] for name in names if name in options}


def require_at_least(minimum: int, **values: Any) -> None:
    """Raise :class:`OptionError` for the first of ``values`` that is not an integer ``>= minimum``."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise OptionError(name, f"{name}={value!r} must be an integer >= {minimum}")


def require_positive(**values: Any) -> None:
    """Raise :class:`OptionError` for the first of ``values`` that is not a finite number ``> 0``."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise OptionError(name, f"{name}={value!r} must be a finite number > 0")


def require_choice(name: str, value: Any, valid: Collection[str]) -> None:
    """Raise :class:`OptionError` unless ``value`` is one of ``valid``."""
    if value not in valid:
        raise OptionError(name, f"{name}={value!r} is unknown; valid: {', '.join(valid)}")


def batch_limit(total: int | None, limit: int | float | None) -> int | None:
    """How many of ``total`` batches a ``limit`` means (the rule of ``trainer.limit_*_batches``).

    A float in (0, 1] is a fraction of ``total`` (rounded down, at least 1 batch), an int a count (at most
    ``total``), None all of them; ``total`` None means "unknown length" (a fraction then gives None: all).
    The loop applies it to training batches and every task to its evaluation batches, so one rule holds.
    """
    if limit is None:
        return total
    if isinstance(limit, float):
        return None if total is None else max(1, int(total * limit))
    return limit if total is None else min(total, limit)


class Task(abc.ABC):
    """One kind of experiment (classification, latent time series, density estimation, ...).

    A task is built with its data already loaded and the device chosen; the loop then calls, per epoch,
    ``train_batches(epoch)``, ``training_loss`` for every batch, and ``evaluate`` once.
    """

    #: Name recorded in the run record (``metrics.json["task"]``).
    name: str = "task"

    #: Batch metrics of :meth:`training_loss` the progress bar shows next to the loss and NFE.
    progress_keys: tuple[str, ...] = ()

    @abc.abstractmethod
    def train_batches(self, epoch: int) -> Iterable[Any]:
        """The training batches of one epoch, already on the task's device.

        Must be deterministic given the global torch RNG state at the call (so resume is exact) and draw all its
        randomness at the call: the loop seeds that state from the run's seed and the epoch just before, and
        gives the steps back their own stream just after.
        The returned iterable should support ``len()`` (the loop uses it for progress and limits).
        """

    @abc.abstractmethod
    def training_loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss to minimise on ``batch`` and batch metrics to log (e.g. ``{"accuracy": 0.9}``)."""

    @abc.abstractmethod
    def evaluate(self, model: torch.nn.Module, limit_batches: float | int | None = None) -> dict[str, float]:
        """Held-out metrics with flat keys as they appear in ``metrics.json`` (e.g. ``test_error``).

        ``limit_batches``: a fraction (float <= 1) or a count (int) of evaluation batches; None for all
        (:func:`batch_limit` says how many). The loop calls this under ``torch.no_grad()`` with
        ``model.eval()`` and adds the call's wall time (``eval_time_s``); the task reports its own solver
        work (``test_nfe_forward``) where it has any.
        """

    def record_fields(self) -> dict[str, Any]:
        """Extra flat keys describing the task's setup for the run record (e.g. ``{"n_obs": 30}``)."""
        return {}

    def log_figures(self, model: torch.nn.Module, run_dir: Path, writer: Any, epoch: int) -> None:
        """Optionally save figures as PNG under ``run_dir`` and to the TensorBoard ``writer``."""
