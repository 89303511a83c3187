"""One row per configuration: grouping, flags, "-" for models without an ODE, sentences from the records, verdicts
withheld below their minimum, and the report-folder rule. All on hand-written run records."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_report import write_run

from neode_cli.report.compare import CompareOptions, main, run
from neode_cli.report.fig3 import Fig3
from neode_cli.report.grouping import NOT_APPLICABLE, configuration, group_by_configuration, layout, varying_keys
from neode_cli.report.records import collect
from neode_cli.report.table1 import Table1


def patch(folder: Path, **changes) -> Path:
    """Change flat keys of a written metrics.json; ``config__a__b=v`` sets ``config.a.b``."""
    path = folder / "metrics.json"
    summary = json.loads(path.read_text())
    for key, value in changes.items():
        if key.startswith("config__"):
            node = summary["config"]
            *parents, leaf = key.split("__")[1:]
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        else:
            summary[key] = value
    path.write_text(json.dumps(summary))
    return folder


def solver_sweep(root: Path, seeds=(0, 1)) -> Path:
    """ODE-Net x {dopri5, bosh3} x seeds, as `neode train -m model=odenet solver=dopri5,bosh3 seed=0,1` writes it."""
    for i, solver in enumerate(("dopri5", "bosh3")):
        for seed in seeds:
            folder = write_run(root / f"{i * len(seeds) + seed}_odenet", experiment=None, budget=None, seed=seed,
                               test_error=10.0 + 5 * i + seed, nfe_forward=26.0 - 6 * i)
            patch(folder, solver=solver, config__solver__method=solver, config__trainer__threads=1 + seed,
                  config__data__root=f"/data/{seed}", device="cpu" if seed else "cuda")
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_solver_sweep_is_one_row_per_solver_with_sd_over_seeds_only(tmp_path):
    runs = collect([solver_sweep(tmp_path / "sweep")]).completed
    groups = group_by_configuration(runs)
    # threads, device and data.root differ between seeds but cannot change results: they do not split groups.
    assert [(g.get("solver"), [r.run_id for r in g.runs]) for g in groups] == [
        ("dopri5", ["0_odenet", "1_odenet"]), ("bosh3", ["2_odenet", "3_odenet"])]
    assert varying_keys([g.values for g in groups]) == ["solver"]
    result = Table1().build(runs)
    table = result.tables[0]
    assert [c.header for c in table.columns][:4] == ["Model", "Solver", "Test error % (mean ± sd)", "Seeds"]
    cells = [[c.cell(r) for c in table.columns[:4]] for r in table.rows]
    assert cells == [["ODE-Net", "dopri5", "10.50 ± 0.71", "2"], ["ODE-Net", "bosh3", "15.50 ± 0.71", "2"]]
    assert table.caption.startswith("One row per configuration (2 configurations of 4 runs; varying across them: "
                                    "Solver: bosh3, dopri5). Mean ± sample sd over the seeds of each configuration")
    text = " ".join(result.text)
    assert "Runs: 4 in 2 configurations, 2 seeds each (seeds 0, 1)" in text
    assert "odenet: `bosh3, dopri5` rtol 1e-03" in text


def test_a_difference_without_a_column_is_flagged_never_averaged(tmp_path):
    base = tmp_path / "runs"
    for seed in (0, 1):
        patch(write_run(base / f"a_seed{seed}", experiment=None, seed=seed, test_error=1.0),
              config__data__augmentation=True)
        patch(write_run(base / f"b_seed{seed}", experiment=None, seed=seed, test_error=5.0),
              config__data__augmentation=False)
    runs = collect([base]).completed
    table = Table1().build(runs).tables[0]
    assert len(table.rows) == 2  # two configurations, not one row of four runs
    assert "Other differences" in [c.header for c in table.columns]
    assert [(r["other_differences"], r["test_error_mean"]) for r in table.rows] == [
        ("data.augmentation=True", 1.0), ("data.augmentation=False", 5.0)]
    notes = " ".join(Table1().build(runs).notes)
    assert "Rows differ in settings this table has no column for" in notes and "never averaged together" in notes


def test_models_without_an_ode_show_dashes_and_are_not_split_by_solver_settings(tmp_path):
    base = tmp_path / "runs"
    for seed, solver in ((0, "dopri5"), (1, "rk4")):  # recorded, but an MLP never calls the solver
        patch(write_run(base / f"mlp_seed{seed}", model="mlp", experiment=None, seed=seed, nfe_forward=0.0,
                        nfe_backward=0.0), solver=solver, step_size=0.1 if solver == "rk4" else None)
    write_run(base / "odenet_seed0", experiment=None, seed=0)
    runs = collect([base]).completed
    mlp = next(r for r in runs if r.model == "mlp")
    assert configuration(mlp)["solver"] == NOT_APPLICABLE and configuration(mlp)["grad"] == NOT_APPLICABLE
    table = Table1().build(runs).tables[0]
    assert len(table.rows) == 2 and table.rows[0]["seeds"] == 2
    by_header = {c.header: c for c in table.columns}
    assert "Solver" not in by_header  # odenet has one solver; the MLP's does not count
    assert [by_header[h].cell(table.rows[0]) for h in ("NFE fwd", "NFE bwd", "Gradient")] == ["-", "-", "-"]
    assert [by_header[h].cell(table.rows[1]) for h in ("NFE fwd", "Gradient")] == ["26.0", "adjoint"]


def test_a_sub_setting_that_follows_the_model_is_not_an_axis_of_its_own(tmp_path):
    base = tmp_path / "runs"
    patch(write_run(base / "odenet", experiment=None), config__model__channels=64)
    patch(write_run(base / "resnet", model="resnet", experiment=None, nfe_forward=0, nfe_backward=0),
          config__model__channels=32)
    configs = [configuration(r) for r in collect([base]).completed]
    assert varying_keys(configs) == ["model"]  # model.channels follows the model choice
    patch(write_run(base / "odenet_wide", experiment=None, seed=1), config__model__channels=128)
    configs = [configuration(r) for r in collect([base]).completed]
    assert varying_keys(configs) == ["model", "model.channels"]  # now it differs under model=odenet


def test_repeated_runs_of_one_seed_are_left_out_and_named(tmp_path):
    base = tmp_path / "runs"
    write_run(base / "a", experiment=None, seed=0, test_error=1.0)
    write_run(base / "b", experiment=None, seed=0, test_error=3.0)
    write_run(base / "c", experiment=None, seed=1, test_error=2.0)
    runs = collect([base]).completed
    plan = layout(runs)
    assert [r.run_id for r in plan.groups[0].runs] == ["a", "c"] and [r.run_id for r in plan.groups[0].duplicates] == ["b"]
    result = Table1().build(runs)
    assert result.tables[0].rows[0]["test_error_mean"] == pytest.approx(1.5)
    assert any("Left out as repeats of a run with the same configuration and seed: b." in n for n in result.notes)


def test_fig3_correlation_is_withheld_below_three_points_and_sentences_count_the_runs(tmp_path):
    base = tmp_path / "fig3"
    for i, tol in enumerate((1e-2, 1e-3)):
        write_run(base / f"tol{tol:g}", experiment="fig3", rtol=tol, nfe_forward=14.0 + 8 * i, nfe_backward=10.0,
                  ode_error=tol / 10, forward_time_s=0.01 * (i + 1))
    records = collect([base]).completed
    result = Fig3().build(records)
    notes = " ".join(result.notes)
    assert "Pearson r withheld: 2 points (needs at least 3)" in notes
    assert "slope through the origin" in notes and "over 2 runs" in notes
    text = " ".join(result.text)
    assert "What was run: 2 runs of odenet in 2 configurations (varying: rtol, atol)" in text
    assert "rtol = atol in every run" in text
    assert "on the first 100 test images" in text  # data.ode_error_samples as recorded
    assert "dopri5 spends 6 evaluations" in result.figures[3].caption  # the solver recorded is dopri5
    patch(base / "tol0.001", solver="bosh3")
    caption = Fig3().build(collect([base]).completed).figures[3].caption
    assert "dopri5 spends" in caption  # one run is still dopri5
    patch(base / "tol0.01", solver="bosh3")
    assert "dopri5 spends" not in Fig3().build(collect([base]).completed).figures[3].caption


def test_no_sentence_points_outside_the_repository(tmp_path):
    solver_sweep(tmp_path / "outputs" / "sweep")
    _, out, _ = run(CompareOptions(runs=(str(tmp_path / "outputs" / "sweep"),), root=str(tmp_path / "outputs")))
    md = (out / "report.md").read_text()
    assert "paper.md" not in md and "shared/" not in md
    assert "arXiv:1806.07366" in md and "github.com/rtqichen/torchdiffeq" in md


def test_report_folder_names_what_it_reports_and_replacing_one_is_said(tmp_path, capsys):
    root = tmp_path / "outputs"
    sweep = solver_sweep(tmp_path / "sweep")
    other = solver_sweep(tmp_path / "other", seeds=(0,))
    out = main({"runs": str(sweep), "root": str(root)})
    assert out.parent == root / "reports" and out.name.startswith("runs-sweep-") and len(out.name) == len("runs-sweep-") + 8
    assert "replaced" not in capsys.readouterr().out
    assert main({"runs": [str(other)], "root": str(root)}) != out  # other runs, another folder
    assert main({"runs": [str(sweep)], "root": str(root)}) == out  # same runs, same folder, said so
    printed = capsys.readouterr().out
    assert f"replaced the earlier report in {out} (neode report: runs in {sweep})" in printed
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep")
    with pytest.raises(SystemExit) as stop:
        main({"runs": [str(sweep)], "out": str(mine), "root": str(root)})
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "holds no neode report" in err and "\n" not in err.strip()
    assert (mine / "thesis.tex").read_text() == "keep" and sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


def test_runs_list_names_each_runs_configuration(tmp_path):
    _, out, _ = run(CompareOptions(runs=(str(solver_sweep(tmp_path / "sweep")),), out=str(tmp_path / "rep")))
    rows = read_csv(out / "runs.csv")
    assert [r["configuration"] for r in rows] == ["solver=dopri5", "solver=dopri5", "solver=bosh3", "solver=bosh3"]
    md = (out / "report.md").read_text()
    assert "Configurations: 2 among the completed runs (varying: Solver)" in md
