"""The two-command reproduction on budget=smoke: `neode train -m experiment=... budget=smoke`, then compare."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import run_neode

from neode_cli.report.compare import main as compare_main


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # an end-to-end sweep; the default suite covers its parts faster
def test_table1_and_fig3_smoke_sweeps_then_compare(tiny_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # sweeps write to ./outputs/<experiment>/<budget>/
    data = f"data.root={tiny_mnist}"  # the tiny IDX dataset instead of Fashion-MNIST: seconds, not minutes
    assert run_neode(["train", "-m", "experiment=table1", "budget=smoke", data]) == 0
    assert run_neode(["train", "-m", "experiment=fig3", "budget=smoke", data]) == 0
    runs = sorted(p.parent.relative_to(tmp_path).as_posix() for p in tmp_path.glob("outputs/*/*/*/metrics.json"))
    assert runs == ["outputs/fig3/smoke/adams_tol0.001_seed0", "outputs/fig3/smoke/adams_tol0.1_seed0",
                    "outputs/fig3/smoke/dopri5_tol0.001_seed0", "outputs/fig3/smoke/dopri5_tol0.1_seed0",
                    "outputs/table1/smoke/mlp_seed0", "outputs/table1/smoke/odenet_seed0",
                    "outputs/table1/smoke/resnet_seed0", "outputs/table1/smoke/rknet_seed0"]
    record = json.loads((tmp_path / "outputs/table1/smoke/rknet_seed0/metrics.json").read_text())
    assert (record["experiment"], record["budget"], record["grad"], record["epochs"]) == ("table1", "smoke", "backprop", 1)
    capsys.readouterr()

    # Experiment mode finds outputs/table1/smoke by itself.
    out = compare_main({"experiment": "table1"})
    assert out.as_posix() == "outputs/reports/table1-smoke"
    printed = capsys.readouterr().out
    assert "section table1: 4 runs" in printed and "Runs: 4 completed, 0 failed or incomplete" in printed
    table = _rows(out / "table1.csv")
    assert [r["model"] for r in table] == ["mlp", "resnet", "rknet", "odenet"]
    assert all(r["seeds"] == "1" and float(r["test_error_mean"]) >= 0 for r in table)
    assert float(table[3]["nfe_forward"]) > 0 and float(table[3]["nfe_backward"]) > 0  # odenet integrates
    assert table[0]["nfe_forward"] == "0.0"  # the MLP has no ODE
    md = (out / "report.md").read_text()
    assert "Budget: `smoke`." in md and "Epochs: 1 (paper: 160)" in md

    # Folder mode through the CLI, over both experiments.
    assert run_neode(["compare", "runs=[outputs/table1/smoke,outputs/fig3/smoke]", "out=rep"]) == 0
    assert {"table1.csv", "fig3.csv", "fig3a.png", "fig3d.png", "report.html"} <= {p.name for p in (tmp_path / "rep").iterdir()}
    fig3 = _rows(tmp_path / "rep" / "fig3.csv")
    assert [(r["cfg_solver"], float(r["rtol"])) for r in fig3] == [("adams", 0.1), ("adams", 0.001),
                                                                ("dopri5", 0.1), ("dopri5", 0.001)]
    assert all(float(r["ode_error_mean"]) >= 0 and float(r["nfe_backward"]) > 0 for r in fig3)
    fig3_record = json.loads((tmp_path / "outputs/fig3/smoke/adams_tol0.001_seed0/metrics.json").read_text())
    assert (fig3_record["solver"], fig3_record["rtol"], fig3_record["atol"]) == ("adams", 0.001, 0.001)
    epochs = [r for r in _rows(tmp_path / "rep" / "epochs.csv") if r["run_id"].startswith("fig3/")]
    assert [r["epoch"] for r in epochs] == ["1", "2"] * 4


def test_the_quick_start_runs_offline_and_reports_table2(tmp_path, monkeypatch, capsys):
    """The README's first commands (on budget=smoke): generated spirals, no download, a Table 2 report."""
    monkeypatch.chdir(tmp_path)
    assert run_neode(["train", "-m", "experiment=quickstart", "budget=smoke"]) == 0
    runs = sorted(p.parent.name for p in tmp_path.glob("outputs/quickstart/smoke/*/metrics.json"))
    assert runs == ["latent_ode_seed0", "rnn_seed0"]
    capsys.readouterr()
    out = compare_main({"experiment": "quickstart"})
    assert out.as_posix() == "outputs/reports/quickstart-smoke"
    assert "section table2: 2 runs" in capsys.readouterr().out
    table = _rows(out / "table2.csv")
    assert [(r["model"], r["rmse_n30_runs"]) for r in table] == [("rnn", "1"), ("latent_ode", "1")]
    md = (out / "report.md").read_text()
    assert "n=30: withheld: 1 and 1 seeds (needs at least 3 each)" in md  # one seed on smoke: no verdict
