"""Step-size control: error norms, the first step, and the next step size after an attempt.

The controller is the classic integral (I) controller of Hairer, Norsett & Wanner (Solving ODEs I, II.4):
``h_new = h * clip(safety * ratio**(-1/(q+1)), dfactor, ifactor)`` where ``ratio`` is the norm of the
error estimate scaled by ``atol + rtol * max(|y0|, |y1|)`` and ``q`` the order of the embedded solution. A
step is accepted when ``ratio <= 1``; an accepted step never shrinks the next one.

All step-size arithmetic runs on the host in Python floats: the error ratio is read once per attempt (the
only host synchronisation of the adaptive loop) and everything after it is scalar arithmetic.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

__all__ = ["make_norm", "NORM_NAMES", "initial_step", "next_step_factor"]

NORM_NAMES = ("rms", "max")

#: A norm maps the scaled error (flat tensor) to a Python float.
Norm = Callable[[torch.Tensor], float]


def _rms(x: torch.Tensor) -> float:
    return torch.linalg.vector_norm(x).item() / math.sqrt(max(x.numel(), 1))


def _max(x: torch.Tensor) -> float:
    return torch.linalg.vector_norm(x, ord=math.inf).item()


def block_rms_norm(sizes: Sequence[int], keep: int | None = None) -> Norm:
    """Maximum over consecutive blocks of the flat vector of each block's RMS norm.

    ``sizes`` are the block lengths; only the first ``keep`` blocks enter the norm (all when ``None``).
    Used by the adjoint: blocks are (state, adjoint state, parameter adjoint); the seminorm keeps two.
    """
    keep = len(sizes) if keep is None else keep
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    bounds = [(lo, hi) for lo, hi in bounds[:keep] if hi > lo]
    if len(bounds) >= 2 and bounds[0] == (0, sizes[0]) and bounds[1] == (sizes[0], 2 * sizes[0]):
        # state and adjoint state have equal length: one reduction over a (2, N) view covers both
        n, rest = sizes[0], bounds[2:]

        def norm(x: torch.Tensor) -> float:
            squares = x.square()
            worst = squares[:2 * n].view(2, n).mean(dim=1).max()
            for lo, hi in rest:
                worst = torch.maximum(worst, squares[lo:hi].mean())
            return math.sqrt(worst.item())

        return norm

    def norm(x: torch.Tensor) -> float:
        means = torch.stack([x[lo:hi].square().mean() for lo, hi in bounds])
        return math.sqrt(means.max().item())

    return norm


def make_norm(norm, unflatten: Callable[[torch.Tensor], object] | None = None) -> Norm:
    """Turn the ``norm`` option into a :data:`Norm`.

    ``norm`` is ``None``/``"rms"`` (root mean square over all components, torchdiffeq's default), ``"max"``,
    or a callable taking the scaled error in the user's state structure (``unflatten`` restores it: a
    tensor of ``y0``'s shape, or a tuple for tuple states) and returning a scalar.
    """
    if norm is None or norm == "rms":
        return _rms
    if norm == "max":
        return _max
    if callable(norm):
        restore = unflatten if unflatten is not None else (lambda x: x)
        return lambda x: float(norm(restore(x)))
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORM_NAMES)}, or a callable"
                     " (adjoint_options also accept 'seminorm')")


@torch.no_grad()
def initial_step(f0: torch.Tensor, y0: torch.Tensor, probe: Callable[[float], torch.Tensor], rtol: float,
                 atol: float, norm: Norm, error_order: int) -> tuple[float, float, float]:
    """Hairer's starting step: returns ``(h, d0, d1)``; costs one evaluation (``probe(h0)`` = f(t0+h0, y0+h0 f0)).

    ``d0``/``d1`` are the scaled norms of ``y0`` and ``f0``, returned so the caller can report a non-finite
    start. ``probe`` receives the trial step and must return ``f`` at the trial point.
    """
    scale = y0.abs().mul_(rtol).add_(atol)
    d0 = norm(y0 / scale)
    d1 = norm(f0 / scale)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    f1 = probe(h0)
    d2 = norm((f1 - f0).div_(scale)) / h0
    if not (math.isfinite(d0) and math.isfinite(d1)):
        return h0, d0, d1
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    elif math.isfinite(d2):
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (error_order + 1))
    else:
        h1 = h0
    return min(100 * h0, h1), d0, d1


def next_step_factor(ratio: float, exponent: float, safety: float, ifactor: float, dfactor: float) -> float:
    """Factor for the next step size after an attempt with error ratio ``ratio`` (accepted iff <= 1)."""
    if ratio == 0.0:
        return ifactor
    factor = safety * ratio ** (-exponent)
    if ratio <= 1.0:
        return min(ifactor, max(1.0, factor))
    return min(ifactor, max(dfactor, factor))
