"""``backend="torchdiffeq"``: the same call run through torchdiffeq (the reference), still counting NFE.

torchdiffeq 0.2.5 (https://github.com/rtqichen/torchdiffeq) is imported only when this backend is used.
Options are translated where neode's names differ; options torchdiffeq cannot honour raise a ValueError
rather than being dropped silently. NFE follow the definitions of :mod:`.stats`; step counters stay 0
(torchdiffeq does not report them).
"""

from __future__ import annotations

from typing import Any

import torch

from .callbacks import ADJOINT_CALLBACK_NAMES, CALLBACK_NAMES
from .stats import WorkCounts, active_collectors, backward_counter, record_work

__all__ = ["torchdiffeq_odeint"]


def _rms_all(tensors) -> torch.Tensor:
    """RMS over all entries of a tensor or a tuple of tensors together (neode's ``"rms"``)."""
    parts = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
    return torch.cat([p.reshape(-1) for p in parts]).square().mean().sqrt()


def _max_all(tensors) -> torch.Tensor:
    parts = (tensors,) if isinstance(tensors, torch.Tensor) else tuple(tensors)
    return max(p.abs().max() for p in parts)


def _mixed(tensors) -> torch.Tensor:
    return max(p.square().mean().sqrt() for p in tensors)


def _block_rms(n_parts: int, with_params: bool):
    """neode's ``"block_rms"`` (``"block_rms_seminorm"``) on what torchdiffeq hands a custom adjoint norm,
    ``(t_adj, *y_parts, *a_parts, *param_adjoints)``: the max of the RMS norms of y, a and all parameters."""
    def norm(parts):
        y, a, g = parts[1:1 + n_parts], parts[1 + n_parts:1 + 2 * n_parts], parts[1 + 2 * n_parts:]
        blocks = [y, a] + ([g] if with_params and g else [])
        return max(_rms_all(b) for b in blocks)
    return norm


def translate_options(options: dict | None, n_parts: int | None = None, adjoint: bool = False) -> dict | None:
    """neode's options in torchdiffeq's terms: norm names become callables (``"mixed"``, torchdiffeq's default,
    is dropped; ``"rms"`` is RMS over all components, also of a tuple state, whose length is ``n_parts``,
    ``None`` for a tensor state), ``controller="i"`` (torchdiffeq's only controller) is dropped,
    ``controller="pi"`` raises. ``adjoint``: these are ``adjoint_options`` (norms on the augmented state:
    ``"seminorm"`` stays, ``"block_rms"``/``"block_rms_seminorm"`` become callables)."""
    if not options:
        return options
    options = dict(options)
    norm = options.get("norm")
    if norm == "mixed" and not adjoint:
        options.pop("norm")
    elif norm == "rms" and not adjoint:
        if n_parts is None:
            options.pop("norm")
        else:
            options["norm"] = _rms_all
    elif norm == "max" and not adjoint:
        options["norm"] = _max_all
    elif adjoint and norm in ("block_rms", "block_rms_seminorm"):
        options["norm"] = _block_rms(n_parts or 1, norm == "block_rms")
    elif adjoint and norm in ("rms", "max", "mixed"):
        whole = {"rms": _rms_all, "max": _max_all, "mixed": _mixed}[norm]
        options["norm"] = lambda parts: whole(parts[1:])  # (without torchdiffeq's time adjoint)
    if "controller" in options:
        controller = options.pop("controller")
        if controller not in (None, "i"):
            raise ValueError(f"controller={controller!r} is not available with backend='torchdiffeq' (it has only "
                             "the integral controller, 'i'); use backend='neode'")
    return options


class _CountedFunc(torch.nn.Module):
    """Wraps the user's func for torchdiffeq: counts forward calls, then backward ones (see stats.py)."""

    def __init__(self, func, collectors):
        super().__init__()
        self.func = func
        self.collectors = collectors
        self.phase = "forward"
        self.forward_calls = 0
        self.count_vjps = False

    def forward(self, t, y):
        out = self.func(t, y)
        if self.phase == "forward":
            self.forward_calls += 1
            if self.count_vjps and self.collectors:
                attach = backward_counter(self.collectors)
                for o in (out if isinstance(out, (tuple, list)) else (out,)):
                    attach(o)
                    break  # one count per evaluation
        else:
            for c in self.collectors:
                c.nfe_backward += 1
        return out


def torchdiffeq_odeint(adjoint: bool, func, y0, t, kwargs: dict[str, Any]):
    """``torchdiffeq.odeint`` (or ``odeint_adjoint``) with ``kwargs``, counting NFE into the active collectors.

    ``kwargs`` are the public API's keyword arguments; their ``options``/``adjoint_options`` are translated here.
    """
    import torchdiffeq

    kwargs = dict(kwargs)
    n_parts = None if isinstance(y0, torch.Tensor) else len(y0)
    for key in ("options", "adjoint_options"):
        if key in kwargs:
            kwargs[key] = translate_options(kwargs[key], n_parts, adjoint=key == "adjoint_options")
    collectors = active_collectors()
    counted = _CountedFunc(func, collectors)
    for name in CALLBACK_NAMES + ADJOINT_CALLBACK_NAMES:  # torchdiffeq looks for the step callbacks on func
        if getattr(func, name, None) is not None:
            setattr(counted, name, getattr(func, name))
    try:
        if adjoint:
            out = torchdiffeq.odeint_adjoint(counted, y0, t, **kwargs)
        else:
            counted.count_vjps = torch.is_grad_enabled()
            out = torchdiffeq.odeint(counted, y0, t, **kwargs)
    finally:
        record_work(collectors, WorkCounts(nfe=counted.forward_calls))
        counted.phase = "backward"
    return out
