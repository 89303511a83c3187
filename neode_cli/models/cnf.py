"""Continuous normalizing flow (Chen et al. 2018, Section 4; FFJORD): z and log p integrated jointly.

The flow maps base samples z(0) ~ N(0, base_std^2 I) to data z(t1) along dz/dt = f(t, z), and the
instantaneous change of variables d log p(z(t))/dt = -tr(df/dz) carries the log-density with it. Both run
through the integrator the model receives (any solver, any gradient method): one solve of the tuple state
``(z, log p)``.

Density-model protocol shared with :class:`neode_cli.models.planar.PlanarFlow` (the task relies on it and
never on the class): ``log_prob(x, fraction=1.0)``, ``sample(n, generator=None) -> (x, log_q)``,
``trajectory(n, fractions, generator=None)`` and the attribute ``dim``. ``fraction`` is how far along the
flow (0 = base, 1 = data side): used for the snapshot figures.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from .regularization import Regularization, report_regularization

FIELDS = ("planar", "mlp")
LAYERS = ("concatsquash", "concat")
TRACES = ("exact", "hutchinson")
NOISES = ("gaussian", "rademacher")


def _check_choice(what: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


# ----------------------------------------------------------------------------------------------------------
# Vector fields f(t, z): (scalar tensor, (n, d)) -> (n, d)
# ----------------------------------------------------------------------------------------------------------
class PlanarField(nn.Module):
    """The paper's planar CNF: ``dz/dt = sum_m sigma_m(t) u_m tanh(w_m^T z + b_m)``, m = 1..units (M).

    ``(w_m, u_m, b_m, sigma_m)`` come from a hypernetwork of t (two tanh layers of ``hyper_hidden`` units);
    the gate ``sigma_m(t) = sigmoid(.)`` lies in (0, 1), so a unit can switch itself off over time.
    """

    def __init__(self, dim: int, units: int, hyper_hidden: int = 32):
        super().__init__()
        self.dim, self.units = dim, units
        self.hyper = nn.Sequential(
            nn.Linear(1, hyper_hidden), nn.Tanh(),
            nn.Linear(hyper_hidden, hyper_hidden), nn.Tanh(),
            nn.Linear(hyper_hidden, units * (2 * dim + 2)),
        )

    def _units(self, t: torch.Tensor, z: torch.Tensor):
        d = self.dim
        params = self.hyper(t.reshape(1, 1).to(z)).reshape(self.units, 2 * d + 2)
        w, u = params[:, :d], params[:, d:2 * d]               # (M, d) each
        b, gate = params[:, 2 * d], torch.sigmoid(params[:, 2 * d + 1])  # (M,) each
        return w, u, gate, torch.tanh(z @ w.T + b)              # h: (n, M)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        _, u, gate, h = self._units(t, z)
        return (h * gate) @ u                                   # (n, d)

    def forward_with_divergence(self, t: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f(t, z), tr(df/dz))`` with the trace in closed form: ``sum_m sigma_m tanh'(.) u_m^T w_m``.

        Equal to :func:`exact_trace` (tested) at a fraction of its cost: no autograd pass per dimension.
        """
        w, u, gate, h = self._units(t, z)
        return (h * gate) @ u, (1 - h ** 2) @ (gate * (u * w).sum(dim=1))


class ConcatSquashLinear(nn.Module):
    """FFJORD's time-conditioned layer: ``Linear(x) * sigmoid(Linear(t)) + Linear(t)`` (no bias on the last)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)
        self.gate = nn.Linear(1, dim_out)
        self.shift = nn.Linear(1, dim_out, bias=False)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = t.reshape(1, 1).to(x)
        return self.linear(x) * torch.sigmoid(self.gate(tt)) + self.shift(tt)


class ConcatLinear(nn.Module):
    """``Linear([t, x])``: time appended to the input as one more feature."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in + 1, dim_out)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = t.reshape(1, 1).to(x).expand(x.shape[0], 1)
        return self.linear(torch.cat([tt, x], dim=1))


