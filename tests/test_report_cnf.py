"""CNF report sections (Figure 4, Figure 5, FFJORD toys) built from hand-written run records."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from neode_cli.data.energies import u1
from neode_cli.report.cnf import LOG_NORMALISERS, Fig4, Fig5, FfjordToys, fig4_pairs, fig4_rows, iterations
from neode_cli.report.compare import CompareOptions, run
from neode_cli.report.records import collect


def write_flow_run(folder: Path, *, model: str, experiment: str | None, units: int = 8, seed: int = 0,
                   target: str | None = None, dataset: str | None = None, loss: float = 0.0,
                   field: str = "planar", status: str = "completed") -> Path:
    """A run folder as `neode train` writes it for a density task (2 epochs of 50 batches)."""
    folder.mkdir(parents=True, exist_ok=True)
    ode = model == "cnf"
    metric = "kl_loss" if target else "test_nll"
    rows = [{"epoch": e + 1, "train_loss": loss + 1 - e, "batches": 50, "nfe_forward": 26.0 if ode else 0.0,
             "nfe_backward": 20.0 if ode else 0.0, "epoch_time_s": 3.0, metric: loss + 1 - e} for e in range(2)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model_cfg = {"units": units, "field": field, "trace": "exact", "hidden_dims": [64, 64, 64],
                 "layer": "concatsquash"} if ode else {"units": units}
    summary = {
        "status": status, "error": None, "task": "density_matching" if target else "density_ml", "model": model,
        "data": "energy" if target else "toy2d", "solver": "dopri5", "grad": "backprop", "rtol": 1e-5,
        "atol": 1e-5, "backend": "neode", "seed": seed, "optim": "adam", "lr": 0.01, "batch_size": 256,
        "params": 100, "epochs": 2, "max_epochs": 2, "experiment": experiment, "budget": "cpu", "device": "cpu",
        "batches_per_epoch": 50, "nfe_forward": rows[-1]["nfe_forward"], "nfe_backward": rows[-1]["nfe_backward"],
        "epoch_time_s": 3.0, "train_time_s": 6.0, metric: loss, f"{metric}_se": 0.01,
        "config": {"model": model_cfg, "data": {"batches_per_epoch": 50}},
    }
    summary.update({"target": target} if target else {"dataset": dataset, "n_test": 5000})
    (folder / "metrics.json").write_text(json.dumps(summary))
    return folder


def fig4_records(tmp_path: Path, seeds=(0, 1, 2)):
    root = tmp_path / "outputs" / "fig4" / "cpu"
    losses = {("planar_nf", 2): -1.0, ("cnf", 2): -1.4, ("planar_nf", 8): -1.5, ("cnf", 8): -1.45}
    for (model, units), loss in losses.items():
        for seed in seeds:
            write_flow_run(root / f"{model}_units{units}_u1_seed{seed}", model=model, experiment="fig4", units=units,
                           seed=seed, target="u1", loss=loss + 0.02 * seed)
    write_flow_run(root / "cnf_units32_u1_seed0", model="cnf", experiment="fig4", units=32, target="u1",
                   status="failed")
    return collect([root])


def test_fig4_rows_average_seeds_and_pair_matched_sizes(tmp_path):
    records = fig4_records(tmp_path).completed
    rows = fig4_rows(records)
    assert [(r["model"], r["units"]) for r in rows] == [("planar_nf", 2), ("planar_nf", 8), ("cnf", 2), ("cnf", 8)]
    nf2 = next(r for r in rows if (r["model"], r["units"]) == ("planar_nf", 2))
    assert nf2["kl_loss_mean"] == pytest.approx(-0.98) and nf2["seeds"] == 3 and nf2["iterations"] == 100
    assert nf2["nfe_forward"] == 0.0 and nf2["has_ode"] is False  # shown as "-"
    assert abs(nf2["kl_mean"] - (-0.98 + LOG_NORMALISERS["u1"])) < 1e-9  # U1 is normalisable: the true KL
    pairs = fig4_pairs(rows)
    assert [(p["units"], p["cnf_at_or_below_nf"]) for p in pairs] == [(2, True), (8, False)]
    assert abs(pairs[0]["cnf_minus_nf"] - (-0.4)) < 1e-9


def test_fig4_verdict_is_withheld_below_three_seeds(tmp_path):
    records = fig4_records(tmp_path, seeds=(0, 1)).completed
    pairs = fig4_pairs(fig4_rows(records))
    assert [p["cnf_at_or_below_nf"] for p in pairs] == [None, None]  # the difference is kept, the verdict withheld
    assert pairs[0]["verdict"] == "withheld: 2 and 2 seeds (needs at least 3 each)"
    assert abs(pairs[0]["cnf_minus_nf"] - (-0.4)) < 1e-9
    text = " ".join(Fig4().build(records).text)
    assert "CNF at or below NF: no pair has 3 seeds on each side, so no verdict" in text
    assert "2 pair(s) withheld for fewer seeds (there the CNF mean is lower in 1 of 2)" in text


def test_fig4_section_states_the_claim_and_draws_loss_vs_units(tmp_path):
    records = fig4_records(tmp_path).completed
    result = Fig4().build(records)
    assert any("CNF at or below NF in 1 of 2 matched (target, K = M) pairs with at least 3 seeds each" in line
               for line in result.text)
    md = " ".join(result.text + result.notes)
    assert "these runs use U1 of the four energies" in md and "U2" not in md.split("U1-U4")[1]  # only U1 here
    assert "Runs: 12 in 4 configurations, 3 seeds each (seeds 0, 1, 2)." in md
    assert [t.name for t in result.tables] == ["fig4_pairs", "fig4"]
    assert result.figures[0].name == "fig4_loss_vs_units" and result.figures[0].png[:4] == b"\x89PNG"
    assert Fig4().build(records).figures[0].png == result.figures[0].png  # deterministic


def test_compare_experiment_fig4_writes_tables_and_figure(tmp_path):
    fig4_records(tmp_path)
    report, out, files = run(CompareOptions(experiment="fig4", root=str(tmp_path / "outputs"),
                                            out=str(tmp_path / "report")))
    assert [p.name for p in report.parts] == ["fig4"] and report.parts[0].error is None
    with open(tmp_path / "report" / "fig4_pairs.csv") as f:
        pairs = list(csv.DictReader(f))
    assert [(p["units"], p["cnf_at_or_below_nf"]) for p in pairs] == [("2", "True"), ("8", "False")]
    assert (tmp_path / "report" / "fig4_loss_vs_units.png").exists()


def test_likelihood_sections_group_by_dataset_and_model(tmp_path):
    fig5_root = tmp_path / "outputs" / "fig5" / "cpu"
    for model, dataset, loss in [("planar_nf", "circles", 3.2), ("cnf", "circles", 2.9), ("planar_nf", "moons", 2.8),
                                 ("cnf", "moons", 2.5)]:
        write_flow_run(fig5_root / f"{model}_{dataset}_seed0", model=model, experiment="fig5", units=64,
                       dataset=dataset, loss=loss)
    toys_root = tmp_path / "outputs" / "ffjord_toys" / "cpu"
    for dataset in ("pinwheel", "8gaussians"):
        write_flow_run(toys_root / f"cnf_{dataset}_seed0", model="cnf", experiment="ffjord_toys", field="mlp",
                       dataset=dataset, loss=2.5)
    records = collect([tmp_path / "outputs"]).completed

    fig5 = Fig5().build(Fig5().select(records))
    rows = fig5.tables[0].rows
    assert [(r["dataset"], r["model"], r["test_nll_mean"]) for r in rows] == [
        ("circles", "planar_nf", 3.2), ("circles", "cnf", 2.9), ("moons", "planar_nf", 2.8), ("moons", "cnf", 2.5)]
    assert rows[1]["architecture"] == "planar, M=64" and rows[0]["architecture"] == "K=64"
    assert rows[0]["run_ids"].endswith("planar_nf_circles_seed0")
    assert fig5.tables[0].columns[0].header == "Data" and "NFE fwd" in [c.header for c in fig5.tables[0].columns]
    nfe = next(c for c in fig5.tables[0].columns if c.header == "NFE fwd")
    assert nfe.cell(rows[0]) == "-" and nfe.cell(rows[1]) == "26.0"  # NF: no ODE
    assert fig5.figures[0].png[:4] == b"\x89PNG"

    toys = FfjordToys()
    selected = toys.select(records)
    assert {r.get("dataset") for r in selected} == {"pinwheel", "8gaussians"}
    result = toys.build(selected)
    assert [r["dataset"] for r in result.tables[0].rows] == ["8gaussians", "pinwheel"]
    assert result.tables[0].rows[0]["architecture"] == "mlp concatsquash 64-64-64"
    assert result.figures[0].name == "ffjord_toys_nll"


def test_iterations_fall_back_to_epochs_times_batches(tmp_path):
    folder = write_flow_run(tmp_path / "r", model="cnf", experiment=None, target="u2", loss=-1.0)
    (folder / "metrics.jsonl").unlink()
    (record,) = collect([tmp_path]).runs
    assert iterations(record) == 100
    assert Fig4().select([record]) == [record]  # density matching without an experiment still gets a Figure 4


def test_u1_log_normaliser_matches_quadrature():
    axis = torch.linspace(-8, 8, 801, dtype=torch.float64)
    xx, yy = torch.meshgrid(axis, axis, indexing="xy")
    z = torch.exp(-u1(torch.stack([xx.ravel(), yy.ravel()], dim=1))).sum() * (axis[1] - axis[0]) ** 2
    assert math.log(z.item()) == pytest.approx(LOG_NORMALISERS["u1"], abs=1e-3)
