"""The flows through the real CLI and configs: `neode train` runs, records and figures for both models."""

from __future__ import annotations

import pytest

from conftest import read_summary, run_neode


@pytest.mark.slow  # an end-to-end sweep; the default suite covers its parts faster
def test_fig4_smoke_sweep_trains_nf_and_cnf_and_records_kl_loss(tmp_path):
    sweep = tmp_path / "fig4"
    status = run_neode(["train", "-m", "experiment=fig4", "budget=smoke", f"hydra.sweep.dir={sweep}"])
    assert status == 0
    nf = read_summary(sweep / "planar_nf_units2_u1_seed0")
    cnf = read_summary(sweep / "cnf_units2_u1_seed0")
    for summary in (nf, cnf):
        assert summary["status"] == "completed" and summary["task"] == "density_matching"
        assert summary["experiment"] == "fig4" and summary["budget"] == "smoke" and summary["target"] == "u1"
        assert isinstance(summary["kl_loss"], float)
    assert nf["nfe_forward"] == 0 and cnf["nfe_forward"] > 0  # only the CNF solves an ODE
    assert cnf["config"]["model"]["units"] == 2 and nf["config"]["model"]["units"] == 2
    assert (sweep / "cnf_units2_u1_seed0" / "figures" / "snapshots.png").exists()


def test_model_cnf_alone_brings_its_toy_data_and_adam(tmp_path):
    run_dir = tmp_path / "cnf"
    status = run_neode(["train", "model=cnf", "model.units=2", "data.batch_size=16", "data.batches_per_epoch=2",
                        "data.n_test=32", "data.grid_size=6", "data.figure_samples=16", "solver.rtol=1e-3",
                        "solver.atol=1e-3", "trainer.max_epochs=1", "trainer.progress=false", "logger=none",
                        f"hydra.run.dir={run_dir}"])
    assert status == 0
    summary = read_summary(run_dir)
    assert summary["task"] == "density_ml" and summary["dataset"] == "circles" and summary["optim"] == "adam"
    assert summary["test_nll"] > 0 and summary["nfe_forward"] > 0
    assert (run_dir / "figures" / "density.png").exists()
