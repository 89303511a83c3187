"""``hydra/launcher=submitit_slurm|submitit_local``: Hydra's submitit launchers, with requeue that continues.

How a time-out or a preemption goes (https://github.com/facebookincubator/submitit/blob/main/docs/checkpointing.md):
SLURM (or submitit's local controller) sends the job submitit's preemption signal, SIGUSR2 unless
``SUBMITIT_PREEMPT_SIGNAL`` says otherwise, ``signal_delay_s`` before the time limit. While neode trains, its
own handler (``neode_cli.interrupts``) receives it: the current batch finishes, ``checkpoint.pt`` is written and
the run ends with status 128 + the signal. The job (:meth:`_RequeueingJob.__call__`) sees that status and hands
the signal to submitit's handler, which calls :meth:`_RequeueingJob.checkpoint` (the same job with
``trainer.resume=true``; its folder is the same, as trainer.resume is no part of a folder's name) and requeues
it. A job that SLURM itself requeues (``SLURM_RESTART_COUNT`` > 0) resumes too. Other signals (a user's
``scancel``: SIGTERM) stop the job after its checkpoint, without a requeue.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
from typing import Any, Dict, List, Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher

from neode_cli.interrupts import exit_code, preemption_signal, signal_name
from neode_cli.sweeps import with_resume

from ._sweep import child_pids, end_if_jobs_stopped, launch_jobs

__all__ = ["NeodeSlurmLauncher", "NeodeLocalLauncher", "preemption_signal",
           "restarted_by_scheduler", "requeue_after_saved_stop", "job_died"]


def job_died(exc: BaseException) -> str | None:
    """What happened, when ``exc`` is submitit's report of a job that ended without a result (killed by SLURM
    for memory or by ``scancel``, a lost node: ``UncompletedJobError``, not a Python error in the job); else
    None. The sweep's other jobs are the scheduler's: those still queued or running go on."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    if not isinstance(exc, UncompletedJobError) or isinstance(exc, FailedJobError):
        return None
    found = re.search(r"Job (\S+) \(task: (\d+)\).*?state: ([^)]*)\)", str(exc), re.DOTALL)
    which = f" (job {found.group(1)}, task {found.group(2)}, state {found.group(3)})" if found else ""
    return (f"a submitit job ended without a result{which}: killed, e.g. for lack of memory, or its node was "
            "lost; the sweep's other jobs are the scheduler's and go on")


def restarted_by_scheduler() -> bool:
    """Whether SLURM requeued this job itself (a preemption with ``PreemptMode=REQUEUE``, ``scontrol requeue``)."""
    return os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")


def requeue_after_saved_stop(exc: SystemExit, job_num: int) -> None:
    """When ``exc`` is neode's exit after a stop on :func:`preemption_signal` (status 128 + that signal), say so
    on stderr and call the handler installed for that signal (submitit's: it calls the job's ``checkpoint()``,
    requeues the job and exits); return without doing anything for any other exit."""
    signum = preemption_signal()
    if exc.code != exit_code(signum):
        return
    handler = signal.getsignal(signum)
    if not callable(handler):  # not inside a submitit job: nothing to requeue with
        return
    print(f"neode: job {job_num} saved its checkpoint on {signal_name(signum)} (time limit or preemption); "
          "submitit requeues it (unless its max_num_timeout time-outs are used up), and it continues from that "
          "checkpoint in the same folder", file=sys.stderr)
    handler(signum, None)


class _RequeueingJob:
    """The job side of :class:`NeodeSlurmLauncher` and :class:`NeodeLocalLauncher` (a mixin before the submitit
    launcher class: the launcher object is what submitit pickles and runs as the job)."""

    def __call__(self, sweep_overrides: List[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: Dict[type, Singleton]) -> JobReturn:
        """Run the job as the submitit launcher does (``trainer.resume=true`` once SLURM restarted it); after a
        stop on the preemption signal, hand over to submitit's requeue (:func:`requeue_after_saved_stop`)."""
        overrides = with_resume(sweep_overrides) if restarted_by_scheduler() else list(sweep_overrides)
        try:
            return super().__call__(overrides, job_dir_key, job_num, job_id, singleton_state)  # type: ignore[misc]
        except SystemExit as exc:
            requeue_after_saved_stop(exc, job_num)
            raise

    def checkpoint(self, sweep_overrides: List[str], job_dir_key: str, job_num: int, job_id: str,
                   singleton_state: Dict[type, Singleton]) -> Any:
        """What submitit resubmits on requeue: this job with ``trainer.resume=true`` (the run's checkpoint is
        already on disk: neode saved it before its exit)."""
        import submitit  # lazy, as in the plugin: discovery stays fast

        return submitit.helpers.DelayedSubmission(self, with_resume(sweep_overrides), job_dir_key, job_num, job_id,
                                                  singleton_state)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Submit and wait as the submitit launcher does (see :func:`~._sweep.launch_jobs` for what is added);
        jobs that a signal stopped after saving end the sweep in one line (:func:`~._sweep.end_if_jobs_stopped`)."""
        sweep_dir = self.config.hydra.sweep.dir  # type: ignore[attr-defined]
        with self._job_signals():
            returns = launch_jobs(lambda: super(_RequeueingJob, self).launch(job_overrides, initial_job_idx),  # type: ignore[misc]
                                  sweep_dir, job_died, others_stopped=False)
        end_if_jobs_stopped(returns, sweep_dir)
        return returns

    def _job_signals(self):
        """Signal handling of the sweep's process while it submits and waits (SLURM: as it is)."""
        return contextlib.nullcontext()


class NeodeSlurmLauncher(_RequeueingJob, SlurmLauncher):
    """``hydra/launcher=submitit_slurm``: one SLURM job (array task) per run, requeued to continue."""


class NeodeLocalLauncher(_RequeueingJob, LocalLauncher):
    """``hydra/launcher=submitit_local``: submitit's local executor (a process per run), requeued to continue."""

    def _job_signals(self):
        """A terminal's Ctrl-C reaches every job, which saves and ends; submitit's local controller would answer
        it by sending SIGINT again (a repeat, which stops a run at once) and SIGKILL a second later, so the
        controllers are started with SIGINT ignored (an ignored signal is inherited), and so is this process,
        which waits for the jobs instead. SIGTERM is handed on to the controllers, which hand it to their jobs."""
        return _ignoring_sigint_forwarding_sigterm()


@contextlib.contextmanager
def _ignoring_sigint_forwarding_sigterm():
    def forward(signum, frame):
        for pid in child_pids(b"submitit.local._local"):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                signal.SIGTERM: signal.signal(signal.SIGTERM, forward)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
