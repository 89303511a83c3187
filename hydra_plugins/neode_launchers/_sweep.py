"""What every neode launcher does in the sweep's own process: gather failed jobs, and end a Ctrl-C, or a job
process that died (killed for memory, say), in one line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Callable, Iterator, Sequence

from hydra.core.utils import JobReturn, JobStatus

from neode_cli.interrupts import exit_code, signal_name
from neode_cli.sweeps import FailedJob, clear_stop, note_failed, request_stop


def note_failed_jobs(returns: Sequence[JobReturn]) -> None:
    """Hand the :class:`~neode_cli.sweeps.FailedJob` a job returned (in a worker process or on a cluster node) to
    this process's record of failed jobs, so the sweep exits 1 naming them."""
    for job_return in returns:
        if job_return.status is JobStatus.COMPLETED:
            note_failed(job_return.return_value)


#: What a Ctrl-C while a submitit sweep waits means: local jobs got it from the terminal too, a cluster's did not.
INTERRUPTED = ("neode: error: sweep interrupted; each running job that got the signal saved its checkpoint (its own "
               "line says where), jobs on a cluster go on; rerun the same command with trainer.resume=true to "
               "continue the sweep")


@contextlib.contextmanager
def stopped_sweep_in_one_line(line: str = INTERRUPTED) -> Iterator[None]:
    """Turn a KeyboardInterrupt that reaches the sweep's process while it waits for its jobs into ``line`` and
    exit 130. The sweep's folders are named by the command, so rerunning it continues them."""
    try:
        yield
    except KeyboardInterrupt:
        print(line, file=sys.stderr)
        raise SystemExit(exit_code(signal.SIGINT)) from None


@contextlib.contextmanager
def stop_after_running_jobs(sweep_dir: str | Path, forward: Callable[[int], None]) -> Iterator[dict]:
    """While jobs run in worker processes, a first SIGINT or SIGTERM to the sweep's process does not abandon them:
    it writes the sweep's stop file (workers start no further job), hands SIGTERM on to the workers with
    ``forward(signum)`` (a terminal's Ctrl-C reached them already: handing it on again would be a repeat, which
    stops a run at once), and the sweep keeps waiting while each running job saves its checkpoint and returns.
    A second signal stops at once (KeyboardInterrupt). Yields ``{"signum": the first signal or None}``."""
    state: dict = {"signum": None}

    def handle(signum, frame):
        if state["signum"] is not None:
            raise KeyboardInterrupt
        state["signum"] = signum
        request_stop(sweep_dir, signal_name(signum))
        if signum != signal.SIGINT:
            forward(signum)

    clear_stop(sweep_dir)  # a file left by an earlier sweep process that died
    previous = {signum: signal.signal(signum, handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield state
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        clear_stop(sweep_dir)


def stopped_sweep_line(signum: int) -> str:
    """The one line of a sweep that stopped after its running jobs saved (see :func:`stop_after_running_jobs`)."""
    return (f"neode: error: sweep stopped by {signal_name(signum)}: each job that was running saved its checkpoint "
            "(its own line says where) and no further job started; rerun the same command with "
            "trainer.resume=true to continue the sweep")


def child_pids(marker: bytes, parent: int | None = None) -> list[int]:
    """Process ids of the children of ``parent`` (default: this process) whose command line holds ``marker``
    (``b"LokyProcess"``: joblib's workers), read from ``/proc``; empty where there is none (such processes then
    get only the signals a terminal sends them)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = int(next(line for line in status.read_text().splitlines() if line.startswith("PPid:")).split()[1])
            command = (status.parent / "cmdline").read_bytes()
        except (OSError, StopIteration, ValueError, IndexError):
            continue
        if ppid == parent and marker in command:
            found.append(int(status.parent.name))
    return found


def stopped_jobs(returns: Sequence[JobReturn]) -> list[FailedJob]:
    """The jobs that a signal stopped after they saved (what they returned in their worker or job process)."""
    return [r.return_value for r in returns
            if r.status is JobStatus.COMPLETED and isinstance(r.return_value, FailedJob) and r.return_value.stopped]


def end_if_jobs_stopped(returns: Sequence[JobReturn], sweep_dir: str | Path) -> None:
    """When signals stopped some of the sweep's jobs (each saved and printed where), end the sweep in one line
    naming them, with the first one's exit status (128 + its signal)."""
    stopped = stopped_jobs(returns)
    if not stopped:
        return
    names = ", ".join(os.path.relpath(job.run_dir, sweep_dir) for job in stopped)
    print(f"neode: error: {len(stopped)} job(s) of the sweep stopped on a signal after saving their checkpoint "
          f"({names} in {sweep_dir}; each job's own line says where); rerun the same command with "
          "trainer.resume=true to continue the sweep", file=sys.stderr)
    raise SystemExit(stopped[0].exit_code)


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
                others_stopped: bool = True, interrupted: str = INTERRUPTED) -> Sequence[JobReturn]:
    """``launch()`` (the parent launcher's), with :func:`stopped_sweep_in_one_line` (``interrupted``), then
    :func:`note_failed_jobs`.

    ``job_died(exc)`` says what happened when ``exc`` (raised by ``launch``) means a job's process died before
    it could report (SIGKILL, the out-of-memory killer, a lost node), else None; such a sweep ends in one line
    (:func:`dead_job_line`, with ``others_stopped``) and exit status 1."""
    with stopped_sweep_in_one_line(interrupted):
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
