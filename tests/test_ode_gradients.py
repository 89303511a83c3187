"""Gradients through the solver: backprop vs adjoint vs finite differences, gradcheck, seminorm, memory."""

import pytest
import torch

from neode_cli.ode import collect_stats, odeint, odeint_adjoint


class Field(torch.nn.Module):
    """A tiny time-dependent MLP vector field (float64)."""

    def __init__(self, dim=2, hidden=6, seed=0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(dim + 1, hidden, generator=gen, dtype=torch.float64) * 0.5)
        self.w2 = torch.nn.Parameter(torch.randn(hidden, dim, generator=gen, dtype=torch.float64) * 0.5)

    def forward(self, t, y):
        ty = torch.cat([y, t.expand(*y.shape[:-1], 1)], dim=-1)
        return torch.tanh(ty @ self.w1) @ self.w2


def _loss(ys):
    weights = torch.arange(1, ys.numel() + 1, dtype=ys.dtype).reshape(ys.shape) / ys.numel()
    return (ys * weights).sum() + (ys ** 2).sum()


def _grads(mode, field, y0, t, **kwargs):
    field.zero_grad()
    y0 = y0.detach().clone().requires_grad_(True)
    with collect_stats() as stats:
        if mode == "backprop":
            ys = odeint(field, y0, t, **kwargs)
        else:
            ys = odeint_adjoint(field, y0, t, adjoint_options=dict(norm="seminorm") if mode == "seminorm" else None,
                                **kwargs)
        _loss(ys).backward()
    return torch.cat([y0.grad.reshape(-1)] + [p.grad.reshape(-1) for p in field.parameters()]), stats


def _finite_differences(field, y0, t, eps=1e-6, **kwargs):
    def value():
        with torch.no_grad():
            return _loss(odeint(field, y0, t, **kwargs)).item()

    grads = []
    for tensor in [y0] + list(field.parameters()):
        flat = tensor.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + eps
            up = value()
            flat[i] = old - eps
            down = value()
            flat[i] = old
            grads.append((up - down) / (2 * eps))
    return torch.tensor(grads, dtype=torch.float64)


@pytest.mark.parametrize("t_values", [[0.0, 0.5, 1.2], [1.2, 0.4, 0.0]], ids=["increasing", "decreasing"])
def test_backprop_adjoint_and_finite_differences_agree(t_values):
    field = Field()
    y0 = torch.tensor([[0.3, -0.5], [1.0, 0.2]], dtype=torch.float64)
    t = torch.tensor(t_values, dtype=torch.float64)
    tol = dict(rtol=1e-10, atol=1e-10)
    g_bp, _ = _grads("backprop", field, y0, t, **tol)
    g_adj, _ = _grads("adjoint", field, y0, t, **tol)
    g_fd = _finite_differences(field, y0.clone(), t, **tol)
    assert torch.allclose(g_bp, g_fd, rtol=1e-5, atol=1e-7)
    assert torch.allclose(g_adj, g_fd, rtol=1e-5, atol=1e-7)


def test_seminorm_gives_same_gradient_with_no_more_backward_work():
    field = Field(hidden=16, seed=1)
    y0 = torch.tensor([[0.3, -0.5], [1.0, 0.2], [-0.7, 0.9]], dtype=torch.float64)
    t = torch.linspace(0, 2, 4, dtype=torch.float64)
    g_full, s_full = _grads("adjoint", field, y0, t, rtol=1e-6, atol=1e-8)
    g_semi, s_semi = _grads("seminorm", field, y0, t, rtol=1e-6, atol=1e-8)
    assert torch.allclose(g_full, g_semi, rtol=1e-4, atol=1e-6)
    assert s_semi.nfe_backward <= s_full.nfe_backward
    assert s_semi.nfe_forward == s_full.nfe_forward


def test_gradcheck_backprop_and_adjoint():
    field = Field(hidden=3)
    t = torch.tensor([0.0, 0.3, 0.8], dtype=torch.float64)
    y0 = torch.tensor([[0.4, -0.2]], dtype=torch.float64, requires_grad=True)

    def solve_rk4(y, w1):
        return odeint(lambda t, y: torch.tanh(y @ w1[:2]) @ field.w2, y, t, method="rk4",
                      options=dict(step_size=0.1))

    assert torch.autograd.gradcheck(solve_rk4, (y0, field.w1.detach().clone().requires_grad_(True)))

    def solve_adjoint(y, w1):
        return odeint_adjoint(lambda t, y: torch.tanh(y @ w1[:2]) @ field.w2, y, t, rtol=1e-11, atol=1e-12,
                              adjoint_params=(w1,))

    assert torch.autograd.gradcheck(solve_adjoint, (y0, field.w1.detach().clone().requires_grad_(True)),
                                    atol=1e-6, rtol=1e-5)


