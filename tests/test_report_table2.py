"""`neode compare experiment=table2` on hand-written run records of the latent ODE / RNN sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from neode_cli.report.compare import CompareOptions, run
from neode_cli.report.records import collect
from neode_cli.report.table2 import TABLE2_PAPER, Table2, table2_rows

# Extrapolation RMSE per (model, n) for seed 0; seed 1 adds 0.02.
RMSE = {("latent_ode", 30): 0.50, ("latent_ode", 50): 0.40, ("latent_ode", 100): 0.20,
        ("rnn", 30): 3.00, ("rnn", 50): 1.00, ("rnn", 100): 0.30}


def write_run(folder: Path, *, model: str, n_obs: int, seed: int, rmse: float, status="completed",
              budget="cpu", experiment="table2", solver="dopri5") -> None:
    """A run folder as `neode train` writes it for the latent task (metrics.jsonl + metrics.json)."""
    folder.mkdir(parents=True, exist_ok=True)
    ode = model == "latent_ode"
    (folder / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 10.0, "test_rmse": rmse}) + "\n")
    summary = {
        "status": status, "error": None if status == "completed" else "solver failed", "task": "latent",
        "model": model, "data": "spirals", "solver": solver, "grad": "backprop", "rtol": 1e-3, "atol": 1e-3,
        "backend": "neode", "seed": seed, "optim": "adam", "lr": 0.01, "batch_size": 100,
        "params": 2784 if ode else 2354, "epochs": 150, "max_epochs": 150, "experiment": experiment,
        "budget": budget, "device": "cpu", "n_obs": n_obs, "n_window": 100, "n_extrap": 100, "n_train": 800,
        "n_test": 200, "nfe_forward": 50.0 if ode else 0.0, "nfe_backward": 50.0 if ode else 0.0,
        "epoch_time_s": 2.0, "test_rmse": rmse, "test_rmse_interp": rmse / 2,
        "config": {"data": {"n_spirals": 1000, "n_window": 100, "n_extrap": 100, "a": 0.0, "b": 0.3,
                            "theta_max": 18.85, "n_grid": 1000, "centre": 5.0, "noise_std": 0.3, "seed": 0,
                            "n_obs": n_obs},
                   "model": ({"cell": "gru", "rec_hidden": 25, "latent_dim": 4, "dyn_hidden": 20, "dec_hidden": 20,
                              "obs_dim": 2, "activation": "elu"} if ode else {"cell": "gru", "hidden": 25})},
    }
    (folder / "metrics.json").write_text(json.dumps(summary))


def write_sweep(root: Path, seeds=(0, 1)) -> Path:
    base = root / "table2" / "cpu"
    for (model, n), rmse in RMSE.items():
        for seed in seeds:
            write_run(base / f"{model}_n{n}_seed{seed}", model=model, n_obs=n, seed=seed, rmse=rmse + 0.02 * seed)
    return base


def test_rows_hold_means_over_seeds_and_the_papers_values(tmp_path):
    runs = collect([write_sweep(tmp_path)]).completed
    rows = table2_rows(runs)
    assert [r["label"] for r in rows] == ["RNN", "Latent ODE"]
    ode = rows[1]
    assert ode["runs"] == 6 and ode["seed_list"] == "0,1"
    assert ode["rmse_n30_mean"] == pytest.approx(0.51) and ode["rmse_n30_runs"] == 2
    assert ode["rmse_n30_std"] == pytest.approx(0.02 / 2 ** 0.5)
    assert ode["rmse_interp_n100_mean"] == pytest.approx(0.105)
    assert ode["paper_rmse_n30"] == TABLE2_PAPER["latent_ode"][30] == 0.1642
    assert rows[0]["paper_rmse_n100"] == 0.1813


def test_compare_experiment_table2_writes_table_figure_and_verdict(tmp_path):
    outputs = tmp_path / "outputs"
    base = write_sweep(outputs, seeds=(0, 1, 2))
    write_run(base / "rnn_n30_seed3", model="rnn", n_obs=30, seed=3, rmse=9.0, status="failed")
    report, out, files = run(CompareOptions(experiment="table2", root=str(outputs)))
    names = {f.name for f in files}
    assert {"table2.csv", "table2_rmse.png", "report.md", "report.html"} <= names
    with open(out / "table2.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["rnn", "latent_ode"]
    assert float(rows[0]["rmse_n30_mean"]) == pytest.approx(3.02)    # the failed run is not averaged in
    markdown = (out / "report.md").read_text()
    assert "| Latent ODE | 0.5200 ± 0.0200 (3) | 0.1642 |" in markdown
    assert "n=30: yes (0.5200 vs 3.0200, ratio 0.17; 3 and 3 seeds)" in markdown
    assert "rnn_n30_seed3" in markdown and "Budget: `cpu`." in markdown
    # Sentences come from the records: units, cell, splits, window lengths.
    assert "Test RMSE on the 100 time points after each test spiral's observation window" in markdown
    assert "RNN: 25 units (cell gru)" in markdown and "latent dimension 4" in markdown
    assert "1000 spirals (800 train, 200 test)" in markdown
    assert "Latent ODE gradients: backprop (paper: adjoint)" in markdown
    # Same records, same report.
    first = (out / "report.md").read_bytes(), (out / "table2_rmse.png").read_bytes()
    run(CompareOptions(experiment="table2", root=str(outputs)))
    assert ((out / "report.md").read_bytes(), (out / "table2_rmse.png").read_bytes()) == first


def test_a_missing_cell_or_model_is_shown_not_raised(tmp_path):
    base = tmp_path / "table2" / "cpu"
    write_run(base / "latent_ode_n30_seed0", model="latent_ode", n_obs=30, seed=0, rmse=0.5)
    write_run(base / "rnn_n50_seed0", model="rnn", n_obs=50, seed=0, rmse=1.0)
    runs = collect([base]).completed
    result = Table2().build(runs)
    text = " ".join(result.text)
    assert "n=30: –" in text and "n=50: –" in text
    table = result.tables[0]
    assert [c.cell(table.rows[1]) for c in table.columns[:5]] == ["Latent ODE", "0.5000 (1)", "0.1642", "–", "0.1502"]
    only_ode = Table2().build([r for r in runs if r.model == "latent_ode"])
    assert "needs both RNN and latent ODE" in " ".join(only_ode.text)


def test_the_ordering_verdict_is_withheld_below_three_seeds(tmp_path):
    runs = collect([write_sweep(tmp_path, seeds=(0, 1))]).completed
    text = " ".join(Table2().build(runs).text)
    assert "n=30: withheld: 2 and 2 seeds (needs at least 3 each); means 0.5100 vs 3.0100" in text
    assert "yes" not in text.split("the paper's claim")[1]


def test_a_solver_sweep_of_the_latent_ode_gets_one_row_per_solver(tmp_path):
    base = tmp_path / "table2" / "cpu"
    for seed in (0, 1, 2):
        for solver, rmse in (("dopri5", 0.5), ("bosh3", 0.7)):
            write_run(base / f"latent_ode_{solver}_seed{seed}", model="latent_ode", n_obs=30, seed=seed,
                      rmse=rmse + 0.01 * seed, solver=solver)
        write_run(base / f"rnn_seed{seed}", model="rnn", n_obs=30, seed=seed, rmse=3.0, solver="dopri5")
        write_run(base / f"rnn_bosh3_seed{seed}", model="rnn", n_obs=30, seed=seed + 3, rmse=3.0, solver="bosh3")
    result = Table2().build(collect([base]).completed)
    table = result.tables[0]
    cells = [[c.cell(r) for c in table.columns[:3]] for r in table.rows]
    # The RNN has no ODE: its solver setting does not split it (6 seeds, one row) and shows as "-".
    assert cells == [["RNN", "-", "3.0000 ± 0.0000 (6)"], ["Latent ODE", "bosh3", "0.7100 ± 0.0100 (3)"],
                     ["Latent ODE", "dopri5", "0.5100 ± 0.0100 (3)"]]
    assert "varying across them: Model: latent_ode, rnn; Solver: bosh3, dopri5)" in table.caption
    text = " ".join(result.text)
    assert "n=30 [solver=bosh3 vs solver=-]: yes (0.7100 vs 3.0000" in text
    assert "n=30 [solver=dopri5 vs solver=-]: yes (0.5100 vs 3.0000" in text
