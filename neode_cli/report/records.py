"""Finding and reading run records: every ``metrics.json`` (and ``metrics.jsonl``) below some folders.

``neode compare`` reads nothing else (never TensorBoard files or checkpoints), so a report can be built from
hand-written records. Reading never raises on a bad record: a corrupt or partial ``metrics.json``, or one whose
measured values are impossible (not numbers, NaN/inf, negative times or memory: :func:`bad_values`), is skipped
and reported, an unreadable line of ``metrics.jsonl`` is reported, a folder with epochs but no summary is an
incomplete run. Only a missing input folder is the user's error (:class:`InputError`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..runs import METRICS_JSON, METRICS_JSONL, read_jsonl

__all__ = ["Run", "Problem", "Collection", "InputError", "collect", "natural_key", "bad_values", "COMPLETED",
           "REQUIRED_KEYS"]

#: ``status`` of a run that finished (see ``neode_cli/runs.py``); anything else is failed or incomplete.
COMPLETED = "completed"
FAILED = "failed"
#: Keys without which a ``metrics.json`` is a partial record (skipped): runs cannot be grouped without them.
REQUIRED_KEYS = ("status", "model")
#: Status given to a folder that has ``metrics.jsonl`` but no ``metrics.json`` (killed before the first summary).
NO_SUMMARY = "incomplete"


class InputError(ValueError):
    """An input folder that does not exist; the message is one line saying which and what to do."""


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value (``seed2`` before ``seed10``)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text) if part)


@dataclasses.dataclass(frozen=True)
class Run:
    """One run as read back from its record: ``summary`` is ``metrics.json``, ``epochs`` the rows of ``metrics.jsonl``.

    ``run_id`` is the run folder relative to the common root of the searched folders (POSIX separators), so it is
    the same wherever the folders live.
    """

    run_id: str
    path: Path
    summary: Mapping[str, Any]
    epochs: tuple[Mapping[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        """The summary value for ``key`` (``default`` when absent)."""
        return self.summary.get(key, default)

    def number(self, key: str) -> float | None:
        """The summary value for ``key`` as a finite float, or None (absent, not a number, NaN/inf)."""
        return as_number(self.summary.get(key))

    def config(self, dotted: str, default: Any = None) -> Any:
        """A value of the recorded resolved config by dotted path (``"data.batch_size"``), or ``default``."""
        node: Any = self.summary.get("config")
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def status(self) -> str:
        """``completed``, ``failed``, ``interrupted``, ``running`` (as recorded) or ``incomplete`` (no summary)."""
        return str(self.summary.get("status", NO_SUMMARY))

    @property
    def completed(self) -> bool:
        """Whether the run finished (only completed runs enter tables and figures)."""
        return self.status == COMPLETED

    @property
    def experiment(self) -> str | None:
        """The ``experiment=`` the run was made with (None when made without one)."""
        value = self.summary.get("experiment")
        return str(value) if value not in (None, "") else None

    @property
    def budget(self) -> str | None:
        """The ``budget=`` the run was made with (None when made without one)."""
        value = self.summary.get("budget")
        return str(value) if value not in (None, "") else None

    @property
    def model(self) -> str:
        """The model's config name (``odenet``, ``rknet``, ...)."""
        return str(self.summary.get("model", "?"))


def as_number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is missing, boolean, text or not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something wrong with one record: where (``run_id``, a file) and what, in one line."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclasses.dataclass
class Collection:
    """Everything found below the searched folders.

    ``runs``: readable records of any status, sorted by ``run_id``; ``skipped``: corrupt or partial records that
    were left out; ``warnings``: problems in records that were kept (e.g. an unreadable line of ``metrics.jsonl``).
    """

    roots: list[Path]
    runs: list[Run]
    skipped: list[Problem]
    warnings: list[Problem]

    @property
    def completed(self) -> list[Run]:
        """The runs whose status is ``completed``."""
        return [r for r in self.runs if r.completed]

    @property
    def unfinished(self) -> list[Run]:
        """Failed, interrupted, still running or never summarised runs."""
        return [r for r in self.runs if not r.completed]

    def filtered(self, keep) -> "Collection":
        """A copy holding only the runs for which ``keep(run)`` is true (problems are kept as they are)."""
        return Collection(self.roots, [r for r in self.runs if keep(r)], list(self.skipped), list(self.warnings))


def _run_folders(root: Path) -> list[Path]:
    """Folders at or below ``root`` holding ``metrics.json`` or ``metrics.jsonl`` (symlinked folders not followed)."""
    found = []
    for folder, subfolders, files in os.walk(root):
        subfolders.sort()
        if METRICS_JSON in files or METRICS_JSONL in files:
            found.append(Path(folder))
    return found


def _read_epochs(path: Path, where: str, warnings: list[Problem]) -> tuple[Mapping[str, Any], ...]:
    """The rows of ``metrics.jsonl`` that are JSON objects; reports lines that are not."""
    try:
        rows = read_jsonl(path)
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.exists() else []
    except (OSError, UnicodeDecodeError) as error:
        warnings.append(Problem(where, f"{METRICS_JSONL} unreadable ({error.__class__.__name__}); per-epoch data left out"))
        return ()
    objects = tuple(row for row in rows if isinstance(row, dict))
    if len(objects) < len(lines):
        warnings.append(Problem(where, f"{len(lines) - len(objects)} of {len(lines)} lines of {METRICS_JSONL} unreadable "
                                       f"(torn or corrupt); kept the {len(objects)} epochs before them"))
    return objects


