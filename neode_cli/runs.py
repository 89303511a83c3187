"""The run record: what a run folder holds and how it is written.

A run folder (Hydra's output dir) holds
- ``metrics.jsonl``: one JSON object per finished epoch (appended);
- ``metrics.json``: the flat summary ``neode compare`` reads (rewritten atomically; ``status`` is
  ``running`` while training, then ``completed``, ``failed`` or ``interrupted``);
- ``checkpoint.pt``: the training state (:mod:`neode_cli.checkpoint`), after the last finished epoch or
  mid-epoch (periodic or on a stop signal);
- ``run.lock``: the folder's lock (:mod:`neode_cli.run_lock`);
- ``.hydra/``: the composed config, Hydra's config and the overrides (written by the run, see
  :meth:`RunRecord.write_hydra_files`, only once the run may use the folder).

Every file is replaced atomically (temporary file, fsync, rename), so a crash or a full disk never leaves a
half-written file; a temporary file left by a killed writer is removed by :meth:`RunRecord.remove_stray_temporaries`.
Files get the usual permissions (``0666`` less the umask), not ``mkstemp``'s ``0600``.
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

from .checkpoint import load, to_bytes

__all__ = ["RunRecord", "ReadOnlyRunRecord", "write_json_atomic", "write_bytes_atomic", "read_jsonl", "to_jsonable", "file_mode"]

METRICS_JSONL = "metrics.jsonl"
METRICS_JSON = "metrics.json"
CHECKPOINT = "checkpoint.pt"
HYDRA_DIR = ".hydra"
ERROR_LOG = "error.log"
_TEMP_SUFFIX = ".tmp"


def _before_write(path: Path) -> None:
    """Called before every file this module writes; tests replace it to inject faults (ENOSPC, EACCES)."""


def file_mode() -> int:
    """Mode of a new file: ``0o666`` less the process's umask (what ``open()`` would give)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


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
    tmp = None
    try:
        _before_write(path)
    except OSError as exc:
        raise _at(exc, path) if exc.filename is None else exc
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes 0600: give the file the permissions open() would
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            raise _at(exc, path) from exc  # name the file the user knows, not the temporary one
        raise


