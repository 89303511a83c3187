"""``hydra/launcher=joblib``: the sweep's jobs in ``hydra.launcher.n_jobs`` local processes (Hydra's joblib plugin).

Each job gets ``cores // n_jobs`` torch threads unless ``trainer.threads`` is set (``neode_cli.sweeps``).
"""

from __future__ import annotations

from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

from ._sweep import launch_jobs

__all__ = ["NeodeJoblibLauncher"]


class NeodeJoblibLauncher(JoblibLauncher):
    """Hydra's joblib launcher; the jobs that failed are reported by the sweep's process, a Ctrl-C in one line."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Run the jobs as the joblib launcher does (see :func:`~._sweep.launch_jobs` for what is added)."""
        return launch_jobs(lambda: super(NeodeJoblibLauncher, self).launch(job_overrides, initial_job_idx))

