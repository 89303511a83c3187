"""The follow-up axes from the command line: grad=checkpoint, reg=, model.augment_dim, model.learn_t1."""

import pytest

from conftest import read_summary, run_neode
from test_latent_task import TINY_CLI

#: A CNF run of seconds: 2 planar units, 2 batches of 16, tiny evaluation and figures.
TINY_CNF = ["model=cnf", "model.units=2", "data.batch_size=16", "data.batches_per_epoch=2", "data.n_test=32",
            "data.grid_size=6", "data.figure_samples=16", "solver.rtol=1e-3", "solver.atol=1e-3",
            "trainer.max_epochs=1", "trainer.progress=false", "logger=none", "trainer.device=cpu"]


def test_checkpoint_gradient_for_odenet_saves_less_than_backprop(train_run):
    summaries = {}
    for grad in ("backprop", "checkpoint"):
        code, run_dir = train_run(f"grad={grad}", "logger=none", "solver.rtol=1e-4", "solver.atol=1e-4",
                                  "trainer.limit_train_batches=1", name=grad)
        assert code == 0
        summaries[grad] = read_summary(run_dir)
    bp, ck = summaries["backprop"], summaries["checkpoint"]
    assert ck["grad"] == "checkpoint" and ck["status"] == "completed"
    assert ck["nfe_forward"] == bp["nfe_forward"] and ck["nfe_backward"] == bp["nfe_backward"]
    assert ck["train_loss"] == pytest.approx(bp["train_loss"], rel=1e-6)
    assert ck["peak_memory_mb"] < bp["peak_memory_mb"]


@pytest.mark.parametrize("model", ["latent_ode", "cnf"])
def test_checkpoint_gradient_for_latent_ode_and_cnf(model, tmp_path):
    args = [f"model={model}", *TINY_CLI] if model == "latent_ode" else TINY_CNF
    run_dir = tmp_path / model
    assert run_neode(["train", *args, "grad=checkpoint", f"hydra.run.dir={run_dir}"]) == 0
    summary = read_summary(run_dir)
    assert summary["grad"] == "checkpoint" and summary["nfe_backward"] > 0


def test_checkpoint_with_torchdiffeq_backend_is_a_config_error(train_run):
    code, run_dir = train_run("grad=checkpoint", "solver.backend=torchdiffeq", "logger=none")
    assert code == 2
    assert "solver.backend=neode" in read_summary(run_dir)["error"]


def test_reg_rnode_for_odenet_latent_ode_and_cnf_records_weights_and_values(train_run, tmp_path):
    code, run_dir = train_run("reg=rnode", "logger=none", "trainer.limit_train_batches=1")
    assert code == 0
    runs = {"odenet": read_summary(run_dir)}
    for model, args in (("latent_ode", [f"model=latent_ode", *TINY_CLI]), ("cnf", TINY_CNF)):
        folder = tmp_path / model
        assert run_neode(["train", *args, "reg=rnode", f"hydra.run.dir={folder}"]) == 0
        runs[model] = read_summary(folder)
    for model, summary in runs.items():
        assert summary["reg_kinetic_weight"] == 0.01 and summary["reg_jacobian_weight"] == 0.01, model
        assert summary["train_reg_kinetic"] > 0 and summary["train_reg_jacobian"] > 0, model
        assert summary["config"]["reg"] == {"kinetic_weight": 0.01, "jacobian_weight": 0.01}


def test_reg_for_a_model_without_an_ode_is_a_config_error(train_run):
    code, run_dir = train_run("reg=kinetic", "logger=none", model="mlp")
    assert code == 2
    assert "reg=none" in read_summary(run_dir)["error"]


def test_learn_t1_records_the_learned_end_time(tmp_path):
    run_dir = tmp_path / "t1"
    assert run_neode(["train", *TINY_CNF, "model.learn_t1=true", "model.t1=0.5", "optim.lr=0.05",
                      f"hydra.run.dir={run_dir}"]) == 0
    summary = read_summary(run_dir)
    assert summary["learn_t1"] is True
    assert summary["t1"] > 0 and summary["t1"] != pytest.approx(0.5, abs=1e-5)
