"""Stop requests from signals: what Ctrl-C, a scheduler's SIGTERM or a preemption notice asks of a run.

Contract (used by the training loop; a launcher layer can use the same object):

- :class:`StopSignals` installs handlers for :data:`STOP_SIGNALS` (SIGINT, SIGTERM, SIGUSR1, SIGUSR2: what a
  terminal, ``kill``, SLURM and submitit send before a time-out or preemption) while it is entered, and
  restores the previous handlers on exit. Only the main thread can install handlers; elsewhere it is inert.
- Outside :meth:`StopSignals.deferred` a signal raises :class:`Interrupted` at once (start-up: nothing to save).
- Inside :meth:`StopSignals.deferred` the first signal only sets :attr:`StopSignals.signum`; the loop polls
  :attr:`StopSignals.requested` between batches, saves its state and stops. A second signal of any kind
  raises :class:`Interrupted` at once (the user insists; atomic writes keep the last checkpoint valid),
  unless ``repeat_stops_at_once=False``: under torchrun a worker gets Ctrl-C twice (from the terminal and
  forwarded by torchrun), so repeats are ignored there and torchrun's own shutdown timeout (SIGKILL) is what
  ends a worker that does not stop.
- :func:`exit_code` is the process exit status for a signal: ``128 + signum`` (the shell convention), so
  SIGINT -> 130 and SIGTERM -> 143; SIGUSR1 -> 138 and SIGUSR2 -> 140 on Linux. Keeping the signal in the
  status lets a launcher tell a preemption notice (requeue) from a user's Ctrl-C (stop).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

__all__ = ["STOP_SIGNALS", "Interrupted", "StopSignals", "exit_code", "signal_name"]

STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


def signal_name(signum: int) -> str:
    """``SIGINT`` for 2 and so on (``signal N`` for numbers without a name)."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def preemption_signal() -> int:
    """The signal submitit treats as "time-out or preemption: checkpoint and requeue" (its rule: ``SIG`` +
    ``$SUBMITIT_PREEMPT_SIGNAL``, default ``USR2``; https://github.com/facebookincubator/submitit)."""
    return int(getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")))


def exit_code(signum: int) -> int:
    """The exit status of a process stopped by ``signum``: ``128 + signum`` (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """A stop signal that has to end the run now. ``signum`` is the signal (SIGINT for a plain Ctrl-C)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)


class StopSignals:
    """Handlers for :data:`STOP_SIGNALS` while entered (see the module docstring for the contract)."""

    def __init__(self, signals: tuple[int, ...] = STOP_SIGNALS, repeat_stops_at_once: bool = True) -> None:
        self.signals = signals
        self.repeat_stops_at_once = repeat_stops_at_once
        self.signum: int | None = None  # the first signal received while deferred
        self._deferring = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was requested while deferred (the loop then saves and stops)."""
        return self.signum is not None

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @contextlib.contextmanager
    def deferred(self) -> Iterator["StopSignals"]:
        """Within this block a first signal is only recorded (see :attr:`requested`)."""
        self._deferring = True
        try:
            yield self
        finally:
            self._deferring = False

    def _handle(self, signum, frame) -> None:
        if self._deferring and self.signum is None:
            self.signum = signum
            return
        if self._deferring and not self.repeat_stops_at_once:
            return
        raise Interrupted(signum)