class MLPField(nn.Module):
    """FFJORD-style vector field: time-conditioned layers ``dim -> hidden_dims... -> dim`` with tanh between."""

    def __init__(self, dim: int, hidden_dims: Sequence[int] = (64, 64, 64), layer: str = "concatsquash"):
        super().__init__()
        _check_choice("layer type", layer, LAYERS)
        make = ConcatSquashLinear if layer == "concatsquash" else ConcatLinear
        sizes = [dim, *hidden_dims, dim]
        self.layers = nn.ModuleList(make(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = z
        for i, layer in enumerate(self.layers):
            h = layer(t, h)
            if i < len(self.layers) - 1:
                h = torch.tanh(h)
        return h


# ----------------------------------------------------------------------------------------------------------
# Divergence of the field
# ----------------------------------------------------------------------------------------------------------
def exact_trace(dz: torch.Tensor, z: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """``tr(d dz / d z)`` per sample, one autograd pass per dimension: ``(n, d), (n, d) -> (n,)``.

    Exact because samples are independent (row i of ``dz`` depends only on row i of ``z``).
    """
    return exact_jacobian_terms(dz, z, create_graph)[0]


def hutchinson_terms(dz: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, create_graph: bool,
                     frobenius: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Unbiased estimates ``(e^T (d dz/dz) e, ||e^T d dz/dz||^2 or None)`` of the trace and (when ``frobenius``)
    the squared Frobenius norm per sample with the probe ``noise`` ``e`` ``(n, d)``: one vector-Jacobian product."""
    vjp = torch.autograd.grad(dz, z, noise, create_graph=create_graph, retain_graph=True, allow_unused=True)[0]
    if vjp is None:  # dz does not depend on z
        vjp = torch.zeros_like(z)
    return (vjp * noise).sum(dim=1), (vjp.pow(2).sum(dim=1) if frobenius else None)


def hutchinson_trace(dz: torch.Tensor, z: torch.Tensor, noise: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """Unbiased estimate ``e^T (d dz / d z) e`` per sample with the probe ``noise`` ``e`` (n, d) -> (n,)."""
    return hutchinson_terms(dz, z, noise, create_graph)[0]


def draw_noise(like: torch.Tensor, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """A Hutchinson probe shaped like ``like``: standard Gaussian or Rademacher (+-1), both E[e e^T] = I."""
    _check_choice("noise", kind, NOISES)
    if kind == "gaussian":
        return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)
    signs = torch.randint(0, 2, like.shape, device=like.device, generator=generator)
    return (2 * signs - 1).to(like.dtype)


def exact_jacobian_terms(dz: torch.Tensor, z: torch.Tensor, create_graph: bool,
                         frobenius: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(tr(d dz/dz), ||d dz/dz||_F^2 or None)`` per sample from the Jacobian's rows, one autograd pass per
    dimension; the squared Frobenius norm only when ``frobenius``."""
    trace = torch.zeros(dz.shape[0], dtype=dz.dtype, device=dz.device)
    norm = torch.zeros_like(trace) if frobenius else None
    for i in range(z.shape[1]):
        row = torch.autograd.grad(dz[:, i].sum(), z, create_graph=create_graph, retain_graph=True,
                                  allow_unused=True)[0]
        if row is not None:  # None: dz does not depend on z (a zero divergence)
            trace = trace + row[:, i]
            if frobenius:
                norm = norm + row.pow(2).sum(dim=1)
    return trace, norm


class EndTime(nn.Module):
    """The flow's end time ``t1``: a constant, or learned (FFJORD's ``train_T``) as ``softplus(raw) > 0``."""

    def __init__(self, t1: float, learn: bool = False):
        super().__init__()
        self.learn = learn
        self.value = float(t1)  # a Python float when fixed: exact in any dtype
        if learn:
            self.raw = nn.Parameter(torch.tensor(math.log(math.expm1(t1))))  # softplus(raw) = t1

    def forward(self) -> torch.Tensor | float:
        """``t1``: a 0-dim tensor differentiable in ``raw`` when learned, else the constant."""
        return nn.functional.softplus(self.raw) if self.learn else self.value


class AugmentedDynamics(nn.Module):
    """``d/ds (z, log p, K, J) = t1 * (f(s t1, z), -tr(df/dz), ||f||^2, ||df/dz||_F^2)`` on ``s in [0, 1]``.

    The solve runs in rescaled time ``s = t / t1`` (the flow over ``[0, t1]``), so ``t1`` enters only through the
    dynamics and its gradient is exact with any gradient method (FFJORD's learned end time); ``end_time`` None
    means ``t1 = 1``. The exact trace comes from the field's ``forward_with_divergence`` when it has one (closed
    form), else from autograd rows; with a probe ``noise`` it is Hutchinson's estimate. ``terms`` are the active
    RNODE regularisers (``models/regularization.py``), appended to the state in that order: the kinetic energy
    ``||f||^2`` and the Jacobian Frobenius norm, exact from the rows with the exact trace, or ``||e^T df/dz||^2``
    with the trace's own Hutchinson probe.

    Built afresh for every solve so the Hutchinson probe (``noise``, or None for the exact trace) is fixed
    for the whole solve, including the adjoint's backward solve, without mutable state on the model.
    """

    def __init__(self, field: nn.Module, noise: torch.Tensor | None, end_time: EndTime | None = None,
                 terms: tuple[str, ...] = ()):
        super().__init__()
        self.field = field
        self.noise = noise
        self.end_time = end_time
        self.terms = terms

    def forward(self, t: torch.Tensor, state: tuple[torch.Tensor, ...]):
        z = state[0]
        t1 = self.end_time() if self.end_time is not None else None
        if isinstance(t1, torch.Tensor):
            t1 = t1.to(z)
        time = t if t1 is None else t * t1
        closed_form = self.noise is None and hasattr(self.field, "forward_with_divergence")
        if closed_form and "jacobian" not in self.terms:
            dz, trace = self.field.forward_with_divergence(time, z)  # exact, in closed form
            frobenius = None
        else:
            # Graph through the trace only when someone differentiates this call (training or the adjoint's
            # backward solve); otherwise the divergence is computed and detached.
            differentiate = torch.is_grad_enabled()
            with torch.enable_grad():
                if not z.requires_grad:
                    z = z.detach().requires_grad_(True)
                dz = self.field(time, z)
                wanted = "jacobian" in self.terms
                if self.noise is None:
                    trace, frobenius = exact_jacobian_terms(dz, z, differentiate, frobenius=wanted)
                else:
                    trace, frobenius = hutchinson_terms(dz, z, self.noise, differentiate, frobenius=wanted)
            if not differentiate:
                dz, trace = dz.detach(), trace.detach()
                frobenius = frobenius.detach() if frobenius is not None else None
        rates = [dz, -trace]
        for name in self.terms:
            rates.append(dz.pow(2).sum(dim=1) if name == "kinetic" else frobenius)
        if t1 is not None and not (isinstance(t1, float) and t1 == 1.0):
            rates = [t1 * r for r in rates]
        return tuple(rates)


def standard_normal_log_prob(z: torch.Tensor, std: float) -> torch.Tensor:
    """``log N(z; 0, std^2 I)`` per row: ``(n, d) -> (n,)``."""
    d = z.shape[1]
    return -0.5 * (z / std).pow(2).sum(dim=1) - d * math.log(std) - 0.5 * d * math.log(2 * math.pi)


class CNF(nn.Module):
    """Continuous normalizing flow on ``R^dim`` integrated over ``[0, t1]`` by ``integrator``.

    ``field``: ``planar`` (the paper's gated planar units, ``units`` M, hypernetwork ``hyper_hidden``) or
    ``mlp`` (FFJORD: ``hidden_dims``, ``layer`` concatsquash|concat, tanh). ``trace``: ``exact`` or
    ``hutchinson`` with ``noise`` gaussian|rademacher, drawn once per solve; the Hutchinson estimate is used
    only in training mode: evaluation (``model.eval()``) always uses the exact trace. ``learn_t1``: the end time
    is a parameter initialised at ``t1`` (FFJORD's ``train_T``; the solve runs on ``s = t / t1 in [0, 1]``, see
    :class:`AugmentedDynamics`). ``regularization``: RNODE weights (Finlay et al. 2020) whose terms training
    solves integrate.
    """

    # These defaults are the config's too (``model=cnf``): the schema is generated from this signature.
    def __init__(self, integrator: Callable,
                 field: str = "planar",  # planar (paper: gated units from a hypernetwork of t) | mlp (FFJORD)
                 dim: int = 2,
                 units: int = 64,  # planar: hidden units M (Figure 5: 64; Figure 4 sweeps 2, 8, 32)
                 hyper_hidden: int = 32,  # planar: hypernetwork hidden units (authors' example)
                 hidden_dims: Sequence[int] = (64, 64, 64),  # mlp: FFJORD's toy architecture
                 layer: str = "concatsquash",  # mlp: concatsquash (FFJORD's default) | concat
                 trace: str = "exact",  # exact (one autograd pass per dimension) | hutchinson (training only)
                 noise: str = "gaussian",  # hutchinson probe, drawn once per solve: gaussian | rademacher
                 t1: float = 1.0,  # integrate over [0, t1] (authors' example: 10; FFJORD: 0.5, learned)
                 base_std: float = 1.0,  # base density N(0, base_std^2 I)
                 learn_t1: bool = False,  # true: t1 is a parameter initialised at t1 (FFJORD's train_T)
                 regularization: Regularization | None = None):  # RNODE weights, passed in like the integrator
        super().__init__()
        _check_choice("vector field", field, FIELDS)
        _check_choice("trace", trace, TRACES)
        _check_choice("noise", noise, NOISES)
        if t1 <= 0 or base_std <= 0:
            raise ValueError(f"t1 and base_std must be > 0, got t1={t1}, base_std={base_std}")
        self.integrator = integrator
        self.dim, self.base_std = dim, float(base_std)
        self.trace, self.noise = trace, noise
        self.regularization = regularization
        self.field = (PlanarField(dim, units, hyper_hidden) if field == "planar"
                      else MLPField(dim, list(hidden_dims), layer))
        self.end_time = EndTime(float(t1), learn_t1)

    @property
    def t1(self) -> float:
        """The end time of the flow (the learned value with ``learn_t1``)."""
        t1 = self.end_time()
        return float(t1.detach()) if isinstance(t1, torch.Tensor) else t1

    def record_values(self) -> dict[str, float]:
        """Learned quantities for the run record: ``{"t1": ...}`` with ``learn_t1``, else nothing."""
        return {"t1": self.t1} if self.end_time.learn else {}

    def _solve(self, z: torch.Tensor, logp: torch.Tensor, fractions: Sequence[float]):
        """Solve ``(z, log p)`` through ``fractions`` of ``[0, t1]`` (rescaled time ``s``); while training with
        RNODE terms, also integrate them and report them. Returns ``((len(s), n, d), (len(s), n))``."""
        hutchinson = self.training and self.trace == "hutchinson"
        terms = self.regularization.terms if self.regularization is not None and self.training else ()
        dynamics = AugmentedDynamics(self.field, draw_noise(z, self.noise) if hutchinson else None, self.end_time,
                                     terms)
        s = torch.tensor(list(fractions), dtype=z.dtype, device=z.device)
        zeros = tuple(torch.zeros_like(logp) for _ in terms)
        # The RNODE integrals ride along outside the error norm (z and log p decide the steps, as without them).
        out = self.integrator(dynamics, (z, logp, *zeros), s, error_components=2 if terms else None)
        if terms:
            # Integrals over the whole solve, positive whichever way it runs (log_prob integrates from t1 to 0).
            sign = 1.0 if fractions[-1] >= fractions[0] else -1.0
            report_regularization(self.regularization, {name: sign * out[k + 2][-1].mean()
                                                        for k, name in enumerate(terms)})
        return out[0], out[1]

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log-density of the base N(0, base_std^2 I): ``(n, d) -> (n,)``."""
        return standard_normal_log_prob(z, self.base_std)

    def log_prob(self, x: torch.Tensor, fraction: float = 1.0) -> torch.Tensor:
        """``log q(x)`` of the flow's marginal at time ``fraction * t1`` (1 = the model density): ``(n,)``.

        Integrates ``(x, 0)`` from ``s = fraction * t1`` back to 0; the log-p state then holds
        ``int_0^s tr(df/dz) dt``, and ``log q(x) = log p0(z(0)) - int_0^s tr(df/dz) dt``.
        """
        if fraction <= 0:
            return self.base_log_prob(x)
        zero = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        z, delta = self._solve(x, zero, [fraction, 0.0])
        return self.base_log_prob(z[-1]) - delta[-1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples of the model and their log-density ``(x (n, d), log_q (n,))``, differentiable."""
        z0 = self._base_sample(n, generator)
        x, logq = self._solve(z0, self.base_log_prob(z0), [0.0, 1.0])
        return x[-1], logq[-1]

    def trajectory(self, n: int, fractions: Sequence[float],
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples pushed along the flow, observed at ``fractions`` (increasing, in (0, 1]) of ``t1``.

        Returns ``(len(fractions), n, d)``; row -1 is ``sample(n)`` when ``fractions[-1] == 1``.
        """
        z0 = self._base_sample(n, generator)
        zs, _ = self._solve(z0, self.base_log_prob(z0), [0.0, *fractions])
        return zs[1:]

    def _base_sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        p = next(self.parameters())
        return self.base_std * torch.randn(n, self.dim, dtype=p.dtype, device=p.device, generator=generator)
