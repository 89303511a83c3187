"""Solve statistics: the solver counts its own work, callers only read it.

Definitions (one for the whole project):
- ``nfe_forward``: evaluations of ``func`` during forward solves, including the evaluations spent choosing
  the first step and those of rejected steps.
- ``nfe_backward``: evaluations of ``func`` (or of its vector-Jacobian product) during the backward pass.
  For the adjoint this is the number of augmented-dynamics evaluations of the backward solve. For
  backprop through the solver it is the number of recorded forward evaluations autograd differentiates
  (each costs one VJP of ``func``).
- ``steps_accepted`` / ``steps_rejected``: steps of forward solves; ``backward_steps_*`` likewise for the
  adjoint's backward solve.
- ``solves``: number of ``odeint``/``odeint_adjoint`` calls.

Details of the counting (neode backend):
- Adaptive methods: ``nfe_forward = 2 + (s - 1) * (accepted + rejected) + extra``: ``f(t0, y0)``, one probe
  evaluation for the first step (none with ``options['first_step']``), ``s - 1`` new stages per attempt
  (dopri5/tsit5: 6, bosh3: 3, FSAL), and for non-FSAL methods (adaptive_heun, fehlberg2, dopri8) one
  ``f(t1, y1)`` per accepted step that is followed by another step or has outputs inside it.
- Fixed grid: ``stages * steps``, plus one ``f(t1, y1)`` when an output time falls strictly inside the last
  step (dense output needs it; inside earlier steps it is the next step's first stage anyway).
- Backprop ``nfe_backward`` is counted by a gradient hook on each evaluation's output, so it counts exactly
  the evaluations whose output reaches the loss: evaluations of rejected steps, of the first-step probe and
  the last FSAL stage (used only for the error estimate) are not differentiated and not counted. For
  dopri5 with one output time: ``nfe_backward = 6 * steps_accepted``. ``backward_steps_*`` stay 0 for
  backprop (there is no backward solve).
- Adjoint: ``nfe_backward`` counts augmented evaluations (one ``func`` call plus one VJP each), including
  the re-evaluation after each jump of the adjoint state at an output time with a gradient.
- Checkpoint (``odeint_checkpoint``): no backward solve; ``nfe_backward`` counts the evaluations of the
  replayed accepted steps (``s - 1`` per step for FSAL methods such as dopri5 without outputs inside the
  step, else ``s``, plus ``f(t1, y1)`` where the dense output needs it); ``backward_steps_*`` stay 0.
- A single output time costs nothing (no evaluation, for every method).
- ``backend="torchdiffeq"``: NFE counted by wrapping ``func`` (same definitions); step counters stay 0.

Use :func:`collect_stats` to read them around any code; collectors nest, and backward counts reach the
collectors that were active when the forward solve ran, even if ``.backward()`` runs after the block.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from typing import Callable, Iterator, Optional, Sequence

__all__ = ["SolveStats", "WorkCounts", "collect_stats", "active_collectors", "record_work", "backward_counter"]


@dataclasses.dataclass
class SolveStats:
    """Counters of solver work; all integers, all zero at creation."""

    nfe_forward: int = 0
    nfe_backward: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    backward_steps_accepted: int = 0
    backward_steps_rejected: int = 0
    solves: int = 0

    def add(self, **counts: int) -> None:
        """Increase the named counters by the given amounts."""
        for name, value in counts.items():
            setattr(self, name, getattr(self, name) + int(value))

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for logging)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class WorkCounts:
    """Work of one solve as the loop counts it: evaluations of ``func`` and step attempts."""

    nfe: int = 0
    accepted: int = 0
    rejected: int = 0


def record_work(collectors: Sequence[SolveStats], counts: WorkCounts, *, backward: bool = False) -> None:
    """Add one solve's work to every collector: the forward solve's counters, or the backward pass's.

    A forward solve also counts as one ``solves``; a backward solve (the adjoint's) adds to ``nfe_backward``
    and ``backward_steps_*``.
    """
    if backward:
        fields = dict(nfe_backward=counts.nfe, backward_steps_accepted=counts.accepted,
                      backward_steps_rejected=counts.rejected)
    else:
        fields = dict(nfe_forward=counts.nfe, steps_accepted=counts.accepted, steps_rejected=counts.rejected,
                      solves=1)
    for c in collectors:
        c.add(**fields)


def backward_counter(collectors: Sequence[SolveStats]) -> Optional[Callable]:
    """For backprop through a solve: ``attach(out)`` registers a gradient hook on an evaluation's output that
    adds one ``nfe_backward`` to each collector when autograd differentiates it. ``None`` without collectors."""
    if not collectors:
        return None

    def hook(grad):
        for c in collectors:
            c.nfe_backward += 1
        return None

    def attach(out) -> None:
        if out.requires_grad:
            out.register_hook(hook)

    return attach


_local = threading.local()


def active_collectors() -> tuple[SolveStats, ...]:
    """The collectors open in this thread, outermost first (empty tuple when none)."""
    return tuple(getattr(_local, "stack", ()))


@contextlib.contextmanager
def collect_stats() -> Iterator[SolveStats]:
    """Collect the statistics of every solve started inside the block into a fresh :class:`SolveStats`."""
    stats = SolveStats()
    stack = list(getattr(_local, "stack", ()))
    _local.stack = stack + [stats]
    try:
        yield stats
    finally:
        _local.stack = stack
