"""The real configs compose with Hydra's compose API: every option of every group, and bad values fail early."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException

import neode_cli.config  # noqa: F401 - registers the schemas
from neode_cli.config import ConfigError, validate
from neode_cli.ode import FIXED_METHODS as FIXED_GRID_METHODS

from conftest import CONF, read_summary, run_neode

#: Groups whose options `neode train` composes (everything in conf/ except Hydra's own settings).
TRAIN_GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra",))
OPTIONS = [(g, p.stem) for g in TRAIN_GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def compose_train(*overrides: str):
    """The composed `train` config with ``overrides`` (no Hydra run, no side effects). Hydra is initialised per
    call, so the in-process `neode train` runs below (which clear Hydra's global state) do not disturb it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
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
        assert cfg.solver.method == {"lsoda": "scipy_solver"}.get(option, option)
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
                                      "trainer.limit_train_batches=all", "data.crop_padding=1.5"])
def test_a_wrong_type_fails_at_compose(override):
    key, value = override.split("=")
    with pytest.raises(ConfigCompositionException) as info:
        compose_train(override)
    cause = str(info.value.__cause__)  # OmegaConf's own words: the value, its type, the key
    assert f"Value '{value}'" in cause and f"full_key: {key}" in cause


def test_an_unknown_option_fails_at_compose():
    with pytest.raises(MissingConfigException, match="Could not find 'solver/nosuch'"):
        compose_train("solver=nosuch")


