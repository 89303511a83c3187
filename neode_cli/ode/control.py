"""Step-size control: error norms, the first step, and the controllers that accept or reject an attempt.

The loop (:mod:`.integrate`) makes a step attempt and hands the controller the attempt's error ratio, the
norm of the local error estimate scaled by ``atol + rtol * max(|y0|, |y1|)``. The controller alone decides
whether the attempt is accepted and which step size to propose next. Three controllers:

- :class:`IntegralController` (``controller="i"``, the default): the classic I controller of Hairer, Norsett &
  Wanner (Solving ODEs I, II.4), ``h_new = h * clip(safety * ratio**(-1/k), dfactor, ifactor)`` with
  ``k = q + 1`` and ``q`` the order of the embedded solution; an accepted step never shrinks the next one.
  This is torchdiffeq's rule.
- :class:`PIController` (``controller="pi"``): Gustafsson's PI controller in Soderlind's notation (G.
  Soderlind, "Automatic control and adaptive time-stepping", Numerical Algorithms 31, 2002, sections 1-3;
  Hairer & Wanner, Solving ODEs II, IV.2): ``h_new = h * safety * ratio**(-b1/k) * ratio_prev**(b2/k)`` with
  ``k*b1 = 0.7``, ``k*b2 = 0.4`` (Soderlind's PI.3.4: integral gain 0.3, proportional gain 0.4; diffrax's
  ``PIDController(pcoeff=0.4, icoeff=0.3)``). ``ratio_prev`` is the ratio of the last accepted step.
- :class:`ConstantStepController`: the fixed grid. It accepts every attempt and never looks at an error
  estimate (``needs_error = False``), so the loop computes no error norm and reads nothing from the device
  per step.

All step-size arithmetic runs on the host in Python floats: the error ratio is read once per adaptive attempt
(the only host synchronisation of the adaptive loop) and everything after it is scalar arithmetic.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import torch

__all__ = ["make_norm", "block_rms_norm", "NORM_NAMES", "initial_step", "next_step_factor", "Controller",
           "IntegralController", "PIController", "ConstantStepController", "GridController", "ControlState", "GiveUp",
           "CONTROLLER_NAMES",
           "make_controller"]

NORM_NAMES = ("mixed", "rms", "max")
CONTROLLER_NAMES = ("i", "pi")

#: A norm maps the scaled error (flat tensor) to a Python float.
Norm = Callable[[torch.Tensor], float]

# Consecutive non-finite error estimates tolerated (each shrinks the step by dfactor) before giving up.
MAX_NONFINITE_REJECTS = 30


def _rms(x: torch.Tensor) -> float:
    return torch.linalg.vector_norm(x).item() / math.sqrt(max(x.numel(), 1))


def _max(x: torch.Tensor) -> float:
    return torch.linalg.vector_norm(x, ord=math.inf).item()


def block_rms_norm(sizes: Sequence[int], keep: int | None = None) -> Norm:
    """Maximum over consecutive blocks of the flat vector of each block's RMS norm.

    ``sizes`` are the block lengths; only the first ``keep`` blocks enter the norm (all when ``None``); empty
    blocks are skipped. This is torchdiffeq's ``_mixed_norm`` when the blocks are the tensors of a tuple state
    (or of the adjoint's augmented state), and neode's earlier adjoint norm over (state, adjoint state, all
    parameters) when there are three blocks.
    """
    keep = len(sizes) if keep is None else keep
    bounds, start = [], 0
    for size in sizes:
        bounds.append((start, start + size))
        start += size
    bounds = [(lo, hi) for lo, hi in bounds[:keep] if hi > lo]
    if len(bounds) == 1:
        lo, hi = bounds[0]
        return lambda x: _rms(x[lo:hi])
    if len(bounds) >= 2 and bounds[0] == (0, sizes[0]) and bounds[1] == (sizes[0], 2 * sizes[0]) and \
            len(bounds) <= 4:
        # state and adjoint state have equal length: one reduction over a (2, N) view covers both
        n, rest = sizes[0], bounds[2:]

        def norm(x: torch.Tensor) -> float:
            squares = x.square()
            worst = squares[:2 * n].view(2, n).mean(dim=1).max()
            for lo, hi in rest:
                worst = torch.maximum(worst, squares[lo:hi].mean())
            return math.sqrt(worst.item())

        return norm
    if len(bounds) > 4:
        # many blocks (one per parameter tensor): one scatter-add of the squares instead of a reduction each
        end = bounds[-1][1]
        ids_cpu = torch.full((end,), len(bounds), dtype=torch.long)
        for b, (lo, hi) in enumerate(bounds):
            ids_cpu[lo:hi] = b
        counts = torch.tensor([hi - lo for lo, hi in bounds] + [1], dtype=torch.float64)
        cache: dict = {}

        def norm(x: torch.Tensor) -> float:
            key = (x.device, x.dtype)
            if key not in cache:
                cache[key] = (ids_cpu.to(x.device), counts.to(x.device, x.dtype))
            ids, n = cache[key]
            sums = torch.zeros(len(bounds) + 1, dtype=x.dtype, device=x.device)
            sums.index_add_(0, ids, x[:end].square())
            return math.sqrt((sums[:-1] / n[:-1]).max().item())

        return norm

    def norm(x: torch.Tensor) -> float:
        means = torch.stack([x[lo:hi].square().mean() for lo, hi in bounds])
        return math.sqrt(means.max().item())

    return norm


def make_norm(norm, unflatten: Callable[[torch.Tensor], object] | None = None,
              blocks: Sequence[int] | None = None) -> Norm:
    """Turn the ``norm`` option into a :data:`Norm`.

    ``norm`` is ``None``/``"mixed"`` (torchdiffeq's default: the RMS norm for a tensor state, the maximum over
    the tuple's tensors of their RMS norms for a tuple state, whose lengths are ``blocks``), ``"rms"`` (root
    mean square over all components together), ``"max"``, or a callable taking the scaled error in the user's
    state structure (``unflatten`` restores it: a tensor of ``y0``'s shape, or a tuple for tuple states) and
    returning a scalar.
    """
    if norm is None or norm == "mixed":
        return block_rms_norm(blocks) if blocks is not None and len(blocks) > 1 else _rms
    if norm == "rms":
        return _rms
    if norm == "max":
        return _max
    if callable(norm):
        restore = unflatten if unflatten is not None else (lambda x: x)
        return lambda x: float(norm(restore(x)))
    raise ValueError(f"unknown norm {norm!r}; valid: {', '.join(NORM_NAMES)}, or a callable"
                     " (adjoint_options also accept 'seminorm', 'block_rms', 'block_rms_seminorm')")


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
    """I-controller factor for the next step size after an attempt with error ratio ``ratio`` (accepted iff <= 1)."""
    if ratio == 0.0:
        return ifactor
    factor = safety * ratio ** (-exponent)
    if ratio <= 1.0:
        return min(ifactor, max(1.0, factor))
    return min(ifactor, max(dfactor, factor))


# --- controllers --------------------------------------------------------------------------------------------
class GiveUp(Exception):
    """Raised by a controller that cannot make progress; the loop turns it into a :class:`NonFiniteStateError`.

    ``what`` says what happened, ``remedy`` what the user can do; the loop adds where (t, step size, NFE).
    """

    def __init__(self, what: str, remedy: str):
        super().__init__(what)
        self.what, self.remedy = what, remedy


_BLOW_UP = ("the state became non-finite",
            "the dynamics blow up: lower the learning rate, normalise inputs or regularise the dynamics")


@dataclasses.dataclass(slots=True)
class ControlState:
    """What a controller remembers between attempts of one solve (one fresh state per solve)."""

    nonfinite_streak: int = 0     # consecutive attempts with a non-finite error ratio
    prev_ratio: float = 1.0       # PI: error ratio of the last accepted step
    rejected_last: bool = False   # PI: the previous attempt was rejected
    anchor: float = 0.0           # constant step: grid origin (solver time) of the current interval
    steps: int = 0                # constant step: grid steps taken since the anchor


class Controller:
    """Accepts or rejects step attempts and proposes step sizes (see the module docstring).

    The loop calls :meth:`first_step` once, then :meth:`decide` after every attempt. Attributes the loop reads:

    - ``needs_error``: whether :meth:`decide` needs the error ratio (False: the loop passes ``None`` and computes
      no error estimate; it then checks the solution for non-finite values once, at the end).
    - ``lands_on_outputs``: whether every step must end on the next output time (otherwise steps cross output
      times and the outputs come from the dense interpolant).
    - ``more_steps_hint``: the remedy named when ``max_num_steps`` is reached.
    """

    needs_error: bool = True
    lands_on_outputs: bool = False
    more_steps_hint: str = "loosen rtol/atol"

    def start(self, s0: float) -> ControlState:
        """A fresh state for a solve starting at solver time ``s0``."""
        return ControlState(anchor=s0)

    def first_step(self, f0: torch.Tensor, y0: torch.Tensor, probe: Callable[[float], torch.Tensor], rtol: float,
                   atol: float, norm: Norm) -> float:
        """The first proposed step size (``probe(h)`` evaluates ``f`` at ``(t0 + h, y0 + h f0)``, one NFE)."""
        raise NotImplementedError

    def decide(self, state: ControlState, ratio: Optional[float], s1: float, h: float,
               clipped_from: Optional[float]) -> tuple[bool, float]:
        """After an attempt of size ``h`` (ending at ``s1`` if accepted): ``(accept, next proposed step size)``.

        ``ratio``: the scaled error norm (accept iff <= 1 for the error-based controllers; NaN or inf for a
        non-finite estimate), ``None`` when ``needs_error`` is False. ``clipped_from``: the proposal the loop
        shortened to ``h`` so the step lands on an output time or the end (``None`` when not shortened).
        Raises :class:`GiveUp` when it cannot make progress. Updates ``state`` in place.
        """
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class _ErrorController(Controller):
    """Shared parts of the error-based controllers: first step, rejection, non-finite streak."""

    error_order: int                 # q, the order of the embedded solution
    safety: float = 0.9
    ifactor: float = 10.0
    dfactor: float = 0.2
    first: Optional[float] = None    # options['first_step']
    # options['min_step'] / ['max_step'] (torchdiffeq's): every proposal is clamped to [min_step, max_step], and
    # an attempt no longer than min_step is accepted whatever its (finite) error.
    min_step: float = 0.0
    max_step: float = math.inf
    exponent: float = dataclasses.field(init=False)  # 1 / k, k = q + 1

    def __post_init__(self):
        object.__setattr__(self, "exponent", 1.0 / (self.error_order + 1))

    def first_step(self, f0, y0, probe, rtol, atol, norm) -> float:
        if self.first is not None:
            return self._bounded(abs(self.first))
        h, d0, d1 = initial_step(f0, y0, probe, rtol, atol, norm, self.error_order)
        if not (math.isfinite(d0) and math.isfinite(d1)):
            raise GiveUp("non-finite initial state or vector field",
                         "check y0 and the vector field (inputs, parameters) for NaN/inf")
        return self._bounded(h)

    def _bounded(self, h: float) -> float:
        return min(max(h, self.min_step), self.max_step)

    def _forced(self, ratio: float, h: float) -> bool:
        """An attempt of at most min_step is accepted unless its error estimate is not finite."""
        return h <= self.min_step and math.isfinite(ratio)

    def _reject(self, state: ControlState, ratio: float, h: float) -> tuple[bool, float]:
        state.rejected_last = True
        if math.isfinite(ratio):
            state.nonfinite_streak = 0
            return False, self._bounded(
                h * next_step_factor(ratio, self.exponent, self.safety, self.ifactor, self.dfactor))
        # A NaN/inf estimate says nothing about the error's size: shrink by dfactor, a bounded number of times.
        state.nonfinite_streak += 1
        if state.nonfinite_streak > MAX_NONFINITE_REJECTS:
            raise GiveUp(*_BLOW_UP)
        return False, self._bounded(h * self.dfactor)


@dataclasses.dataclass(frozen=True)
class IntegralController(_ErrorController):
    """The I controller (``controller="i"``): see the module docstring."""

    def decide(self, state, ratio, s1, h, clipped_from):
        if ratio <= 1.0 or self._forced(ratio, h):  # NaN compares False: a non-finite attempt is rejected
            state.nonfinite_streak = 0
            h_next = h * next_step_factor(ratio, self.exponent, self.safety, self.ifactor, 1.0)
            # A step shortened to land on an output time says nothing against the longer proposal.
            return True, self._bounded(h_next if clipped_from is None else max(h_next, clipped_from))
        return self._reject(state, ratio, h)


@dataclasses.dataclass(frozen=True)
class PIController(_ErrorController):
    """The PI controller (``controller="pi"``): see the module docstring.

    ``beta1``/``beta2`` are ``k*b1`` and ``k*b2``. Rejections use the I rule; a step right after a rejection
    does not grow (Hairer & Wanner's safeguard), and ``ratio_prev`` is floored at 1e-4 so an exact step cannot
    blow the next proposal up.
    """

    beta1: float = 0.7
    beta2: float = 0.4

    def decide(self, state, ratio, s1, h, clipped_from):
        if ratio <= 1.0 or self._forced(ratio, h):
            state.nonfinite_streak = 0
            if ratio == 0.0:
                factor = self.ifactor
            else:
                factor = (self.safety * ratio ** (-self.beta1 * self.exponent)
                          * state.prev_ratio ** (self.beta2 * self.exponent))
                factor = min(self.ifactor, max(self.dfactor, factor))
            if state.rejected_last:
                factor = min(factor, 1.0)
            state.prev_ratio = max(ratio, 1e-4)
            state.rejected_last = False
            h_next = h * factor
            return True, self._bounded(h_next if clipped_from is None else max(h_next, clipped_from))
        return self._reject(state, ratio, h)


@dataclasses.dataclass(frozen=True)
class ConstantStepController(Controller):
    """The fixed grid: every attempt is accepted, no error estimate is ever computed.

    ``step``: the grid spacing in solver time; ``None`` means one step between consecutive output times. The
    grid is anchored at the start of the solve (and, when steps land on output times, at each of them): step
    ``n`` ends at ``anchor + n * step`` computed by multiplication, so rounding does not accumulate over many
    steps; the last step of an interval is shortened to end exactly on its end.
    """

    step: Optional[float] = None

    needs_error = False
    more_steps_hint = "raise step_size"

    @property
    def lands_on_outputs(self) -> bool:  # type: ignore[override]
        return self.step is None

    def first_step(self, f0, y0, probe, rtol, atol, norm) -> float:
        return math.inf if self.step is None else self.step

    def decide(self, state, ratio, s1, h, clipped_from):
        if self.step is None:
            return True, math.inf
        if clipped_from is not None:  # landed on an output time (or the end): the grid restarts there
            state.anchor, state.steps = s1, 0
            return True, self.step
        state.steps += 1
        return True, state.anchor + (state.steps + 1) * self.step - s1


@dataclasses.dataclass(frozen=True)
class GridController(Controller):
    """A fixed grid given point by point (``grid_constructor``): every attempt is accepted.

    It proposes no step of its own: the grid points are stops of the loop (``SolveSettings.stops_t``), so each
    step runs from one grid point (or output time, in jump mode) to the next, landing on it exactly.
    """

    step = None  # (no constant spacing: events need step_size)
    needs_error = False
    lands_on_outputs = False
    more_steps_hint = "use a coarser grid"

    def first_step(self, f0, y0, probe, rtol, atol, norm) -> float:
        return math.inf

    def decide(self, state, ratio, s1, h, clipped_from):
        return True, math.inf


def make_controller(name: Optional[str], error_order: int, *, safety: float = 0.9, ifactor: float = 10.0,
                    dfactor: float = 0.2, first_step: Optional[float] = None, min_step: float = 0.0,
                    max_step: float = math.inf) -> Controller:
    """The error-based controller named by ``options['controller']`` (``None`` means ``"i"``)."""
    kinds = {"i": IntegralController, "pi": PIController}
    name = "i" if name is None else name
    if not isinstance(name, str) or name not in kinds:
        raise ValueError(f"unknown controller {name!r}; valid: {', '.join(CONTROLLER_NAMES)}")
    return kinds[name](error_order=error_order, safety=safety, ifactor=ifactor, dfactor=dfactor, first=first_step,
                       min_step=min_step, max_step=max_step)
