"""The real configs compose with Hydra's compose API: every option of every group, and bad values fail early."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

import neode_cli.config  # noqa: F401 - registers the schemas
from neode_cli.config import ConfigError, FIXED_GRID_METHODS, validate

from conftest import CONF

#: Groups whose options `neode train` composes (everything in conf/ except Hydra's own settings).
TRAIN_GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra",))
OPTIONS = [(g, p.stem) for g in TRAIN_GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.fixture(scope="module", autouse=True)
def _hydra_over_conf():
    """Hydra initialised once over the repository's conf/ for this module's compose calls."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def compose_train(*overrides: str):
    """The composed `train` config with ``overrides`` (no Hydra run, no side effects)."""
    return compose(config_name="train", overrides=list(overrides))


def test_groups_of_the_issue_are_present():
    for group in ("model", "solver", "grad", "data", "optim", "trainer", "logger"):
        assert group in TRAIN_GROUPS
    solvers = {p.stem for p in (CONF / "solver").glob("*.yaml")}
    assert solvers >= {"euler", "midpoint", "heun2", "heun3", "rk4", "adaptive_heun", "fehlberg2", "bosh3",
                       "dopri5", "tsit5", "dopri8"}
    assert {p.stem for p in (CONF / "grad").glob("*.yaml")} == {"backprop", "adjoint", "adjoint_seminorm", "checkpoint"}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_validates(group, option):
    # An experiment takes its sizes from a budget (conf/budget/<experiment>/<budget>.yaml): compose the
    # one the tests use.
    extra = ["budget=smoke"] if group == "experiment" else []
    cfg = compose_train(f"{group}={option}", *extra)
    validate(cfg)  # the defaults of every option must be a config that can run
    if group == "solver":
        assert cfg.solver.method == option
        assert cfg.solver.rtol == cfg.solver.atol == 1e-3
        assert (cfg.solver.step_size is not None) == (option in FIXED_GRID_METHODS)
    if group == "grad":
        assert cfg.grad.method == option
    if group in ("model", "data"):
        assert "_target_" in cfg[group]


def test_defaults_follow_the_paper_protocol():
    cfg = compose_train()
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.batch_reference) == ("sgd", 0.1, 0.9, 128)
    assert list(cfg.optim.milestones) == [60, 100, 140] and cfg.optim.gamma == 0.1
    assert cfg.trainer.max_epochs == 160 and cfg.trainer.device == "auto" and cfg.trainer.resume is False
    assert cfg.solver.method == "dopri5" and cfg.grad.method == "adjoint" and cfg.seed == 0


def test_limits_take_fractions_and_counts():
    cfg = compose_train("trainer.limit_train_batches=0.25", "trainer.limit_test_batches=3")
    assert cfg.trainer.limit_train_batches == 0.25 and isinstance(cfg.trainer.limit_test_batches, int)
    validate(cfg)


@pytest.mark.parametrize("override", ["solver.rtool=1e-3", "trainer.max_epoch=3", "seeds=1"])
def test_a_typo_fails_at_compose(override):
    with pytest.raises(ConfigCompositionException) as info:
        compose_train(override)
    assert override.split("=")[0].split(".")[-1] in str(info.value)


@pytest.mark.parametrize("override", ["trainer.max_epochs=ten", "solver.rtol=tight", "seed=zero",
                                      "trainer.limit_train_batches=all"])
def test_a_wrong_type_fails_at_compose(override):
    with pytest.raises((ConfigCompositionException, ValidationError, ConfigKeyError)):
        compose_train(override)


def test_an_unknown_option_fails_at_compose():
    with pytest.raises(Exception, match="solver/nosuch"):
        compose_train("solver=nosuch")


@pytest.mark.parametrize(("overrides", "message"), [
    (["solver.method=nosuch"], "unknown solver method 'nosuch'; valid: euler"),
    (["solver.rtol=-1e-3"], "solver.rtol=-0.001 is negative"),
    (["solver.atol=-1"], "solver.atol=-1.0 is negative"),
    (["solver=rk4", "solver.step_size=null"], "fixed-step solver 'rk4' needs a step size: add solver.step_size="),
    (["solver=euler", "solver.step_size=0"], "solver.step_size=0.0 must be positive"),
    (["solver.step_size=0.1"], "solver.step_size applies to fixed-step methods only"),
    (["solver=rk4", "solver.first_step=0.1"], "solver.first_step applies to adaptive methods only"),
    (["solver.rtol=0", "solver.atol=0"], "both 0"),
    (["grad.method=reverse"], "unknown gradient method grad.method='reverse'"),
    (["optim.name=lbfgs"], "unknown optimizer optim.name='lbfgs'; valid: sgd, adam"),
    (["optim.lr=0"], "optim.lr=0.0 must be positive"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be at least 1"),
    (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5 is invalid"),
    (["trainer.limit_test_batches=0"], "trainer.limit_test_batches=0 is invalid"),
    (["trainer.device=tpu"], "unknown trainer.device='tpu'"),
    (["trainer.threads=0"], "trainer.threads=0 must be at least 1"),
    (["logger.name=wandb"], "unknown logger.name='wandb'"),
])
def test_validate_rejects_values_with_one_line(overrides, message):
    cfg = compose_train(*overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
