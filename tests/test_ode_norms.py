"""Error norms as torchdiffeq 0.2.5 (tuple states, the adjoint's default, seminorm, custom adjoint norms), the
earlier norms under their names, and the adjoint of a field with no graph, against the installed torchdiffeq.

The step-by-step comparisons use bosh3; dopri5 shares torchdiffeq's embedded pair too (tests/test_ode_api.py
checks its steps attempt for attempt).
"""

import math
import warnings

import pytest
import torch

from neode_cli.integrator import Integrator
from neode_cli.ode import collect_stats, odeint, odeint_adjoint

torchdiffeq = pytest.importorskip("torchdiffeq")

DT = torch.float64


class Field(torch.nn.Module):
    """Two parameter tensors of very different sizes; a tuple state whose second part is much larger than the
    first, so the per-tensor norms and the RMS over everything choose different steps."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(1)
            self.lin = torch.nn.Linear(2, 2).double()
            self.scale = torch.nn.Parameter(torch.tensor(0.7, dtype=DT))
        self.calls = 0
        self.steps = []

    def forward(self, t, y):
        self.calls += 1
        if isinstance(y, tuple):
            z, w = y
            return torch.tanh(self.lin(z)) * self.scale, 0.3 * w + 5.0 * z.sum()
        return torch.tanh(self.lin(y)) * self.scale

    def callback_accept_step(self, t0, y0, dt):
        self.steps.append((float(t0), float(dt)))


Z0 = torch.tensor([0.8, -0.4], dtype=DT)
W0 = torch.full((3,), 20.0, dtype=DT)
T = torch.tensor([0.0, 1.3], dtype=DT)


def _interior(steps, t_end=1.3):
    """Accepted steps that end before the end time (the last step: neode lands on it, torchdiffeq steps past)."""
    return [s for s in steps if s[0] + s[1] < t_end - 1e-9]


def _same_steps(a, b):
    assert len(a) == len(b) > 5
    for (t0, dt), (t0_ref, dt_ref) in zip(a, b):
        assert t0 == pytest.approx(t0_ref, rel=1e-7, abs=1e-12) and dt == pytest.approx(dt_ref, rel=1e-7)


def _steps(impl, **kwargs):
    field = Field()
    with torch.no_grad():
        impl(field, (Z0, W0), T, rtol=1e-6, atol=1e-8, method="bosh3", **kwargs)
    return _interior(field.steps)


def test_tuple_default_is_the_max_of_per_tensor_rms_as_torchdiffeq():
    ours, theirs = _steps(odeint), _steps(torchdiffeq.odeint)
    _same_steps(ours, theirs)
    # "rms" is the RMS over all components together (the earlier default): torchdiffeq with that norm
    flat = _steps(odeint, options=dict(norm="rms"))
    flat_ref = _steps(torchdiffeq.odeint, options=dict(norm=lambda x: torch.cat([v.reshape(-1) for v in x])
                                                       .square().mean().sqrt()))
    _same_steps(flat, flat_ref)
    assert len(flat) != len(ours)
    _same_steps(_steps(odeint, options=dict(norm="mixed")), ours)
    # the torchdiffeq backend translates the names
    via_backend = lambda *a, **k: odeint(*a, backend="torchdiffeq", **k)  # noqa: E731
    _same_steps(_steps(via_backend, options=dict(norm="rms")), flat)
    _same_steps(_steps(via_backend, options=dict(norm="mixed")), ours)


def _adjoint_work(impl, tuple_state, **kwargs):
    field = Field()
    z0 = Z0.clone().requires_grad_(True)
    y0 = (z0, W0) if tuple_state else z0
    out = impl(field, y0, T, rtol=1e-6, atol=1e-8, method="bosh3", **kwargs)
    forward = field.calls
    loss = (out[0][-1].square().sum() + out[1][-1].sum()) if tuple_state else out[-1].square().sum()
    loss.backward()
    return forward, field.calls - forward, z0.grad, field.lin.weight.grad


@pytest.mark.parametrize("tuple_state", [False, True])
@pytest.mark.parametrize("adjoint_options", [None, dict(norm="seminorm")])
def test_adjoint_backward_work_and_gradients_match_torchdiffeq(tuple_state, adjoint_options):
    f_n, b_n, g_n, w_n = _adjoint_work(odeint_adjoint, tuple_state, adjoint_options=adjoint_options)
    f_t, b_t, g_t, w_t = _adjoint_work(torchdiffeq.odeint_adjoint, tuple_state, adjoint_options=adjoint_options)
    assert b_n == b_t  # the backward solve takes torchdiffeq's steps: same norm of the augmented state
    if not tuple_state:
        assert f_n == f_t
    assert torch.allclose(g_n, g_t, rtol=1e-3) and torch.allclose(w_n, w_t, rtol=1e-3)  # (to the tolerances)


@pytest.mark.parametrize("tuple_state", [False, True])
def test_adjoint_default_uses_the_forward_norm_for_state_and_adjoint_state_as_torchdiffeq(tuple_state):
    def max_norm(x):
        return max(v.abs().max() for v in x) if isinstance(x, tuple) else x.abs().max()

    ours = _adjoint_work(odeint_adjoint, tuple_state, options=dict(norm=max_norm))
    theirs = _adjoint_work(torchdiffeq.odeint_adjoint, tuple_state, options=dict(norm=max_norm))
    assert ours[1] == theirs[1]
    assert _adjoint_work(odeint_adjoint, tuple_state, options=dict(norm="max"))[1] == ours[1]


def test_earlier_adjoint_norms_by_name():
    """block_rms: max of the RMS norms of (state, adjoint state, all parameters together); it differs from the
    per-tensor default here, and the seminorm variant is the default seminorm for a tensor state."""
    def block_rms(parts):
        t_adj, y, a, *params = parts
        g = torch.cat([p.reshape(-1) for p in params])
        return max(y.square().mean().sqrt(), a.square().mean().sqrt(), g.square().mean().sqrt())

    named = _adjoint_work(odeint_adjoint, False, adjoint_options=dict(norm="block_rms"))[1]
    by_callable = _adjoint_work(odeint_adjoint, False, adjoint_options=dict(norm=block_rms))[1]
    reference = _adjoint_work(torchdiffeq.odeint_adjoint, False, adjoint_options=dict(norm=block_rms))[1]
    default = _adjoint_work(odeint_adjoint, False)[1]
    assert named == by_callable == reference != default
    semi = _adjoint_work(odeint_adjoint, False, adjoint_options=dict(norm="block_rms_seminorm"))[1]
    assert semi == _adjoint_work(odeint_adjoint, False, adjoint_options=dict(norm="seminorm"))[1]
    # the torchdiffeq backend understands the names too
    via_backend = _adjoint_work(lambda *a, **k: odeint_adjoint(*a, backend="torchdiffeq", **k), False,
                                adjoint_options=dict(norm="block_rms"))[1]
    assert via_backend == reference


@pytest.mark.parametrize("tuple_state", [False, True])
def test_custom_adjoint_norm_gets_torchdiffeq_arguments(tuple_state):
    seen = []

    def norm(parts):
        seen[-1].append([(tuple(p.shape), p.detach().clone()) for p in parts])
        return max(p.abs().max() for p in parts)

    for impl in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        seen.append([])
        _adjoint_work(impl, tuple_state, adjoint_options=dict(norm=norm))
    ours, theirs = seen
    assert [[s for s, _ in call] for call in ours[:3]] == [[s for s, _ in call] for call in theirs[:3]]
    # (t_adj, y..., a..., then the parameters in func.parameters() order: scale, lin.weight, lin.bias)
    expected = [(), (2,), (3,), (2,), (3,), (), (2, 2), (2,)] if tuple_state else [(), (2,), (2,), (), (2, 2), (2,)]
    assert [s for s, _ in ours[0]] == expected
    # the first call is the initial step's norm of the scaled augmented state: the same values (up to the
    # forward solves' y(t_1): neode lands on t_1, torchdiffeq interpolates there)
    for (_, v), (_, v_ref) in zip(ours[0], theirs[0]):
        assert torch.allclose(v, v_ref, rtol=1e-4, atol=1e-12)


def test_custom_adjoint_norm_warns_about_parameters_left_out_as_torchdiffeq():
    frozen = torch.tensor(1.0, dtype=DT)
    field = Field()
    for impl in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            impl(field, Z0, T, adjoint_params=(*field.parameters(), frozen),
                 adjoint_options=dict(norm=lambda parts: max(p.abs().max() for p in parts)))
        assert any("adjoint parameter was passed without requiring gradient" in str(w.message) for w in caught)


def test_integrator_keeps_the_earlier_norms():
    """Training's integrator passes the earlier norms by name, so configs keep their numbers."""
    field = Field()
    t = torch.tensor([0.0, 1.0], dtype=DT)
    for gradient, backward_norm in (("adjoint", "block_rms"), ("adjoint_seminorm", "block_rms_seminorm")):
        counts = []
        for run in (lambda: Integrator(method="bosh3", rtol=1e-6, atol=1e-8, gradient=gradient)(field, (Z0, W0), t),
                    lambda: odeint_adjoint(field, (Z0, W0), t, rtol=1e-6, atol=1e-8, method="bosh3",
                                           options=dict(norm="rms"), adjoint_options=dict(norm=backward_norm))):
            with collect_stats() as stats:
                out = run()
                (out[0][-1].sum() + out[1][-1].sum()).backward()
            counts.append((stats.nfe_forward, stats.nfe_backward))
        assert counts[0] == counts[1]


