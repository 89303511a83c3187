"""What every neode launcher does in the sweep's own process: gather failed jobs, and end a Ctrl-C in one line."""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Callable, Iterator, Sequence

from hydra.core.utils import JobReturn, JobStatus

from neode_cli.interrupts import exit_code
from neode_cli.sweeps import note_failed


def note_failed_jobs(returns: Sequence[JobReturn]) -> None:
    """Hand the :class:`~neode_cli.sweeps.FailedJob` a job returned (in a worker process or on a cluster node) to
    this process's record of failed jobs, so the sweep exits 1 naming them."""
    for job_return in returns:
        if job_return.status is JobStatus.COMPLETED:
            note_failed(job_return.return_value)


@contextlib.contextmanager
def stopped_sweep_in_one_line() -> Iterator[None]:
    """Turn a Ctrl-C that reaches the sweep's process while it waits for its jobs into one line and exit 130.

    The jobs got the same signal (they share the terminal's process group): each saved its checkpoint and
    printed its own line; the sweep's folders are named by the command, so rerunning it continues them."""
    try:
        yield
    except KeyboardInterrupt:
        print("neode: error: sweep interrupted; each running job saved its checkpoint (its own line says where); "
              "rerun the same command with trainer.resume=true to continue the sweep", file=sys.stderr)
        raise SystemExit(exit_code(signal.SIGINT)) from None


def launch_jobs(launch: Callable[[], Sequence[JobReturn]]) -> Sequence[JobReturn]:
    """``launch()`` (the parent launcher's), with :func:`stopped_sweep_in_one_line`, then :func:`note_failed_jobs`."""
    with stopped_sweep_in_one_line():
        returns = launch()
    note_failed_jobs(returns)
    return returns