def _at(exc: OSError, path: Path) -> OSError:
    """``exc`` as an OSError of the same kind naming ``path``."""
    return type(exc)(exc.errno, exc.strerror or str(exc), str(path))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` (made JSON-safe) to ``path`` atomically, indented, keys in insertion order."""
    data = json.dumps(to_jsonable(obj), indent=2).encode() + b"\n"
    _replace_atomically(Path(path), lambda f: f.write(data))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically."""
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

    #: Whether this record writes the folder (False for :class:`ReadOnlyRunRecord`).
    writes = True

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.epochs_path = self.run_dir / METRICS_JSONL
        self.summary_path = self.run_dir / METRICS_JSON
        self.checkpoint_path = self.run_dir / CHECKPOINT

    def append_epoch(self, row: dict) -> None:
        """Append one epoch's metrics as a line of ``metrics.jsonl``; if the write fails (a full disk) the file
        is cut back to what it held, so no torn line is left behind, and the OSError propagates."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(to_jsonable(row)) + "\n").encode()
        with open(self.epochs_path, "ab") as f:
            size = f.tell()
            try:
                _before_write(self.epochs_path)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            except OSError as exc:
                with contextlib.suppress(OSError):
                    f.truncate(size)
                raise (_at(exc, self.epochs_path) if exc.filename is None else exc) from exc

    def epochs(self) -> list[dict]:
        """The rows of ``metrics.jsonl`` in order."""
        return read_jsonl(self.epochs_path)

    def keep_epochs(self, rows: Iterable[dict]) -> None:
        """Rewrite ``metrics.jsonl`` (atomically) to hold exactly ``rows`` (used on resume)."""
        data = "".join(json.dumps(to_jsonable(r)) + "\n" for r in rows).encode()
        _replace_atomically(self.epochs_path, lambda f: f.write(data))

    def repair_epochs(self) -> int:
        """Drop a torn (unparsable) tail of ``metrics.jsonl``, left by a crash mid-write; return how many lines
        were dropped (0: the file was whole and is left untouched)."""
        if not self.epochs_path.exists():
            return 0
        lines = [line for line in self.epochs_path.read_bytes().decode(errors="replace").splitlines() if line.strip()]
        rows = read_jsonl(self.epochs_path)
        if len(rows) == len(lines):
            return 0
        self.keep_epochs(rows)
        return len(lines) - len(rows)

    def remove_stray_temporaries(self) -> list[Path]:
        """Remove temporary files left by a writer that was killed mid-write (call only while holding the
        folder's lock); return the removed paths."""
        removed = []
        for folder in (self.run_dir, self.run_dir / HYDRA_DIR):
            for path in folder.glob(f".*{_TEMP_SUFFIX}") if folder.is_dir() else ():
                if any(path.name.startswith(f".{name}.") for name in (METRICS_JSON, METRICS_JSONL, CHECKPOINT,
                                                                     "config.yaml", "hydra.yaml", "overrides.yaml")):
                    with contextlib.suppress(OSError):
                        path.unlink()
                        removed.append(path)
        return removed

    def write_hydra_files(self, files: dict[str, str]) -> None:
        """Write ``.hydra/<name>`` for each ``name: text`` (Hydra's ``config.yaml``, ``hydra.yaml``,
        ``overrides.yaml``), each atomically."""
        for name, text in files.items():
            write_bytes_atomic(self.run_dir / HYDRA_DIR / name, text.encode())

    def write_summary(self, summary: dict) -> None:
        """Write ``metrics.json`` atomically."""
        write_json_atomic(self.summary_path, summary)

    def read_summary(self) -> dict | None:
        """``metrics.json`` as a dict, or None when absent."""
        if not self.summary_path.exists():
            return None
        return json.loads(self.summary_path.read_text())

    def save_checkpoint(self, state: dict) -> None:
        """Write ``checkpoint.pt`` atomically (temporary file + fsync + rename): a kill or a full disk during
        the write leaves the previous checkpoint as it was."""
        data = to_bytes(state)  # serialised first: a full disk is then a plain OSError of the write
        _replace_atomically(self.checkpoint_path, lambda f: f.write(data))

    def write_error_log(self, text: str) -> None:
        """Write ``error.log`` (the traceback of a failed run); plain, so it is written even where the atomic
        writes of the record fail."""
        (self.run_dir / ERROR_LOG).write_text(text)

    def read_only(self) -> "ReadOnlyRunRecord":
        """The same folder as ranks > 0 of a DDP run see it: readable, never written."""
        return ReadOnlyRunRecord(self.run_dir)

    def has_checkpoint(self) -> bool:
        """Whether ``checkpoint.pt`` exists."""
        return self.checkpoint_path.exists()

    def load_checkpoint(self) -> dict:
        """The state saved by :meth:`save_checkpoint`, on the CPU (it holds RNG states, so it is not
        weights-only); :class:`neode_cli.checkpoint.CheckpointError` when it cannot be read."""
        return load(self.checkpoint_path)


class ReadOnlyRunRecord(RunRecord):
    """A run folder read by a process that must not write it (ranks > 0 of a DDP run: rank 0 writes the
    record): every reading method works, every writing method does nothing, so the loop runs the same code on
    every rank and only rank 0's record reaches the disk. Other writers (TensorBoard, figures) check
    :attr:`writes`."""

    writes = False

    def append_epoch(self, row: dict) -> None:
        """Nothing: rank 0 appends the row."""

    def keep_epochs(self, rows: Iterable[dict]) -> None:
        """Nothing: rank 0 rewrites the file."""

    def repair_epochs(self) -> int:
        """Nothing is repaired here (rank 0 does it); returns 0."""
        return 0

    def remove_stray_temporaries(self) -> list[Path]:
        """Nothing is removed here (rank 0 holds the lock); returns []."""
        return []

    def write_hydra_files(self, files: dict[str, str]) -> None:
        """Nothing: rank 0 writes ``.hydra/``."""

    def write_summary(self, summary: dict) -> None:
        """Nothing: rank 0 writes ``metrics.json``."""

    def save_checkpoint(self, state: dict) -> None:
        """Nothing: rank 0 writes ``checkpoint.pt``."""

    def write_error_log(self, text: str) -> None:
        """Nothing: a rank > 0 reports its failure on stderr."""
