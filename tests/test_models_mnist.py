"""MNIST classifiers: the published parameter counts, shapes, and ODE-Net gradients (backprop vs adjoint)."""

from __future__ import annotations

import pytest
import torch

from neode_cli.integrator import Integrator
from neode_cli.models.blocks import ConcatConv2d, ResBlock, downsampling_stem
from neode_cli.models.mlp import MLP
from neode_cli.models.odenet import ODENet
from neode_cli.models.resnet import ResNet


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("downsampling, odenet, resnet", [("conv", 208_266, 576_778), ("res", 232_970, 601_482)])
def test_parameter_counts_match_the_paper(downsampling, odenet, resnet):
    assert n_params(ODENet(Integrator(), downsampling=downsampling)) == odenet
    assert n_params(ResNet(downsampling=downsampling)) == resnet


def test_mlp_parameter_count_and_shape():
    model = MLP()
    assert n_params(model) == 238_510
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert model(torch.zeros(3, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("downsampling, size", [("conv", 6), ("res", 7)])
def test_shapes(downsampling, size):
    x = torch.randn(2, 1, 28, 28)
    assert downsampling_stem(downsampling, 1, 8)(x).shape == (2, 8, size, size)
    model = ODENet(Integrator(), downsampling=downsampling, channels=8)
    assert model(x).shape == (2, 10) and model(x[:, 0]).shape == (2, 10)
    assert model.ode_block_output(x).shape == (2, 8, size, size)
    assert ResNet(downsampling, num_blocks=2, channels=8, num_classes=3)(x).shape == (2, 3)


def test_unknown_downsampling_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown downsampling 'cnv'; valid: conv, res"):
        ODENet(Integrator(), downsampling="cnv")


def test_concat_conv_sees_time():
    torch.manual_seed(0)
    conv = ConcatConv2d(2, 3)
    x = torch.randn(1, 2, 5, 5)
    # Only the time channel differs between t=0 and t=1, so the difference is the conv of a ones channel.
    diff = conv(torch.tensor(1.0), x) - conv(torch.tensor(0.0), x)
    ones = torch.nn.functional.conv2d(torch.ones(1, 1, 5, 5), conv.conv.weight[:, :1], padding=1)
    torch.testing.assert_close(diff, ones)


def test_strided_resblock_halves_and_plain_block_is_identity_at_zero_weights():
    block = ResBlock(4)
    torch.nn.init.zeros_(block.conv2.weight)
    x = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(block(x), x)
    assert ResBlock(4, stride=2)(torch.randn(2, 4, 26, 26)).shape == (2, 4, 13, 13)


def test_ode_block_zero_field_is_identity():
    # With the last GroupNorm's affine weight and bias at zero, f = 0, so h(1) = h(0) exactly.
    model = ODENet(Integrator(), channels=4)
    torch.nn.init.zeros_(model.ode_block.func.norm3.weight)
    torch.nn.init.zeros_(model.ode_block.func.norm3.bias)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(model.ode_block_output(x), model.features(x))


def test_resolve_with_another_integrator():
    torch.manual_seed(0)
    model = ODENet(Integrator(method="dopri5", rtol=1e-3, atol=1e-3), channels=4).double()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    with torch.no_grad():
        coarse = model.ode_block_output(x, Integrator(method="euler", options={"step_size": 0.5}, gradient="backprop"))
        fine = model.ode_block_output(x, Integrator(method="dopri5", rtol=1e-9, atol=1e-9, gradient="backprop"))
        default = model.ode_block_output(x)
    assert (coarse - fine).abs().max() > 10 * (default - fine).abs().max()
    assert (default - fine).abs().max() < 2e-2  # dopri5 at rtol=atol=1e-3 (torchdiffeq's error estimate)


def _gradient_gap(integrator: dict, adjoint: str = "adjoint", seed: int = 0) -> float:
    """Relative difference ||g_adjoint - g_backprop|| / ||g_backprop|| of the loss gradient over all
    parameters of a tiny float64 ODE-Net (4 channels, 2 images)."""
    torch.manual_seed(seed)
    model = ODENet(Integrator(**integrator), channels=4).double()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([0, 4])

    def gradient(method: str) -> torch.Tensor:
        model.ode_block.integrator = Integrator(gradient=method, **integrator)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    backprop, adjoint_grad = gradient("backprop"), gradient(adjoint)
    return ((adjoint_grad - backprop).norm() / backprop.norm()).item()


def test_backprop_and_adjoint_gradients_agree():
    # Backprop gives the exact gradient of the discretised solve, the adjoint a discretisation of the exact
    # one: they agree up to the solver error, which shrinks as the grid is refined. ReLU makes the field only
    # piecewise smooth, so the gap closes slowly (about 2.5x per halving here), not at the order of rk4.
    coarse = _gradient_gap(dict(method="rk4", options={"step_size": 0.1}))
    fine = _gradient_gap(dict(method="rk4", options={"step_size": 0.05}))
    assert fine < 0.03 and fine < 0.6 * coarse
    # The adaptive default path (dopri5) and the seminorm adjoint agree too.
    assert _gradient_gap(dict(method="dopri5", rtol=1e-6, atol=1e-6)) < 0.05
    assert _gradient_gap(dict(method="dopri5", rtol=1e-6, atol=1e-6), adjoint="adjoint_seminorm") < 0.05


@pytest.mark.parametrize("name, params, takes_integrator", [
    ("odenet", 208_266, True), ("rknet", 208_266, True), ("resnet", 576_778, False), ("mlp", 238_510, False)])
def test_model_configs_build_the_paper_models(name, params, takes_integrator):
    import inspect

    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class, instantiate

    import neode_cli.config  # noqa: F401  (registers the schemas)
    from conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"])
        rknet_adjoint = compose("train", overrides=["model=rknet", "grad=adjoint"]).grad.method
    # The loop's rule: pass the integrator only to constructors that take one.
    assert ("integrator" in inspect.signature(get_class(cfg.model._target_)).parameters) == takes_integrator
    model = instantiate(cfg.model, **({"integrator": Integrator()} if takes_integrator else {}))
    assert n_params(model) == params
    assert cfg.grad.method == ("backprop" if name == "rknet" else "adjoint")
    assert rknet_adjoint == "adjoint"  # the command line still wins over rknet's default


def test_model_config_typo_fails_at_compose():
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ValidationError

    import neode_cli.config  # noqa: F401
    from conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises((ValidationError, ConfigCompositionException), match="cnv"):
            compose("train", overrides=["model=odenet", "model.downsampling=cnv"])
        with pytest.raises(ConfigCompositionException, match="Could not override 'model.num_block'"):
            compose("train", overrides=["model=resnet", "model.num_block=3"])
