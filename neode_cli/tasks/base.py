"""The contract between the training loop and one kind of experiment.

The loop (``neode_cli/train.py``) owns control flow: epochs, optimizer steps, measurement, checkpoints and
the run record. A task owns one decision: what a batch's loss is and what an evaluation measures. The loop
never branches on model or task names.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, Iterable

import torch


class Task(abc.ABC):
    """One kind of experiment (classification, latent time series, density estimation, ...).

    A task is built with its data already loaded and the device chosen; the loop then calls, per epoch,
    ``train_batches(epoch)``, ``training_loss`` for every batch, and ``evaluate`` once.
    """

    #: Name recorded in the run record (``metrics.json["task"]``).
    name: str = "task"

    @abc.abstractmethod
    def train_batches(self, epoch: int) -> Iterable[Any]:
        """The training batches of one epoch, already on the task's device.

        Must be deterministic given the global torch RNG state at the call (so resume is exact).
        The returned iterable should support ``len()`` (the loop uses it for progress and limits).
        """

    @abc.abstractmethod
    def training_loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """The scalar loss to minimise on ``batch`` and batch metrics to log (e.g. ``{"accuracy": 0.9}``)."""

    @abc.abstractmethod
    def evaluate(self, model: torch.nn.Module, limit_batches: float | int | None = None) -> dict[str, float]:
        """Held-out metrics with flat keys as they appear in ``metrics.json`` (e.g. ``test_error``).

        ``limit_batches``: a fraction (float <= 1) or a count (int) of evaluation batches; None for all.
        The loop calls this under ``torch.no_grad()`` with ``model.eval()``.
        """

    def record_fields(self) -> dict[str, Any]:
        """Extra flat keys describing the task's setup for the run record (e.g. ``{"n_obs": 30}``)."""
        return {}

    def log_figures(self, model: torch.nn.Module, run_dir: Path, writer: Any, epoch: int) -> None:
        """Optionally save figures as PNG under ``run_dir`` and to the TensorBoard ``writer``."""
