"""The RNODE report section: one row per regulariser weight, NFE and NLL relative to the unregularised run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from conftest import run_neode
from neode_cli.report.compare import CompareOptions, run
from neode_cli.report.records import collect
from neode_cli.report.rnode import rnode_rows


def write_rnode_run(folder: Path, weight: float, seed: int, nll: float, test_nfe: float) -> Path:
    """A run folder as `neode train -m experiment=rnode` writes it (one epoch of 100 batches)."""
    folder.mkdir(parents=True, exist_ok=True)
    row = {"epoch": 1, "train_loss": nll, "batches": 100, "nfe_forward": test_nfe + 10, "nfe_backward": test_nfe,
           "test_nll": nll, "test_nfe_forward": test_nfe}
    (folder / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    reg = {"kinetic_weight": weight, "jacobian_weight": weight}
    summary = {"status": "completed", "error": None, "task": "density_ml", "model": "cnf", "data": "toy2d",
               "dataset": "8gaussians", "solver": "dopri5", "grad": "backprop", "rtol": 1e-5, "atol": 1e-5,
               "backend": "neode", "seed": seed, "optim": "adam", "lr": 3e-3, "batch_size": 256, "epochs": 1,
               "max_epochs": 1, "batches_per_epoch": 100, "experiment": "rnode", "budget": "cpu",
               "reg_kinetic_weight": weight, "reg_jacobian_weight": weight, "train_reg_kinetic": 1.0 / (1 + weight),
               "train_reg_jacobian": 2.0 / (1 + weight), "train_time_s": 60.0, "n_test": 5000,
               "config": {"model": {"field": "mlp", "trace": "hutchinson"}, "reg": reg, "data": {"name": "8gaussians"}},
               **{k: v for k, v in row.items() if k not in ("epoch", "batches")}}
    (folder / "metrics.json").write_text(json.dumps(summary))
    return folder


def records(tmp_path: Path):
    root = tmp_path / "outputs" / "rnode" / "cpu"
    for weight, nll, nfe in ((0.0, 2.90, 80.0), (0.01, 2.95, 40.0), (0.1, 3.10, 26.0)):
        for seed in (0, 1):
            write_rnode_run(root / f"cnf_8gaussians_lambda{weight}_seed{seed}", weight, seed, nll + 0.01 * seed,
                            nfe + seed)
    return collect([root])


def test_rows_are_one_per_weight_with_nfe_and_nll_relative_to_the_unregularised_run(tmp_path):
    rows = rnode_rows(records(tmp_path).completed)
    assert [r["kinetic_weight"] for r in rows] == [0.0, 0.01, 0.1]
    assert [r["seeds"] for r in rows] == [2, 2, 2]
    assert rows[0]["test_nfe_forward_vs_unregularised"] == 1.0
    assert abs(rows[1]["test_nfe_forward_vs_unregularised"] - 40.5 / 80.5) < 1e-12
    assert abs(rows[2]["test_nll_vs_unregularised"] - 0.20) < 1e-9


def test_compare_experiment_rnode_writes_table_and_figure(tmp_path):
    records(tmp_path)
    report, out, files = run(CompareOptions(experiment="rnode", root=str(tmp_path / "outputs"),
                                            out=str(tmp_path / "report")))
    assert [p.name for p in report.parts] == ["rnode"] and report.parts[0].error is None
    with open(tmp_path / "report" / "rnode.csv") as f:
        table = list(csv.DictReader(f))
    assert [t["kinetic_weight"] for t in table] == ["0.0", "0.01", "0.1"]
    assert (tmp_path / "report" / "rnode_nfe_nll_vs_weight.png").exists()
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "Finlay" in markdown and "Test NFE / λ=0" in markdown


def test_rnode_smoke_sweep_then_compare(tmp_path):
    sweep = tmp_path / "outputs" / "rnode" / "smoke"
    assert run_neode(["train", "-m", "experiment=rnode", "budget=smoke", f"hydra.sweep.dir={sweep}"]) == 0
    folders = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").exists())
    assert folders == ["cnf_8gaussians_lambda0.0_seed0", "cnf_8gaussians_lambda0.1_seed0"]
    summary = json.loads((sweep / folders[1] / "metrics.json").read_text())
    assert summary["reg_jacobian_weight"] == 0.1 and summary["train_reg_jacobian"] > 0
    report, _, _ = run(CompareOptions(experiment="rnode", root=str(tmp_path / "outputs"), out=str(tmp_path / "r")))
    assert report.parts[0].error is None


def test_same_seed_comparison_pairs_each_run_with_the_unregularised_run_of_its_seed(tmp_path):
    # Seed 1 is a worse draw for every weight (+0.2 nats); pairing by seed removes it, means over seeds do not.
    root = tmp_path / "outputs" / "rnode" / "cpu"
    for weight, nlls, nfes in ((0.0, (3.0, 3.2), (60.0, 70.0)), (0.03, (3.01, 3.23), (50.0, 72.0))):
        for seed, (nll, nfe) in enumerate(zip(nlls, nfes)):
            write_rnode_run(root / f"cnf_8gaussians_lambda{weight}_seed{seed}", weight, seed, nll, nfe)
    rows = rnode_rows(collect([root]).completed)
    assert "paired_seeds" not in rows[0]
    regularised = rows[1]
    assert regularised["paired_seeds"] == 2
    assert abs(regularised["paired_nll_diff"] - 0.02) < 1e-12             # (0.01 + 0.03) / 2
    assert abs(regularised["paired_nll_diff_std"] - 0.02 ** 0.5 * 0.1) < 1e-12  # sd of 0.01, 0.03
    assert regularised["paired_fewer_nfe"] == 1                            # seed 1: 72 > 70
