"""``hydra/launcher=joblib``: the sweep's jobs in ``hydra.launcher.n_jobs`` local processes (Hydra's joblib plugin).

Each job gets ``cores // n_jobs`` torch threads unless ``trainer.threads`` is set (``neode_cli.sweeps``).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

from neode_cli.interrupts import exit_code

from ._sweep import child_pids, end_if_jobs_stopped, launch_jobs, stop_after_running_jobs, stopped_sweep_line

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


def worker_pids(parent: int | None = None) -> list[int]:
    """Process ids of the loky (joblib) workers of ``parent`` (default: this process); see :func:`child_pids`."""
    return child_pids(b"LokyProcess", parent)


#: A second signal: joblib stops its workers at once.
_AT_ONCE = ("neode: error: sweep stopped at once (a second signal): joblib stopped its workers, so each job that was "
            "running is at its last checkpoint; rerun the same command with trainer.resume=true to continue the sweep")


def _forward(signum: int) -> None:
    for pid in worker_pids():
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


class NeodeJoblibLauncher(JoblibLauncher):
    """Hydra's joblib launcher; the jobs that failed are reported by the sweep's process; a SIGINT or SIGTERM
    lets the running jobs save and return, then ends the sweep in one line (a second one stops at once)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run the jobs as the joblib launcher does (see :func:`~._sweep.launch_jobs` and
        :func:`~._sweep.stop_after_running_jobs` for what is added)."""
        sweep_dir = self.config.hydra.sweep.dir
        with stop_after_running_jobs(sweep_dir, _forward) as stop:
            returns = launch_jobs(lambda: super(NeodeJoblibLauncher, self).launch(job_overrides, initial_job_idx),
                                  sweep_dir, worker_died, interrupted=_AT_ONCE)
        if stop["signum"] is not None:
            print(stopped_sweep_line(stop["signum"]), file=sys.stderr)
            raise SystemExit(exit_code(stop["signum"]))
        end_if_jobs_stopped(returns, sweep_dir)  # a signal to a worker alone
        return returns