@pytest.mark.parametrize(("overrides", "message"), [
    # The solver's own words (neode_cli.ode), after the key it refused.
    (["solver.method=nosuch"], "solver.method=nosuch: unknown ODE method 'nosuch'; valid methods: euler"),
    (["solver.rtol=-1e-3"], "solver.rtol=-0.001: rtol must be a finite number >= 0"),
    (["solver.atol=-1"], "solver.atol=-1.0: atol must be a finite number >= 0"),
    (["solver.rtol=nan"], "solver.rtol=nan: rtol must be a finite number"),
    (["solver.atol=inf"], "solver.atol=inf: atol must be a finite number"),
    (["solver=rk4", "solver.step_size=null"], "fixed-step solver 'rk4' needs a step size: add solver.step_size="),
    (["solver=euler", "solver.step_size=0"], "solver.step_size=0.0: options['step_size'] must be > 0"),
    (["solver.step_size=0.1"], "solver.step_size=0.1: unknown option(s) 'step_size' for method 'dopri5'"),
    (["solver=rk4", "solver.first_step=0.1"], "solver.first_step=0.1: unknown option(s) 'first_step' for method 'rk4'"),
    (["solver.rtol=0", "solver.atol=0"], "solver.atol=0.0: rtol and atol cannot both be 0"),
    (["solver.max_num_steps=0"], "solver.max_num_steps=0: options['max_num_steps'] must be a positive integer"),
    (["solver.safety=1.5"], "solver.safety=1.5: options['safety'] must be in (0.0, 1.0]"),
    (["solver.backend=jax"], "solver.backend=jax: unknown backend 'jax'; valid: neode, torchdiffeq"),
    (["grad.method=reverse"], "grad.method=reverse: unknown gradient method 'reverse'"),
    (["optim.name=lbfgs"], "unknown optimizer optim.name='lbfgs'; valid: sgd, adam"),
    (["optim.lr=0"], "optim.lr=0.0 must be positive"),
    (["optim.lr=nan"], "optim.lr=nan must be positive"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be at least 1"),
    (["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5 is invalid"),
    (["trainer.limit_test_batches=0"], "trainer.limit_test_batches=0 is invalid"),
    (["trainer.device=tpu"], "unknown trainer.device='tpu'"),
    (["trainer.threads=0"], "trainer.threads=0 must be at least 1"),
    (["logger.name=wandb"], "unknown logger.name='wandb'"),
    (["seed=-1"], "seed=-1 is out of range"),
    ([f"seed={2 ** 32}"], f"seed={2 ** 32} is out of range"),
    # The task builder's own checks (check_options of its module), before any data is loaded or generated.
    (["data.batch_size=0"], "data.batch_size=0 must be an integer >= 1"),
    (["data.crop_padding=-1"], "data.crop_padding=-1 must be an integer >= 0"),
    (["data.std=0"], "data.std=0.0 must be a finite number > 0"),
    (["data.name=cifar10"], "data.name='cifar10' is unknown; valid: mnist, fashion_mnist"),
    (["data=spirals", "data.n_obs=101"], "data.n_obs=101 must be between 1 and n_window=100"),
    (["data=spirals", "data.n_train=1000"], "data.n_train=1000 must be between 1 and n_spirals - 1"),
    (["data=spirals", "data.test_batch_size=0"], "data.test_batch_size=0 must be an integer >= 1"),
    (["data=toy2d", "data.name=spiral"], "data.name='spiral' is unknown; valid: circles"),
    (["data=toy2d", "data.batches_per_epoch=0"], "data.batches_per_epoch=0 must be an integer >= 1"),
    (["data=energy", "data.target=u5"], "data.target='u5' is unknown; valid: u1, u2, u3, u4"),
    (["data=energy", "data.eval_batch_size=-1"], "data.eval_batch_size=-1 must be an integer >= 1"),
])
def test_validate_rejects_values_with_one_line(overrides, message):
    cfg = compose_train(*overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_validate_returns_the_integrator_the_groups_describe():
    integrator = validate(compose_train("solver=rk4", "solver.step_size=0.25", "grad=backprop"))
    assert (integrator.method, integrator.gradient, integrator.options) == ("rk4", "backprop", {"step_size": 0.25})
    integrator = validate(compose_train("solver.rtol=1e-5", "solver.max_num_steps=50"))
    assert (integrator.method, integrator.rtol, integrator.atol) == ("dopri5", 1e-5, 1e-3)
    assert integrator.options == {"max_num_steps": 50} and integrator.gradient == "adjoint"


# ------------------------------------------------------------------------------------ one source for defaults

#: The loop groups: their schema is the root schema's field of the same name.
LOOP_SCHEMAS = {"solver": neode_cli.config.SolverSchema, "grad": neode_cli.config.GradSchema,
                "optim": neode_cli.config.OptimSchema, "trainer": neode_cli.config.TrainerSchema,
                "logger": neode_cli.config.LoggerSchema}


def _schema_defaults(group: str, option: str):
    """The defaults an option's yaml starts from: its loop schema, or the generated ``<option>_schema``."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    if group in LOOP_SCHEMAS:
        return OmegaConf.structured(LOOP_SCHEMAS[group])
    return ConfigStore.instance().repo[group][f"{option}_schema.yaml"].node


STATED = [(g, p.stem) for g in (*LOOP_SCHEMAS, "model", "data") for p in sorted((CONF / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), STATED, ids=[f"{g}={o}" for g, o in STATED])
def test_no_yaml_restates_a_default(group, option):
    """conf/<group>/<option>.yaml states only what the option changes: a value equal to the schema's default
    (the constructor's, for model and data) would be a second copy that can drift."""
    from omegaconf import OmegaConf

    stated = OmegaConf.load(CONF / group / f"{option}.yaml")
    defaults = _schema_defaults(group, option)
    restated = [key for key in stated if key != "defaults" and key in defaults and not OmegaConf.is_interpolation(stated, key)
                and not OmegaConf.is_missing(defaults, key) and stated[key] == defaults[key]]
    assert restated == [], f"conf/{group}/{option}.yaml restates the default of {restated}"


@pytest.mark.parametrize("option", sorted(neode_cli.config.TARGETS["model"]) + sorted(neode_cli.config.TARGETS["data"]))
def test_the_config_holds_every_argument_of_what_it_builds(option):
    """`neode train --cfg job` shows every argument of the model or task builder, with its default where the
    yaml does not change it: the schema is the signature."""
    import enum
    import inspect

    from omegaconf import OmegaConf

    from neode_cli.config import TARGETS, _locate, config_parameters

    group = "model" if option in TARGETS["model"] else "data"
    cfg = compose_train(f"{group}={option}")
    expected = {}
    for path in TARGETS[group][option]:
        for key, parameter in config_parameters(_locate(path)).items():
            expected.setdefault(key, parameter.default)
    assert set(cfg[group]) - {"_target_"} == set(expected)
    yaml = OmegaConf.load(CONF / group / f"{option}.yaml")
    for key, default in expected.items():
        if key in yaml or default is inspect.Parameter.empty:
            continue
        value = OmegaConf.to_object(cfg[group][key]) if OmegaConf.is_config(cfg[group][key]) else cfg[group][key]
        value = value.name if isinstance(value, enum.Enum) else value
        assert value == (list(default) if isinstance(default, tuple) else default), key


def _first(a: int = 1, b: int = 2):
    """A builder for the test below."""


def _second(b: int = 3):
    """What ``_first`` would forward to, with a different default for ``b``."""


def test_one_default_per_argument_across_forwarded_callables():
    from neode_cli.config import target_schema

    with pytest.raises(TypeError, match="b defaults to 2 .* and to 3 .*: state it once"):
        target_schema("test_config._first", "test_config._second")
    assert {f.name for f in __import__("dataclasses").fields(target_schema("test_config._first"))} == {"_target_", "a", "b"}


def test_classification_defaults_are_the_constructors():
    """The drift the issue names: ode_error_samples was 128 in the yaml and 1000 in the constructor."""
    import inspect

    from neode_cli.tasks.classification import ClassificationTask

    cfg = compose_train("data=mnist")
    assert cfg.data.ode_error_samples == inspect.signature(ClassificationTask).parameters["ode_error_samples"].default


# ------------------------------------------------------------------- refused before any work, with exit 2

@pytest.mark.parametrize("override", [
    "solver.rtol=nan", "solver.atol=inf", "seed=-1", f"seed={2 ** 32}", "data.crop_padding=-1", "data.batch_size=0",
    "data.test_batch_size=-1", "solver.method=rk45", "solver=rk4 solver.step_size=null", "trainer.max_epochs=0", "trainer.max_epochs=-3", "trainer.limit_train_batches=1.5",
    "trainer.limit_train_batches=0", "trainer.limit_test_batches=-2", "optim.lr=0", "optim.lr=-0.1", "optim.lr=nan",
])
def test_neode_train_refuses_a_value_that_cannot_work(override, tmp_path, capsys):
    """Exit 2 and one line naming the key, before any work: the data folder does not exist (loading it would
    be a different error) and nothing is written but the failed run record."""
    run_dir = tmp_path / "run"
    code = run_neode(["train", f"data.root={tmp_path / 'no_data'}", "data.download=false", "trainer.progress=false",
                      "logger=none", f"hydra.run.dir={run_dir}", *override.split()])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(err) == 1 and err[0].startswith("neode: error: ") and override.split()[-1].split("=")[0] in err[0], err
    assert not (tmp_path / "no_data").exists() and not (run_dir / "checkpoint.pt").exists()
    assert read_summary(run_dir)["status"] == "failed"
