"""`neode train` with the paper's solver family (Adams, SciPy's LSODA) on the tiny MNIST fixture."""

import pytest

from conftest import read_summary


@pytest.mark.parametrize("solver,grad", [("implicit_adams", "backprop"), ("explicit_adams", "adjoint")])
def test_train_runs_with_the_solver(train_run, solver, grad):
    code, run_dir = train_run(f"solver={solver}", f"grad={grad}", "trainer.limit_train_batches=1",
                              "trainer.limit_test_batches=1")
    assert code == 0
    summary = read_summary(run_dir)
    assert summary["solver"] == solver
    assert summary["nfe_forward"] > 0


def test_train_runs_with_lsoda_and_refuses_backprop(train_run, capsys):
    code, run_dir = train_run("solver=lsoda", "trainer.limit_train_batches=1", "trainer.limit_test_batches=1")
    assert code == 0
    summary = read_summary(run_dir)
    assert summary["solver"] == "scipy_solver" and summary["nfe_forward"] > 0 and summary["nfe_backward"] > 0
    code, _ = train_run("solver=lsoda", "grad=backprop", name="backprop")
    assert code == 2
    assert "use grad=adjoint" in capsys.readouterr().err


@pytest.mark.parametrize("grad", ["backprop", "adjoint"])
def test_train_runs_with_adaptive_adams(train_run, grad):
    code, run_dir = train_run("solver=adams", f"grad={grad}", "trainer.limit_train_batches=1",
                              "trainer.limit_test_batches=1", name=grad)
    assert code == 0
    summary = read_summary(run_dir)
    assert summary["solver"] == "adams" and summary["nfe_forward"] > 0 and summary["nfe_backward"] > 0
