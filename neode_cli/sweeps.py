"""Sweeps that scale out: folder names that say what was swept, CPU threads per parallel job, failed-job records.

Contract:

- :func:`path_component` turns text (a sweep's overrides) into one valid, readable folder name; text that is too
  long or holds characters a path cannot carry keeps a readable prefix plus a hash of the whole text.
- :func:`sweep_name` names an ad-hoc sweep's folder from its command-line overrides minus ``trainer.resume``,
  so rerunning the same ``-m`` command with ``trainer.resume=true`` finds the same folder; :func:`job_name`
  names a job's folder from the overrides it varies (``seed=1,solver=bosh3``).
- :func:`register_resolvers` (run at import) gives the configs the resolvers that compute those names
  (``conf/hydra/neode.yaml``).
- :func:`threads_per_job` is the torch thread count a job gets when ``trainer.threads`` is null, from the
  launcher's config: ``cores // n_jobs`` for joblib, ``cpus_per_task`` for submitit, None (torch's default) else.
- :data:`FAILED_JOBS` / :func:`note_failed` / :class:`FailedJob`: the jobs of a sweep that failed, gathered in
  the process that launched the sweep (a parallel launcher hands the job's :class:`FailedJob` back to it).
- :func:`request_stop` / :func:`stop_requested` / :func:`clear_stop`: the stop file a sweep's process writes
  into its sweep folder when it is asked to stop while jobs run in its worker processes (joblib), so that a
  worker starts no further job. It names the sweep process, so a file left by a process that died stops nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["RESUME_KEY", "path_component", "sweep_name", "job_name", "register_resolvers",
           "silence_launcher_schema_warning", "threads_per_job",
           "available_cores", "with_resume", "FailedJob", "FAILED_JOBS", "note_failed", "STOP_FILE", "request_stop",
           "stop_requested", "clear_stop"]

#: The override that continues runs; it never changes which folder a run or a sweep uses.
RESUME_KEY = "trainer.resume"

#: Longest folder name written as it is (file systems allow 255 bytes; shorter names stay readable in listings).
MAX_NAME = 100
_SAFE = re.compile(r"[A-Za-z0-9._=,+@-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+@-]+")


def path_component(text: str, limit: int = MAX_NAME) -> str:
    """``text`` as one folder name: unchanged when it is at most ``limit`` characters of ``[A-Za-z0-9._=,+@-]``
    (and not ``.``/``..``); otherwise its characters outside that set become ``_``, it is cut to leave room, and
    ``-`` plus 10 hex digits of its SHA-1 are appended, so different texts keep different names. Empty text
    gives ``defaults`` (a sweep with no overrides)."""
    if not text:
        return "defaults"
    if len(text) <= limit and _SAFE.fullmatch(text) and text not in (".", ".."):
        return text
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
    readable = _UNSAFE.sub("_", text)[: max(1, limit - len(digest) - 1)].strip("._")
    return f"{readable}-{digest}" if readable else digest


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _parsed(overrides: Sequence[str]) -> list[tuple[str, Any]]:
    """``(override, Hydra's parsed Override or None)`` for each override (None where Hydra cannot parse it)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for text in overrides:
        try:
            out.append((text, parser.parse_override(text)))
        except Exception:  # noqa: BLE001 - an override Hydra refuses fails later with Hydra's own message
            out.append((text, None))
    return out


def sweep_name(overrides: Iterable[str]) -> str:
    """The folder name of an ad-hoc sweep from its command-line task overrides (as typed): without
    ``trainer.resume``; the swept ones (``solver=dopri5,bosh3``) first, then the others, each part sorted, joined
    with ``,`` and made a :func:`path_component` (so a long name keeps what is swept readable)."""
    kept = [(t, o) for t, o in _parsed([o for o in overrides if _key(o) != RESUME_KEY])]
    swept = sorted(t for t, o in kept if o is None or o.is_sweep_override())
    fixed = sorted(t for t, o in kept if o is not None and not o.is_sweep_override())
    return path_component(",".join(swept + fixed))


def job_name(job_overrides: Sequence[str], sweep_overrides: Sequence[str]) -> str:
    """The folder name of one job of a sweep: its overrides (``key=value``, sorted) without ``trainer.resume`` and
    without those the command line gave one value for (the sweep folder's name holds them), as a
    :func:`path_component`; all of them when nothing is left (a sweep that varies nothing)."""
    fixed = {}
    for _, override in _parsed([o for o in sweep_overrides if _key(o) != RESUME_KEY]):
        if override is not None and not override.is_sweep_override():
            fixed[override.key_or_group] = override.value()
    own = [(t, o) for t, o in _parsed([o for o in job_overrides if _key(o) != RESUME_KEY])]
    varied = [t for t, o in own
              if o is None or o.key_or_group not in fixed or fixed[o.key_or_group] != o.value()]
    return path_component(",".join(sorted(varied or [t for t, _ in own], key=_key)))


def _command_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)


def _job_overrides_name(sweep_overrides) -> str:
    return job_name(list(_command_overrides()), list(sweep_overrides))


