"""``hydra/launcher=joblib``: the sweep's jobs in ``hydra.launcher.n_jobs`` local processes (Hydra's joblib plugin).

Each job gets ``cores // n_jobs`` torch threads unless ``trainer.threads`` is set (``neode_cli.sweeps``).
"""

from __future__ import annotations

import re
from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

from ._sweep import launch_jobs

__all__ = ["NeodeJoblibLauncher", "worker_died"]


def worker_died(exc: BaseException) -> str | None:
    """What happened, when ``exc`` is joblib's report of a worker process that died mid-job (loky's
    ``TerminatedWorkerError``: killed, e.g. by the out-of-memory killer, or crashed); else None. loky then
    stops the other workers too, so every job that was running is left at its last checkpoint."""
    from joblib.externals.loky.process_executor import TerminatedWorkerError

    if not isinstance(exc, TerminatedWorkerError):
        return None
    codes = re.search(r"exit codes of the workers are (\{[^}]*\})", str(exc))
    return (f"a joblib worker process died mid-job{f' (exit codes {codes.group(1)})' if codes else ''}: killed, "
            "e.g. for lack of memory, or crashed; joblib stopped the other workers with it")


class NeodeJoblibLauncher(JoblibLauncher):
    """Hydra's joblib launcher; the jobs that failed are reported by the sweep's process, a Ctrl-C in one line."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run the jobs as the joblib launcher does (see :func:`~._sweep.launch_jobs` for what is added)."""
        return launch_jobs(lambda: super(NeodeJoblibLauncher, self).launch(job_overrides, initial_job_idx),
                           self.config.hydra.sweep.dir, worker_died)

