"""The `neode` command: help, Hydra's flags, unknown commands and options, a missing conf/ folder."""

from __future__ import annotations

import pytest

from neode_cli.cli import check_group_choices, find_config_dir

from conftest import CONF, run_neode


def test_help_lists_the_commands(capsys):
    assert run_neode(["--help"]) == 0
    out = capsys.readouterr().out
    assert "usage: neode <command>" in out and "train" in out and "compare" in out


def test_no_arguments_prints_the_usage(capsys):
    assert run_neode([]) == 0
    assert "commands:" in capsys.readouterr().out


def test_unknown_command_is_one_line(capsys):
    assert run_neode(["fit"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["neode: error: unknown command 'fit'; commands: train, compare (see neode --help)"]


def test_train_help_is_hydras_app_help(capsys):
    assert run_neode(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "neode train:" in out
    for group in ("model:", "solver:", "grad:", "data:", "optim:", "trainer:", "logger:"):
        assert group in out
    assert "dopri5" in out and "adjoint_seminorm" in out


def test_cfg_job_prints_the_composed_config_without_running(capsys, tmp_path):
    code = run_neode(["train", "--cfg", "job", "model=resnet", "solver=rk4", f"hydra.run.dir={tmp_path / 'r'}"])
    assert code == 0
    out = capsys.readouterr().out
    assert "_target_: neode_cli.models.resnet.ResNet" in out and "method: rk4" in out and "step_size: 0.1" in out
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("override", "message"), [
    ("model=transformer", "neode: error: unknown model 'transformer'; valid: "),
    ("solver=rk45", "neode: error: unknown solver 'rk45'; valid: adams, adaptive_heun, bosh3, dopri5"),
    ("grad=reinforce", "neode: error: unknown grad 'reinforce'; valid: adjoint, adjoint_seminorm, backprop"),
])
def test_unknown_option_is_one_line_before_hydra_starts(capsys, override, message):
    assert run_neode(["train", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)


def test_unknown_option_inside_a_sweep_list_is_caught(capsys):
    assert run_neode(["train", "-m", "model=mlp,resnt"]) == 2
    assert "unknown model 'resnt'" in capsys.readouterr().err


def test_choice_check_leaves_what_it_cannot_judge_to_hydra():
    # Nested keys, appends, interpolations and sweep functions are Hydra's business.
    check_group_choices(CONF, ["solver.rtol=1e-4", "+model.extra=1", "model=${oc.env:M}", "seed=range(3)",
                               "hydra.run.dir=x", "model=null"])


def test_a_typo_in_a_key_fails_with_hydras_message(capsys):
    assert run_neode(["train", "solver.rtool=1e-3"]) == 1
    err = capsys.readouterr().err
    assert "rtool" in err and "Traceback" not in err


def test_missing_config_folder_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("NEODE_CONFIG_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="pip install -e"):
        find_config_dir()
    assert run_neode(["train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config folder" in err[0] and "NEODE_CONFIG_DIR" in err[0]


def test_config_folder_is_found_next_to_the_package(monkeypatch):
    monkeypatch.delenv("NEODE_CONFIG_DIR", raising=False)
    assert find_config_dir() == CONF


def test_an_experiment_without_m_says_to_add_it_and_runs_nothing(capsys, tmp_path, monkeypatch):
    from conftest import run_neode

    monkeypatch.chdir(tmp_path)
    assert run_neode(["train", "experiment=table1", "budget=smoke"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("neode: error: experiment=table1 is a sweep: add -m "
                   "(neode train -m experiment=table1 budget=smoke)")
    assert not (tmp_path / "outputs").exists()  # no default job ran
    assert run_neode(["train", "experiment=table1", "budget=smoke", "--cfg", "job"]) == 0  # inspecting is fine