def register_resolvers() -> None:
    """Register the resolvers ``conf/hydra/neode.yaml`` names (idempotent):

    - ``${neode_sweep_overrides:}``: the task overrides of the command that started the sweep. Cached on
      purpose: the process that launches the sweep resolves it (``neode_cli.hydra_callbacks``), and Hydra copies
      a config's resolver cache into every job's config (as it does for ``${now:}``), so a job in a worker
      process or on a cluster node, which knows only its own overrides, still sees the command's.
    - ``${neode_sweep_name:LIST}``: :func:`sweep_name` of those overrides.
    - ``${neode_job_name:LIST}``: :func:`job_name` of the current job's overrides against them.
    - ``${neode_path:TEXT}``: :func:`path_component`."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("neode_sweep_overrides"):
        OmegaConf.register_new_resolver("neode_sweep_overrides", _command_overrides, use_cache=True)
    if not OmegaConf.has_resolver("neode_sweep_name"):
        OmegaConf.register_new_resolver("neode_sweep_name", lambda overrides: sweep_name(list(overrides)))
    if not OmegaConf.has_resolver("neode_job_name"):
        OmegaConf.register_new_resolver("neode_job_name", _job_overrides_name)
    if not OmegaConf.has_resolver("neode_path"):
        OmegaConf.register_new_resolver("neode_path", lambda text="": path_component(str(text)))


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, e.g. inside a SLURM job)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def threads_per_job(launcher: Mapping[str, Any] | None, cores: int) -> int | None:
    """Torch threads for one job of a sweep run by ``launcher`` (Hydra's ``hydra.launcher`` config) on a machine
    with ``cores`` cores, when ``trainer.threads`` is null.

    joblib (``n_jobs``: N jobs at once; -1 all cores, -2 all but one, as joblib counts): ``max(1, cores // N)``, so
    N jobs do not oversubscribe the cores. submitit (``cpus_per_task`` set): that many, the job's allocation.
    Anything else (the basic launcher: one job at a time): None, torch's default."""
    if not launcher:
        return None
    n_jobs = launcher.get("n_jobs")
    if n_jobs is not None:
        n_jobs = int(n_jobs)
        parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
        return max(1, cores // parallel)
    cpus = launcher.get("cpus_per_task")
    return int(cpus) if cpus else None


def with_resume(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with any ``trainer.resume=...`` replaced by ``trainer.resume=true`` (at the end)."""
    return [o for o in overrides if _key(o) != RESUME_KEY] + [f"{RESUME_KEY}=true"]


@dataclass(frozen=True)
class FailedJob:
    """What a sweep's job returns when its run failed (the sweep goes on): its folder and the one-line reason;
    ``exit_code`` is 128 + the signal for a job that a signal stopped after it saved (in a launcher's worker or
    job process, which then ends normally: the sweep's process decides what the stop means)."""

    run_dir: str
    error: str
    exit_code: int = 1

    @property
    def stopped(self) -> bool:
        """Whether a signal stopped the job."""
        return self.exit_code >= 128


#: Folders of the runs that failed in this process's sweep (the command exits 1 at the end, naming them).
FAILED_JOBS: list[str] = []


def note_failed(job: FailedJob | Any) -> None:
    """Add ``job``'s folder to :data:`FAILED_JOBS` once (a launcher may hand back what the job noted already);
    anything that is not a :class:`FailedJob` is ignored, so a launcher can pass every job's return value."""
    if isinstance(job, FailedJob) and job.run_dir not in FAILED_JOBS:
        FAILED_JOBS.append(job.run_dir)


#: The stop file of a sweep folder (see the module docstring).
STOP_FILE = ".neode-stop"


def request_stop(sweep_dir: str | os.PathLike, signame: str) -> None:
    """Write the stop file into ``sweep_dir``: this process (the sweep's) was stopped by ``signame``."""
    from pathlib import Path

    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    (Path(sweep_dir) / STOP_FILE).write_text(f"{os.getpid()} {signame}\n")


def stop_requested(sweep_dir: str | os.PathLike, sweep_pid: int) -> str | None:
    """The signal's name when the sweep process ``sweep_pid`` wrote the stop file of ``sweep_dir``, else None
    (no file, or one that another process left)."""
    from pathlib import Path

    try:
        pid, signame = (Path(sweep_dir) / STOP_FILE).read_text().split()
    except (OSError, ValueError):
        return None
    return signame if int(pid) == sweep_pid else None


def clear_stop(sweep_dir: str | os.PathLike) -> None:
    """Remove the stop file of ``sweep_dir``, if any."""
    from pathlib import Path

    try:
        (Path(sweep_dir) / STOP_FILE).unlink()
    except FileNotFoundError:
        pass


def silence_launcher_schema_warning() -> None:
    """Silence Hydra's one deprecation warning that conf/hydra/launcher/{joblib,submitit_local,submitit_slurm}.yaml
    cause on purpose: they keep the plugins' option names and point them at neode's launchers
    (``hydra_plugins/neode_launchers``), so Hydra 1.1-1.3 validates each against the plugin's schema of the same
    name (its keys and types, as wanted) and warns that this matching is deprecated. Done at import of this
    module, which every process that composes a job's config imports (the CLI, joblib workers, submitit jobs);
    not inside the plugin, as Hydra's plugin scan resets warning filters after each module."""
    warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/(joblib|submitit_local|submitit_slurm)' is "
                            "validated against ConfigStore schema with the same name", category=UserWarning)


register_resolvers()
silence_launcher_schema_warning()
