"""The run record: what a run folder holds and how it is written.

A run folder (Hydra's output dir) holds
- ``metrics.jsonl``: one JSON object per finished epoch (appended);
- ``metrics.json``: the flat summary ``neode compare`` reads (rewritten atomically; ``status`` is
  ``running`` while training, then ``completed``, ``failed`` or ``interrupted``);
- ``checkpoint.pt``: model, optimizer, scheduler, RNG states and counters after the last finished epoch
  (written to a temporary file, then renamed, so a crash never leaves a half-written checkpoint).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

__all__ = ["RunRecord", "write_json_atomic", "read_jsonl", "to_jsonable"]

METRICS_JSONL = "metrics.jsonl"
METRICS_JSON = "metrics.json"
CHECKPOINT = "checkpoint.pt"


def to_jsonable(value: Any) -> Any:
    """``value`` made JSON-safe: tensors and numpy scalars to numbers, non-finite floats to None, paths to str."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return to_jsonable(value.item() if value.numel() == 1 else value.tolist())
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            return to_jsonable(value.item())  # numpy scalar
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _replace_atomically(path: Path, write) -> None:
    """Write through ``write(file)`` into a temporary file next to ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` (made JSON-safe) to ``path`` atomically, indented, keys in insertion order."""
    data = json.dumps(to_jsonable(obj), indent=2).encode() + b"\n"
    _replace_atomically(Path(path), lambda f: f.write(data))


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSON-lines file (empty list when it does not exist); a torn last line is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a crash: nothing after it is trustworthy
    return rows


class RunRecord:
    """The files of one run folder (see the module docstring)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.epochs_path = self.run_dir / METRICS_JSONL
        self.summary_path = self.run_dir / METRICS_JSON
        self.checkpoint_path = self.run_dir / CHECKPOINT

    def append_epoch(self, row: dict) -> None:
        """Append one epoch's metrics as a line of ``metrics.jsonl``."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.epochs_path, "a") as f:
            f.write(json.dumps(to_jsonable(row)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def epochs(self) -> list[dict]:
        """The rows of ``metrics.jsonl`` in order."""
        return read_jsonl(self.epochs_path)

    def keep_epochs(self, rows: Iterable[dict]) -> None:
        """Rewrite ``metrics.jsonl`` (atomically) to hold exactly ``rows`` (used on resume)."""
        data = "".join(json.dumps(to_jsonable(r)) + "\n" for r in rows).encode()
        _replace_atomically(self.epochs_path, lambda f: f.write(data))

    def write_summary(self, summary: dict) -> None:
        """Write ``metrics.json`` atomically."""
        write_json_atomic(self.summary_path, summary)

    def read_summary(self) -> dict | None:
        """``metrics.json`` as a dict, or None when absent."""
        if not self.summary_path.exists():
            return None
        return json.loads(self.summary_path.read_text())

    def save_checkpoint(self, state: dict) -> None:
        """Write ``checkpoint.pt`` atomically (temporary file + rename)."""
        _replace_atomically(self.checkpoint_path, lambda f: torch.save(state, f))

    def has_checkpoint(self) -> bool:
        """Whether ``checkpoint.pt`` exists."""
        return self.checkpoint_path.exists()

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict:
        """The state saved by :meth:`save_checkpoint` (it holds RNG states, so it is not weights-only)."""
        return torch.load(self.checkpoint_path, map_location=map_location, weights_only=False)
