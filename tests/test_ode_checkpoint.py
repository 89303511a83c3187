"""grad=checkpoint (Zhuang et al. 2020): backprop's gradient from replayed steps, with O(steps * state) memory."""

import pytest
import torch

from neode_cli.measure import SavedTensorMeter
from neode_cli.ode import collect_stats, odeint, odeint_adjoint, odeint_checkpoint
from test_ode_gradients import Field, _finite_differences, _loss


def _grads(solve, field, y0, t, **kwargs):
    field.zero_grad()
    y0 = y0.detach().clone().requires_grad_(True)
    with collect_stats() as stats:
        ys = solve(field, y0, t, **kwargs)
        _loss(ys).backward()
    return ys.detach(), torch.cat([y0.grad.reshape(-1)] + [p.grad.reshape(-1) for p in field.parameters()]), stats


CASES = {
    "dopri5": dict(method="dopri5", rtol=1e-6, atol=1e-8),
    "bosh3": dict(method="bosh3", rtol=1e-5, atol=1e-7),
    "dopri8": dict(method="dopri8", rtol=1e-6, atol=1e-8),       # non-FSAL: f(t1, y1) for dense output
    "adaptive_heun": dict(method="adaptive_heun", rtol=1e-4, atol=1e-6),
    "rk4": dict(method="rk4", options=dict(step_size=0.07)),     # fixed grid, outputs inside steps
    "euler": dict(method="euler", options=dict(step_size=0.1)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("t_values", [[0.0, 0.3, 0.5, 1.2], [1.2, 0.4, 0.0]], ids=["increasing", "decreasing"])
def test_checkpoint_gradient_equals_backprop_to_float64_precision(case, t_values):
    field = Field(seed=1)
    y0 = torch.tensor([[0.3, -0.5], [0.1, 0.8], [-0.4, 0.2]], dtype=torch.float64)
    t = torch.tensor(t_values, dtype=torch.float64)
    ys_bp, g_bp, s_bp = _grads(odeint, field, y0, t, **CASES[case])
    ys_ck, g_ck, s_ck = _grads(odeint_checkpoint, field, y0, t, **CASES[case])
    assert torch.equal(ys_bp, ys_ck)  # the same forward solve
    assert torch.allclose(g_ck, g_bp, rtol=1e-12, atol=1e-14)
    assert s_ck.nfe_forward == s_bp.nfe_forward and s_ck.steps_accepted == s_bp.steps_accepted
    assert s_ck.backward_steps_accepted == 0  # no backward ODE solve
    assert s_ck.nfe_backward >= s_bp.nfe_backward > 0


def test_checkpoint_nfe_backward_counts_the_replayed_stages():
    field = Field(seed=2)
    y0 = torch.tensor([[0.3, -0.5]], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    _, _, stats = _grads(odeint_checkpoint, field, y0, t, rtol=1e-6, atol=1e-6)
    assert stats.nfe_backward == 6 * stats.steps_accepted  # dopri5: 6 stages per step (the FSAL one is not needed)
    _, _, bp = _grads(odeint, field, y0, t, rtol=1e-6, atol=1e-6)
    assert stats.nfe_backward == bp.nfe_backward


def test_checkpoint_gradient_matches_finite_differences():
    field = Field(seed=3)
    y0 = torch.tensor([[0.3, -0.5]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    kwargs = dict(method="rk4", options=dict(step_size=0.1))  # fixed grid: the loss is smooth in the inputs
    _, g_ck, _ = _grads(odeint_checkpoint, field, y0, t, **kwargs)
    g_fd = _finite_differences(field, y0.clone(), t, **kwargs)
    assert torch.allclose(g_ck, g_fd, rtol=1e-6, atol=1e-8)


def test_checkpoint_with_tuple_state_matches_backprop():
    field = Field(dim=3, seed=2)

    def split_field(t, state):
        x, v = state
        out = field(t, torch.cat([x, v], dim=-1))
        return out[..., :1], out[..., 1:]

    x0 = torch.tensor([[0.2], [0.5]], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([[0.1, -0.3], [0.7, 0.0]], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    results = []
    for solve in (odeint, odeint_checkpoint):
        field.zero_grad()
        x0.grad = v0.grad = None
        kwargs = dict(params=tuple(field.parameters())) if solve is odeint_checkpoint else {}
        xs, vs = solve(split_field, (x0, v0), t, rtol=1e-8, atol=1e-8, **kwargs)
        (xs.sum() + (vs ** 2).sum()).backward()
        results.append(torch.cat([x0.grad.view(-1), v0.grad.view(-1), field.w1.grad.view(-1)]))
    assert torch.allclose(results[0], results[1], rtol=1e-12, atol=1e-14)


def test_checkpoint_without_gradients_keeps_nothing():
    field = Field(seed=4)
    y0 = torch.tensor([[0.3, -0.5]], dtype=torch.float64)
    with torch.no_grad():
        ys = odeint_checkpoint(field, y0, torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert ys.grad_fn is None and ys.shape == (2, 1, 2)


def saved_peak_bytes(solve, field, y0, t, **kwargs) -> tuple[int, int]:
    """Peak bytes autograd holds over forward + backward (the CPU meter of neode_cli/measure.py), steps."""
    meter = SavedTensorMeter()
    with meter.track():
        with collect_stats() as stats:
            ys = solve(field, y0, t, **kwargs)
        ys.sum().backward()
    return meter.peak, stats.steps_accepted


def test_checkpoint_memory_grows_with_steps_times_state_not_activations():
    field = Field(hidden=64)  # activations (64 hidden units per stage) much larger than the state (2)
    y0 = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    state_bytes = y0.numel() * y0.element_size()
    rows = {}
    for step in (0.1, 0.025):
        kwargs = dict(method="rk4", options=dict(step_size=step))
        rows[step] = {name: saved_peak_bytes(solve, field, y0, t, **kwargs)
                      for name, solve in (("backprop", odeint), ("adjoint", odeint_adjoint),
                                          ("checkpoint", odeint_checkpoint))}
    (ck_few, n_few), (ck_many, n_many) = rows[0.1]["checkpoint"], rows[0.025]["checkpoint"]
    assert n_many == 4 * n_few
    # checkpoint: the step states plus one step's activations -> grows by exactly one state per extra step
    assert ck_many - ck_few == (n_many - n_few) * state_bytes
    one_step = ck_few - n_few * state_bytes
    assert 0 < one_step < rows[0.1]["backprop"][0] / n_few * 2
    # backprop keeps every step's activations: much more per step than the state
    bp_growth = rows[0.025]["backprop"][0] - rows[0.1]["backprop"][0]
    assert bp_growth > 20 * (ck_many - ck_few)
    assert rows[0.025]["checkpoint"][0] < rows[0.025]["backprop"][0] / 5
    # the adjoint stays constant
    assert rows[0.025]["adjoint"][0] == rows[0.1]["adjoint"][0]


@pytest.mark.parametrize("method", ["explicit_adams", "implicit_adams", "adams", "scipy_solver"])
def test_checkpoint_refuses_methods_it_cannot_replay(method):
    # (it used to return a zero gradient for them: their loops reported no steps to replay)
    y0 = torch.tensor([1.0], requires_grad=True)
    options = {"step_size": 0.1} if method.endswith("_adams") else None
    with pytest.raises(ValueError, match="Runge-Kutta"):
        odeint_checkpoint(lambda t, y: -y, y0, torch.tensor([0.0, 1.0]), method=method, options=options)
