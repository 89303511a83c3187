"""Fixed-grid option ``interp``: outputs between grid points by the cubic Hermite or the linear interpolant."""

import math

import pytest
import torch

from neode_cli.ode import odeint, collect_stats


def _decay(t, y):
    return -y


@pytest.mark.parametrize("method", ["euler", "rk4", "explicit_adams", "implicit_adams"])
def test_linear_interp_is_the_chord_between_grid_points(method):
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    grid = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    on_grid = odeint(_decay, y0, grid, method=method, options={"step_size": 0.25})
    t = torch.tensor([0.0, 0.1, 0.6, 1.0], dtype=torch.float64)
    ys = odeint(_decay, y0, t, method=method, options={"step_size": 0.25, "interp": "linear"})
    expected_01 = on_grid[0] + (0.1 / 0.25) * (on_grid[1] - on_grid[0])
    expected_06 = on_grid[2] + (0.1 / 0.25) * (on_grid[3] - on_grid[2])
    torch.testing.assert_close(ys[1], expected_01, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(ys[2], expected_06, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(ys[3], on_grid[-1], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("method", ["rk4", "implicit_adams"])
def test_cubic_interp_is_the_default_and_more_accurate_than_linear(method):
    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.05, 0.27, 0.43], dtype=torch.float64)
    options = {"step_size": 0.1}
    default = odeint(_decay, y0, t, method=method, options=options)
    cubic = odeint(_decay, y0, t, method=method, options={**options, "interp": "cubic"})
    linear = odeint(_decay, y0, t, method=method, options={**options, "interp": "linear"})
    exact = torch.exp(-t).unsqueeze(1)
    torch.testing.assert_close(default, cubic, rtol=0, atol=0)
    assert (cubic - exact).abs().max() < 1e-3
    assert (linear - exact).abs().max() > 5 * (cubic - exact).abs().max()


def test_linear_interp_does_not_evaluate_f_at_the_step_end():
    y0 = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.4, 0.5], dtype=torch.float64)  # 0.4 lies inside the last step (0.25, 0.5)
    with collect_stats() as linear:
        odeint(_decay, y0, t, method="euler", options={"step_size": 0.25, "interp": "linear"})
    with collect_stats() as cubic:
        odeint(_decay, y0, t, method="euler", options={"step_size": 0.25, "interp": "cubic"})
    assert linear.nfe_forward == 2 and cubic.nfe_forward == 3


def test_unknown_interp_is_a_value_error():
    y0 = torch.tensor([1.0])
    t = torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="Unknown interpolation method 'quadratic'"):
        odeint(_decay, y0, t, method="rk4", options={"step_size": 0.1, "interp": "quadratic"})
    with pytest.raises(ValueError, match="Unknown interpolation method"):
        odeint(_decay, y0, t, method="explicit_adams", options={"step_size": 0.1, "interp": 3})
    with pytest.raises(ValueError, match="unknown option"):
        odeint(_decay, y0, t, method="dopri5", options={"interp": "linear"})
