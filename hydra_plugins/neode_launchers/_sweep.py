"""What every neode launcher does in the sweep's own process: gather failed jobs, and end a Ctrl-C, or a job
process that died (killed for memory, say), in one line."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path
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


def jobs_left_running(sweep_dir: str | Path) -> list[str]:
    """The job folders of ``sweep_dir`` whose record still says ``running``: a job whose process was killed
    could not say otherwise (its checkpoint is where it stopped)."""
    names = []
    for summary in sorted(Path(sweep_dir).glob("*/metrics.json")):
        try:
            if json.loads(summary.read_text()).get("status") == "running":
                names.append(summary.parent.name)
        except (OSError, ValueError):
            continue
    return names


def dead_job_line(what: str, sweep_dir: str | Path, others_stopped: bool) -> str:
    """The one line for a sweep whose job process died: ``what`` happened, which jobs it left, how to go on.

    ``others_stopped``: the launcher stopped the other running jobs too (joblib), so every job recorded as
    running is at its last checkpoint; otherwise (a scheduler's jobs) some of them may still be running."""
    left = jobs_left_running(sweep_dir)
    if others_stopped:
        where = f"; left at their last checkpoint: {', '.join(left)} in {sweep_dir}" if left else ""
        when = ""
    else:
        where = (f"; recorded as running now (stopped at their last checkpoint, or still running): "
                 f"{', '.join(left)} in {sweep_dir}") if left else ""
        when = " once its other jobs have ended"
    return (f"neode: error: {what}{where}; rerun the same command with trainer.resume=true{when} to continue the "
            "sweep (finished jobs stay as they are)")


def launch_jobs(launch: Callable[[], Sequence[JobReturn]], sweep_dir: str | Path,
                job_died: Callable[[BaseException], str | None] = lambda exc: None,
                others_stopped: bool = True) -> Sequence[JobReturn]:
    """``launch()`` (the parent launcher's), with :func:`stopped_sweep_in_one_line`, then :func:`note_failed_jobs`.

    ``job_died(exc)`` says what happened when ``exc`` (raised by ``launch``) means a job's process died before
    it could report (SIGKILL, the out-of-memory killer, a lost node), else None; such a sweep ends in one line
    (:func:`dead_job_line`, with ``others_stopped``) and exit status 1."""
    with stopped_sweep_in_one_line():
        try:
            returns = launch()
        except Exception as exc:  # noqa: BLE001 - only what job_died recognises is turned into a line
            what = job_died(exc)
            if what is None:
                raise
            print(dead_job_line(what, sweep_dir, others_stopped), file=sys.stderr)
            raise SystemExit(1) from None
    note_failed_jobs(returns)
    return returns
