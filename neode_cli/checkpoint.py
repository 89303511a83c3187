"""The training state a checkpoint holds, and the checks that decide whether a run may continue from it.

Contract:

- :class:`LoopPosition` is where the loop stands: ``epoch`` epochs finished, ``batch`` batches of the next
  epoch done (0 at an epoch boundary), the optimizer steps and training time so far, and for a mid-epoch
  position the epoch's partial sums (:class:`PartialEpoch`) and the RNG states at the moment the epoch's
  batches were drawn (so the same order and augmentation are drawn again on resume).
- :func:`capture` builds the checkpoint dict from the model, optimizer, scheduler, position and resolved
  config, with every RNG state at the call; :func:`restore` loads one into a freshly built model/optimizer/
  scheduler and returns the position. The caller restores the RNG states (:func:`set_rng_states`) at the
  point of the loop they belong to.
- :func:`load` reads ``checkpoint.pt`` and :func:`restore` checks it against the model: both raise
  :class:`CheckpointError` with one line (``checkpoint ... is unreadable`` / ``does not match model X``).
- :func:`config_differences` and :data:`RESUME_MAY_DIFFER` decide which config changes a resume accepts.

A launcher (submitit's ``checkpoint()``, a DDP rank 0) saves through the training loop's own checkpoint
callable; this module never touches files other than the one it is asked to read.

A DDP run's checkpoint (written by rank 0) adds ``world_size`` and ``rng_ranks``, every rank's RNG states in
rank order, so each rank of a resume on as many processes continues its own stream; ``rng`` is rank 0's.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import io
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["LoopPosition", "PartialEpoch", "CheckpointError", "capture", "restore", "load", "to_bytes",
           "rng_states", "set_rng_states", "config_differences", "result_changing", "RESUME_MAY_DIFFER",
           "FORMAT"]

#: Version of the checkpoint layout (1: end-of-epoch only, before mid-epoch positions existed).
FORMAT = 2

#: Config keys (dotted; ``*`` matches within a level) that may differ when a run is resumed because they do
#: not change what is trained or measured: how long to train, where, how fast, what is logged and how often
#: state is saved. Everything else (model, data, seed, optim, solver, grad, batch limits, ...) must match.
#: ``data.root`` is not here: a different folder may hold different data.
RESUME_MAY_DIFFER = (
    "trainer.max_epochs", "trainer.device", "trainer.threads", "trainer.progress", "trainer.resume",
    "trainer.checkpoint", "trainer.checkpoint_every_minutes", "trainer.checkpoint_every_n_batches",
    "trainer.figures_every_n_epochs", "logger.*", "data.download", "data.mirrors",
)


class CheckpointError(Exception):
    """A checkpoint that cannot be used; ``str()`` is one line naming the file and what is wrong."""


@dataclasses.dataclass
class PartialEpoch:
    """Sums over the batches of an unfinished epoch (means are taken when the epoch ends)."""

    sums: dict[str, float] = dataclasses.field(default_factory=dict)
    peak_bytes: int = 0
    elapsed_s: float = 0.0  # wall time of the epoch's batches so far
    rank_sums: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # DDP: per-rank NFE sums
    rank_peaks: list[int] = dataclasses.field(default_factory=list)  # DDP: per-rank peak bytes
    # Processes that ran every batch so far; 0 once batches ran on different numbers of them (a run resumed
    # on another world size mid-epoch): then the epoch has no per-rank figures, as they would mix.
    world_size: int = 1


@dataclasses.dataclass
class LoopPosition:
    """Where the training loop stands (see the module docstring)."""

    epoch: int = 0  # epochs finished
    batch: int = 0  # batches of epoch ``epoch + 1`` done; 0 at an epoch boundary
    global_step: int = 0  # optimizer steps taken
    train_time_s: float = 0.0  # training wall time of the finished epochs
    partial: PartialEpoch | None = None  # set when ``batch > 0``
    epoch_rng: dict | None = None  # RNG states just before ``task.train_batches(epoch)``; set when ``batch > 0``

    @property
    def mid_epoch(self) -> bool:
        """Whether the position is inside an epoch."""
        return self.batch > 0


def rng_states() -> dict[str, Any]:
    """Every random generator's state (python, numpy, torch CPU and CUDA), restored by :func:`set_rng_states`."""
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_states`."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def capture(model: torch.nn.Module, optimizer, scheduler, position: LoopPosition, config: Mapping) -> dict:
    """The checkpoint dict of the current training state (RNG states as of this call)."""
    partial = position.partial
    return {
        "format": FORMAT, "epoch": position.epoch, "batch": position.batch, "global_step": position.global_step,
        "train_time_s": position.train_time_s,
        "partial": dataclasses.asdict(partial) if partial is not None and position.batch > 0 else None,
        "epoch_rng": position.epoch_rng if position.batch > 0 else None,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": rng_states(), "config": dict(config),
    }


def to_bytes(state: Mapping) -> bytes:
    """``state`` serialised by ``torch.save`` (written by the caller, so a full disk is a plain OSError)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    return buffer.getvalue()


_REQUIRED = ("epoch", "global_step", "model", "optimizer", "scheduler", "rng")


def load(path: str | Path) -> dict:
    """Read the checkpoint at ``path`` (on the CPU); :class:`CheckpointError` when it cannot be read."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle garbage, ... all mean "unreadable"
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable ({reason})") from None
    if not isinstance(state, dict) or any(key not in state for key in _REQUIRED):
        raise CheckpointError(f"checkpoint {path} is unreadable (not a neode training checkpoint)")
    return state


def _model_mismatch(saved: Mapping[str, torch.Tensor], model: torch.nn.Module) -> str | None:
    """A short description of how ``saved`` differs from ``model.state_dict()``, or None when they fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [k for k in expected if k in saved and tuple(getattr(saved[k], "shape", ())) != tuple(expected[k].shape)]
    parts = [f"{len(v)} {what} (e.g. {v[0]})" for what, v in
             (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if v]
    return "; ".join(parts) or None


def restore(state: Mapping, path: str | Path, model: torch.nn.Module, optimizer, scheduler,
            model_name: str) -> LoopPosition:
    """Load ``state`` (from :func:`load`) into ``model``, ``optimizer`` and ``scheduler``; return the position.

    Raises :class:`CheckpointError` (``checkpoint <path> does not match model <model_name>: ...``) when the
    saved weights or optimizer state do not fit; the objects may then be partly loaded (rebuild them).
    """
    mismatch = _model_mismatch(state["model"], model)
    if mismatch:
        raise CheckpointError(f"checkpoint {path} does not match model {model_name}: {mismatch}")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, ValueError, KeyError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"checkpoint {path} does not match model {model_name}: {reason}") from None
    batch = int(state.get("batch") or 0)
    partial = state.get("partial") if batch else None
    return LoopPosition(epoch=int(state["epoch"]), batch=batch, global_step=int(state["global_step"]),
                        train_time_s=float(state.get("train_time_s", 0.0)),
                        partial=PartialEpoch(**{"world_size": state.get("world_size", 1), **partial})
                        if partial else None,
                        epoch_rng=state.get("epoch_rng") if batch else None)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def config_differences(saved: Mapping, new: Mapping) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, new value)}`` for every leaf of two resolved configs that differs
    (a key present on one side only shows ``None`` on the other)."""
    a, b = _flatten(saved), _flatten(new)
    return {key: (a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)}


def result_changing(differences: Mapping[str, Any]) -> list[str]:
    """The keys of ``differences`` that are not in :data:`RESUME_MAY_DIFFER` (a resume must refuse them)."""
    return [key for key in differences if not any(fnmatch.fnmatchcase(key, p) for p in RESUME_MAY_DIFFER)]
