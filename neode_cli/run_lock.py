"""One run per folder: an OS lock on ``<run folder>/run.lock`` held while a run uses the folder.

Contract: :meth:`RunLock.acquire` takes an exclusive, non-blocking ``fcntl.flock`` on the lock file and
writes the holder (pid, host, start time) into it; it raises :class:`RunLocked` naming the holder when
another process holds it. The OS drops the lock when the holding process dies (even by SIGKILL), so a lock
file left behind never blocks a later run. Under DDP only rank 0 should take it. Where ``fcntl`` does not
exist (Windows), locking is skipped.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["RunLock", "RunLocked", "LOCK_FILE"]

LOCK_FILE = "run.lock"


class RunLocked(RuntimeError):
    """Another live process holds the run folder; the message names it."""


class RunLock:
    """The lock of one run folder (a context manager: ``with RunLock(folder): ...``)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> "RunLock":
        """Take the lock or raise :class:`RunLocked`; an OSError (e.g. a read-only folder) propagates."""
        if self._fd is not None or fcntl is None:
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(f"run folder {self.path.parent} is in use by {holder}; wait for it to finish or "
                            "choose another hydra.run.dir") from None
        except BaseException:
            os.close(fd)
            raise
        started = _dt.datetime.now().isoformat(timespec="seconds")
        text = f"pid {os.getpid()} on {socket.gethostname()} since {started}\n".encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)
        except OSError:
            pass  # the lock holds without the note (e.g. a full disk); the holder is then "another process"
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: removing a lock file others may have open races with them)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