# --- the adjoint of a field with no graph (depends on neither y nor a parameter) ---------------------------
def test_adjoint_of_a_time_only_field_matches_torchdiffeq():
    t = torch.tensor([0.0, 0.5, 2.0], dtype=DT, requires_grad=True)
    grads = []
    for impl in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        y0 = torch.tensor([1.0, -2.0], dtype=DT, requires_grad=True)
        out = impl(lambda tt, y: tt * torch.ones_like(y), y0, t, adjoint_params=())
        t.grad = None
        (out * torch.arange(1.0, 4.0, dtype=DT).view(3, 1)).sum().backward()
        grads.append((y0.grad.clone(), t.grad.clone()))
    # y(t) = y0 + (t^2 - t0^2)/2: dL/dy0 = 1 + 2 + 3 per component; dL/dt_i = w_i * 2 t_i, dL/dt_0 = -(2+3) * 2 t_0
    assert torch.allclose(grads[0][0], torch.full((2,), 6.0, dtype=DT))
    assert torch.allclose(grads[0][1], torch.tensor([0.0, 2.0, 12.0], dtype=DT), atol=1e-9)
    assert torch.allclose(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1], atol=1e-5)


def test_adjoint_of_a_constant_field_module_without_parameters():
    """torchdiffeq itself raises here ("element 0 of tensors does not require grad"); the gradient is exact."""
    class Constant(torch.nn.Module):
        def forward(self, t, y):
            return torch.ones_like(y)

    y0 = torch.tensor([1.0, -2.0], dtype=DT, requires_grad=True)
    out = odeint_adjoint(Constant(), y0, torch.tensor([0.0, 1.0], dtype=DT))
    assert torch.allclose(out[-1], y0.detach() + 1)
    out.sum().backward()
    assert torch.equal(y0.grad, torch.full((2,), 2.0, dtype=DT))
    assert math.isfinite(float(y0.grad.sum()))
