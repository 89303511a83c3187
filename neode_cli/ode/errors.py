"""The solver's exception family. Each message is one line: what happened, where (t, step size, NFE so far)
and the usual remedies, so a training loop can print it as the run's failure reason."""

from __future__ import annotations

__all__ = ["SolverError", "StepSizeUnderflowError", "TooManyStepsError", "NonFiniteStateError"]


class SolverError(RuntimeError):
    """A solve could not proceed."""


class StepSizeUnderflowError(SolverError):
    """The adaptive step size fell below what floating point can resolve."""


class TooManyStepsError(SolverError):
    """The solve exceeded ``max_num_steps``."""


class NonFiniteStateError(SolverError):
    """The state or the vector field became NaN or infinite."""
