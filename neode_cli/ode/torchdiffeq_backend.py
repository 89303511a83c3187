"""``backend="torchdiffeq"``: the same call run through torchdiffeq (the reference), still counting NFE.

torchdiffeq 0.2.5 (https://github.com/rtqichen/torchdiffeq) is imported only when this backend is used.
Options are translated where neode's names differ; options torchdiffeq cannot honour raise a ValueError
rather than being dropped silently. NFE follow the definitions of :mod:`.stats`; step counters stay 0
(torchdiffeq does not report them).
"""

from __future__ import annotations

from typing import Any

import torch

from .stats import WorkCounts, active_collectors, backward_counter, record_work

__all__ = ["torchdiffeq_odeint"]


def translate_options(options: dict | None) -> dict | None:
    """neode's options in torchdiffeq's terms: norm names become callables, ``controller="i"`` (torchdiffeq's
    only controller) is dropped, ``controller="pi"`` raises."""
    if not options:
        return options
    options = dict(options)
    norm = options.get("norm")
    if norm == "rms":
        options.pop("norm")
    elif norm == "max":
        options["norm"] = lambda x: x.abs().max() if isinstance(x, torch.Tensor) else max(v.abs().max() for v in x)
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
    for key in ("options", "adjoint_options"):
        if key in kwargs:
            kwargs[key] = translate_options(kwargs[key])
    collectors = active_collectors()
    counted = _CountedFunc(func, collectors)
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