def _read_run(folder: Path, run_id: str, skipped: list[Problem], warnings: list[Problem]) -> Run | None:
    """The run in ``folder``, or None (with a reason in ``skipped``) when its summary is corrupt or partial."""
    summary_path = folder / METRICS_JSON
    epochs = _read_epochs(folder / METRICS_JSONL, run_id, warnings)
    if not summary_path.exists():
        # Killed before its first summary: an incomplete run, described by what its epochs say.
        return Run(run_id, folder, {"status": NO_SUMMARY, "error": f"no {METRICS_JSON} ({len(epochs)} epochs recorded)"}, epochs)
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        skipped.append(Problem(run_id, f"corrupt {METRICS_JSON} ({error.__class__.__name__}: {error}); skipped"))
        return None
    if not isinstance(summary, dict):
        skipped.append(Problem(run_id, f"{METRICS_JSON} is not a JSON object; skipped"))
        return None
    missing = [k for k in REQUIRED_KEYS if k not in summary]
    if missing:
        skipped.append(Problem(run_id, f"partial {METRICS_JSON}: no {', '.join(missing)}; skipped"))
        return None
    bad = bad_values(summary)
    if bad:
        skipped.append(Problem(run_id, f"{METRICS_JSON} has impossible values ({'; '.join(bad[:3])}"
                                       f"{'; ...' if len(bad) > 3 else ''}); skipped"))
        return None
    return Run(run_id, folder, summary, epochs)


#: Measured keys that cannot be negative (times, memory, counts of work) ...
_NON_NEGATIVE = re.compile(r"(_time_s|_mb|^params|^epochs|nfe_forward|nfe_backward|_rmse|_rmse_interp|^ode_error|_se"
                           r"|^final_lr)$")
#: ... and percentages (classification error and accuracy) that lie in [0, 100].
_PERCENT = re.compile(r"^(test|train)_(error|accuracy)$")
#: Keys whose values are numbers when present (``None``: not measured, is fine).
#: (Measured values only: how a run was configured, e.g. ``rtol`` or ``seed``, is judged by the sections.)
_NUMERIC = re.compile(r"^(train_|test_)|_time_s$|_mb$|^(params|epochs|nfe_forward|nfe_backward|"
                      r"ode_error|kl_loss|kl_loss_se|final_lr)$")


def bad_values(summary: Mapping[str, Any]) -> list[str]:
    """What is impossible about a summary's measured values: ``key=value (why)`` for each value that is not a
    number, NaN or infinite, negative where it cannot be (times, memory, NFE, counts), or a percentage outside
    [0, 100]; empty when every value is plausible. Missing values (``null``) are allowed."""
    problems = []
    for key, value in summary.items():
        if not isinstance(key, str) or not _NUMERIC.search(key) or value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{key}={value!r} is not a number")
        elif not math.isfinite(value):
            problems.append(f"{key}={value} is not finite")
        elif value < 0 and _NON_NEGATIVE.search(key):
            problems.append(f"{key}={value} is negative")
        elif _PERCENT.search(key) and not 0 <= value <= 100:
            problems.append(f"{key}={value} is outside [0, 100]")
    return problems


def _common_root(roots: Sequence[Path]) -> Path:
    resolved = [r.resolve() for r in roots]
    if len(resolved) == 1:
        return resolved[0].parent if _is_run_folder(resolved[0]) else resolved[0]
    return Path(os.path.commonpath([str(r) for r in resolved]))


def _is_run_folder(path: Path) -> bool:
    return (path / METRICS_JSON).exists() or (path / METRICS_JSONL).exists()


def collect(paths: Sequence[str | os.PathLike]) -> Collection:
    """Read every run record at or below ``paths`` (folders, or ``metrics.json`` files).

    Raises :class:`InputError` for a path that does not exist; never raises for a bad record. A run reachable
    from two paths is read once. Runs are sorted by ``run_id`` (naturally: ``seed2`` before ``seed10``).
    """
    roots: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name in (METRICS_JSON, METRICS_JSONL):
            path = path.parent
        if not path.is_dir():
            raise InputError(f"no folder {str(raw)!r}: pass folders that hold runs (runs=[outputs/table1]) or an "
                             f"experiment whose sweep already ran (experiment=table1)")
        roots.append(path)
    base = _common_root(roots) if roots else Path(".")
    skipped: list[Problem] = []
    warnings: list[Problem] = []
    seen: dict[Path, str] = {}
    for root in roots:
        for folder in _run_folders(root):
            key = folder.resolve()
            if key not in seen:
                seen[key] = Path(os.path.relpath(key, base)).as_posix()
    runs = []
    for folder, run_id in sorted(seen.items(), key=lambda item: natural_key(item[1])):
        run = _read_run(folder, run_id, skipped, warnings)
        if run is not None:
            runs.append(run)
    return Collection(roots, runs, skipped, warnings)