def test_adjoint_with_tuple_state_matches_backprop():
    field = Field(dim=3, seed=2)

    def split_field(t, state):
        x, v = state
        out = field(t, torch.cat([x, v], dim=-1))
        return out[..., :1], out[..., 1:]

    x0 = torch.tensor([[0.2], [0.5]], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([[0.1, -0.3], [0.7, 0.0]], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 6, dtype=torch.float64)
    results = []
    for solve in (odeint, odeint_adjoint):
        field.zero_grad()
        x0.grad = v0.grad = None
        kwargs = dict(adjoint_params=tuple(field.parameters())) if solve is odeint_adjoint else {}
        xs, vs = solve(split_field, (x0, v0), t, rtol=1e-10, atol=1e-10, **kwargs)
        (xs.sum() + (vs ** 2).sum()).backward()
        results.append(torch.cat([x0.grad.view(-1), v0.grad.view(-1), field.w1.grad.view(-1)]))
    assert torch.allclose(results[0], results[1], rtol=1e-6, atol=1e-8)


def _saved_bytes(solve, field, y0, t, **kwargs):
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with collect_stats() as stats:
            ys = solve(field, y0, t, **kwargs)
    ys.sum().backward()
    return total, stats.steps_accepted


def test_adjoint_saved_memory_does_not_grow_with_steps_while_backprop_does():
    field = Field(hidden=8)
    y0 = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    adj_loose, steps_loose = _saved_bytes(odeint_adjoint, field, y0, t, rtol=1e-3, atol=1e-3)
    adj_tight, steps_tight = _saved_bytes(odeint_adjoint, field, y0, t, rtol=1e-8, atol=1e-8)
    assert steps_tight > 3 * steps_loose
    assert adj_loose == adj_tight
    bp_loose, _ = _saved_bytes(odeint, field, y0, t, rtol=1e-3, atol=1e-3)
    bp_tight, _ = _saved_bytes(odeint, field, y0, t, rtol=1e-8, atol=1e-8)
    assert bp_tight > 3 * bp_loose
    assert adj_tight < bp_loose


def test_adjoint_steps_over_output_times_without_gradient():
    field = Field(seed=3)
    y0 = torch.tensor([[0.3, -0.5]], dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 2, 41, dtype=torch.float64)
    grads, work = [], []
    for times, pick in ((t, lambda ys: ys[[10, -1]]), (t[[0, 10, 40]], lambda ys: ys[1:])):
        field.zero_grad()
        y0.grad = None
        with collect_stats() as stats:
            ys = odeint_adjoint(field, y0, times, rtol=1e-9, atol=1e-9)
            pick(ys).square().sum().backward()
        grads.append(torch.cat([y0.grad.view(-1), field.w1.grad.view(-1)]))
        work.append(stats.backward_steps_accepted)
    assert torch.allclose(grads[0], grads[1], rtol=1e-6, atol=1e-9)
    assert work[0] == work[1]  # the 38 output times without gradient add no backward steps


@pytest.mark.parametrize("method", ["rk4", "tsit5", "dopri8"])
def test_adjoint_with_other_methods_matches_backprop(method):
    field = Field(seed=4)
    y0 = torch.tensor([[0.3, -0.5], [0.1, 0.8]], dtype=torch.float64)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    kwargs = dict(method=method, rtol=1e-10, atol=1e-10)
    if method == "rk4":
        kwargs["options"] = dict(step_size=0.01)
    g_bp, _ = _grads("backprop", field, y0, t, **kwargs)
    g_adj, stats = _grads("adjoint", field, y0, t, **kwargs)
    assert torch.allclose(g_bp, g_adj, rtol=1e-6, atol=1e-8)
    assert stats.nfe_backward > 0


def test_fixed_grid_adjoint_with_seminorm_keeps_the_forward_step_size():
    field = Field(seed=5)
    y0 = torch.tensor([[0.3, -0.5]], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    kwargs = dict(method="rk4", options=dict(step_size=0.05))
    g_bp, _ = _grads("backprop", field, y0, t, **kwargs)
    g_semi, stats = _grads("seminorm", field, y0, t, **kwargs)
    assert stats.backward_steps_accepted == 20  # the backward grid uses step_size too
    assert torch.allclose(g_bp, g_semi, rtol=1e-5, atol=1e-8)
