"""What every neode launcher does with its jobs' returns, in the sweep's own process."""

from __future__ import annotations

from typing import Sequence

from hydra.core.utils import JobReturn, JobStatus

from neode_cli.sweeps import note_failed


def note_failed_jobs(returns: Sequence[JobReturn]) -> None:
    """Hand the :class:`~neode_cli.sweeps.FailedJob` a job returned (in a worker process or on a cluster node) to
    this process's record of failed jobs, so the sweep exits 1 naming them."""
    for job_return in returns:
        if job_return.status is JobStatus.COMPLETED:
            note_failed(job_return.return_value)
