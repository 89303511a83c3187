"""`neode compare` on hand-written run records: tables, figures, CSV, HTML, problems, idempotence."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from neode_cli.report import Section, SectionResult, registered_sections
from neode_cli.report.assemble import build_report
from neode_cli.report.base import mean_std
from neode_cli.report.compare import CompareOptions, main, run
from neode_cli.report.fig3 import fit_through_origin
from neode_cli.report.records import collect

# Measured-looking numbers per model: (test error %, params, NFE fwd, NFE bwd, peak MB, grad).
MODELS = {
    "mlp": (2.0, 238510, 0, 0, 0.9, "adjoint"),
    "resnet": (0.6, 576778, 0, 0, 40.0, "adjoint"),
    "rknet": (0.7, 208266, 26, 26, 120.0, "backprop"),
    "odenet": (0.65, 208266, 26, 32, 12.0, "adjoint"),
}


def write_run(folder: Path, *, model="odenet", seed=0, experiment="table1", budget="cpu", status="completed",
              test_error=1.0, params=208266, nfe_forward=26.0, nfe_backward=32.0, peak=10.0, grad="adjoint",
              rtol=1e-3, epochs=3, ode_error=None, forward_time_s=0.05, error=None, epoch_nfe=None) -> Path:
    """A run folder as `neode train` writes it: metrics.jsonl (one line per epoch) and metrics.json."""
    folder.mkdir(parents=True, exist_ok=True)
    nfe_by_epoch = epoch_nfe or [nfe_forward - 2 * (epochs - 1 - e) for e in range(epochs)]
    rows = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "nfe_forward": nfe_by_epoch[e], "nfe_backward": nfe_backward,
             "forward_time_s": forward_time_s, "backward_time_s": 0.08, "batches": 50, "peak_memory_mb": peak,
             "epoch_time_s": 12.5, "lr": 0.1, "test_error": test_error + 0.1 * (epochs - 1 - e)} for e in range(epochs)]
    with open(folder / "metrics.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    summary = {
        "status": status, "error": error, "task": "classification", "model": model, "data": "fashion_mnist",
        "solver": "dopri5", "grad": grad, "rtol": rtol, "atol": rtol, "step_size": None, "backend": "neode",
        "seed": seed, "optim": "sgd", "lr": 0.1, "batch_size": 128, "params": params, "epochs": epochs,
        "max_epochs": epochs, "experiment": experiment, "budget": budget, "device": "cpu",
        "peak_memory_kind": "autograd_saved", "started_at": "2026-01-01T00:00:00", "n_train": 60000, "n_test": 10000,
        "augmentation": True, "versions": {"torch": "2.13.0", "python": "3.11"},
        "train_loss": rows[-1]["train_loss"], "nfe_forward": nfe_forward, "nfe_backward": nfe_backward,
        "forward_time_s": forward_time_s, "backward_time_s": 0.08, "peak_memory_mb": peak, "epoch_time_s": 12.5,
        "train_time_s": 12.5 * epochs, "test_error": test_error, "test_accuracy": 100 - test_error,
        "config": {"data": {"batch_size": 128, "test_batch_size": 1000, "ode_error_samples": 100},
                   "optim": {"momentum": 0.9, "milestones": [2, 3]},
                   "trainer": {"limit_train_batches": 50, "limit_test_batches": 2}},
    }
    if ode_error is not None:
        summary["ode_error"] = ode_error
        summary["test_nfe_forward"] = nfe_forward - 2
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2))
    return folder


def write_table1_sweep(root: Path, seeds=(0, 1), budget="cpu") -> Path:
    """outputs/table1/<budget>/<model>_seed<seed> for the four models, as the table1 experiment writes them."""
    base = root / "table1" / budget
    for model, (err, params, fwd, bwd, peak, grad) in MODELS.items():
        for seed in seeds:
            write_run(base / f"{model}_seed{seed}", model=model, seed=seed, budget=budget, test_error=err + 0.1 * seed,
                      params=params, nfe_forward=fwd, nfe_backward=bwd, peak=peak, grad=grad)
    return base


def write_fig3_sweep(root: Path, tolerances=(1e-1, 1e-2, 1e-3), seeds=(0, 1)) -> Path:
    base = root / "fig3" / "cpu"
    for i, tol in enumerate(tolerances):
        for seed in seeds:
            nfe = 14.0 + 8 * i + seed
            write_run(base / f"tol{tol:g}_seed{seed}", experiment="fig3", rtol=tol, seed=seed, nfe_forward=nfe,
                      nfe_backward=nfe * 0.8, ode_error=tol * 0.1, forward_time_s=nfe * 0.002)
    return base


def compare(tmp_path: Path, **keys) -> tuple:
    options = CompareOptions(root=str(tmp_path / "outputs"), **keys)
    report, out, files = run(options)
    assert not [p.error for p in report.parts if p.error]  # every section built
    return report, out, files


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_table1_report_from_hand_written_records(tmp_path):
    write_table1_sweep(tmp_path / "outputs")
    report, out, files = compare(tmp_path, experiment="table1")
    assert out == tmp_path / "outputs" / "reports" / "table1-cpu"
    names = sorted(p.name for p in files)
    assert {"report.md", "report.html", "table1.csv", "runs.csv", "unfinished.csv", "epochs.csv"} <= set(names)
    rows = read_csv(out / "table1.csv")
    assert [r["model"] for r in rows] == ["mlp", "resnet", "rknet", "odenet"]  # the paper's order
    odenet = rows[-1]
    assert float(odenet["test_error_mean"]) == pytest.approx(0.70)  # seeds: 0.65, 0.75
    assert float(odenet["test_error_std"]) == pytest.approx(0.0707107, rel=1e-5)
    assert odenet["seeds"] == "2" and odenet["seed_list"] == "0,1"
    assert float(odenet["paper_test_error"]) == 0.42 and float(odenet["paper_params_m"]) == 0.22
    assert odenet["paper_memory"] == "O(1)" and rows[1]["paper_memory"] == "O(L)"
    assert float(odenet["nfe_backward"]) == 32.0 and float(odenet["params"]) == 208266
    md = (out / "report.md").read_text()
    assert "| ODE-Net | 0.70 ± 0.07 | 2 | 0.42 |" in md
    lines = md.splitlines()
    mlp = next(line for line in lines if line.startswith("| 1-layer MLP |"))
    assert mlp.startswith("| 1-layer MLP | 2.05 ± 0.07 | 2 | 1.60 |") and mlp.endswith("| - | - | - |")  # no ODE
    assert next(line for line in lines if line.startswith("| mlp_seed0 |")).count("| - |") >= 2  # run list too
    assert "Budget: `cpu`." in md
    assert ("Solver actually used: odenet: `dopri5` rtol 1e-03, atol 1e-03, gradient adjoint, backend neode; "
            "rknet: `dopri5` rtol 1e-03, atol 1e-03, gradient backprop, backend neode. Chen et al. 2018 "
            "(arXiv:1806.07366) used implicit Adams") in md
    assert "Runs: 8 in 4 configurations, 2 seeds each (seeds 0, 1) (the paper reports single runs)." in md
    assert "Dataset: Fashion-MNIST (paper: MNIST)" in md  # a deviation is stated
    assert "Epochs: 3 (paper: 160)" in md
    assert "Training images per epoch: 6,400 (paper: 60,000)" in md


def test_runs_csv_holds_every_number_of_every_record(tmp_path):
    write_table1_sweep(tmp_path / "outputs", seeds=(0,))
    _, out, _ = compare(tmp_path, experiment="table1")
    rows = read_csv(out / "runs.csv")
    assert [r["run_id"] for r in rows] == ["mlp_seed0", "odenet_seed0", "resnet_seed0", "rknet_seed0"]
    odenet = rows[1]
    assert float(odenet["epoch_time_s"]) == 12.5 and odenet["versions.torch"] == "2.13.0"
    assert "config" not in odenet  # the nested config stays in metrics.json
    epochs = read_csv(out / "epochs.csv")
    assert len(epochs) == 4 * 3 and epochs[0]["run_id"] == "mlp_seed0" and epochs[2]["epoch"] == "3"


def test_fig3_report_has_four_captioned_panels(tmp_path):
    write_fig3_sweep(tmp_path / "outputs")
    report, out, files = compare(tmp_path, experiment="fig3")
    pngs = sorted(p.name for p in files if p.suffix == ".png")
    assert pngs == ["fig3a.png", "fig3b.png", "fig3c.png", "fig3d.png"]
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = read_csv(out / "fig3.csv")
    assert [float(r["rtol"]) for r in rows] == [1e-1, 1e-2, 1e-3]  # loosest first
    assert float(rows[0]["backward_forward_ratio"]) == pytest.approx(0.8)
    assert float(rows[2]["ode_error_mean"]) == pytest.approx(1e-4)
    md = (out / "report.md").read_text()
    assert "Backward/forward NFE ratio by solver (gradient adjoint): dopri5: mean 0.80 (range 0.80–0.80, 6 runs)" in md
    assert "report about 0.5 with their implicit Adams solver" in md
    assert "Pearson r = 1.000 over 6 runs" in md  # forward time was written proportional to NFE
    assert "1e-03: 26.5 → 30.5 (2 seeds)" in md  # NFE over epochs (mean over the two seeds), tolerance as 1e-03
    assert "What was run: 6 runs of odenet in 3 configurations (varying: rtol, atol)" in md
    assert "table1" not in [p.name for p in report.parts]  # fig3 runs are not Table 1 runs
    page = (out / "report.html").read_text()  # self-contained: figures inline, nothing fetched
    assert page.count('src="data:image/png;base64,') == 4
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page and "<table>" in page and page.count("<figcaption>") == 4


def test_corrupt_and_partial_records_are_reported_and_skipped(tmp_path, capsys):
    base = write_table1_sweep(tmp_path / "outputs", seeds=(0,))
    (base / "resnet_seed0" / "metrics.json").write_text('{"status": "comple')  # torn write
    partial = base / "extra_seed0"
    partial.mkdir()
    (partial / "metrics.json").write_text(json.dumps({"test_error": 1.0}))  # no status, no model
    with open(base / "odenet_seed0" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "nfe_for')  # a torn last line
    out = main({"experiment": "table1", "root": str(tmp_path / "outputs")})
    printed = capsys.readouterr().out
    assert "problem: resnet_seed0: corrupt metrics.json (JSONDecodeError" in printed
    assert "problem: extra_seed0: partial metrics.json: no status, model; skipped" in printed
    assert "problem: odenet_seed0: 1 of 4 lines of metrics.jsonl unreadable" in printed
    rows = read_csv(out / "table1.csv")
    assert [r["model"] for r in rows] == ["mlp", "rknet", "odenet"]
    assert "corrupt metrics.json" in (out / "report.html").read_text()


def test_failed_and_incomplete_runs_are_listed_not_used(tmp_path):
    base = write_table1_sweep(tmp_path / "outputs", seeds=(0,))
    write_run(base / "odenet_seed1", seed=1, status="failed", error="training loss became nan at batch 3",
              test_error=50.0)
    killed = base / "odenet_seed2"
    write_run(killed, seed=2)
    (killed / "metrics.json").unlink()  # killed before its first summary: only epochs on disk
    report, out, _ = compare(tmp_path, experiment="table1")
    unfinished = read_csv(out / "unfinished.csv")
    assert [(r["run_id"], r["status"]) for r in unfinished] == [("odenet_seed1", "failed"), ("odenet_seed2", "incomplete")]
    assert unfinished[0]["error"] == "training loss became nan at batch 3"
    assert "no metrics.json (3 epochs recorded)" in unfinished[1]["error"]
    odenet = read_csv(out / "table1.csv")[-1]
    assert odenet["seeds"] == "1" and float(odenet["test_error_mean"]) == pytest.approx(0.65)
    md = (out / "report.md").read_text()
    assert "| odenet_seed1 | failed | odenet |" in md
    assert "Runs: 4 completed, 2 failed or incomplete, 0 records skipped" in md


def test_running_twice_gives_identical_files_and_stale_files_go(tmp_path):
    write_table1_sweep(tmp_path / "outputs")
    write_fig3_sweep(tmp_path / "outputs")
    inputs = [str(tmp_path / "outputs" / "table1"), str(tmp_path / "outputs" / "fig3")]
    _, out, files = compare(tmp_path, runs=tuple(inputs), out=str(tmp_path / "rep"))
    first = {p.name: p.read_bytes() for p in files}
    assert {"table1.csv", "fig3.csv", "fig3a.png"} <= set(first)
    (out / "notes.txt").write_text("mine")
    _, _, files_again = compare(tmp_path, runs=tuple(reversed(inputs)), out=str(tmp_path / "rep"))
    assert {p.name: p.read_bytes() for p in files_again} == first
    # A later, different report in the same folder removes what only the earlier one wrote, nothing else.
    compare(tmp_path, experiment="table1", out=str(tmp_path / "rep"))
    assert not (out / "fig3a.png").exists() and not (out / "fig3.csv").exists() and (out / "table1.csv").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_budget_choice_and_user_errors(tmp_path, capsys):
    root = tmp_path / "outputs"
    write_table1_sweep(root, seeds=(0,), budget="smoke")
    write_table1_sweep(root, seeds=(0,), budget="cpu")
    report, out, _ = compare(tmp_path, experiment="table1")
    assert out.name == "table1-cpu" and "Budget `cpu` chosen as the largest found (also found: smoke" in report.overview[1]
    _, out, _ = compare(tmp_path, experiment="table1", budget="smoke")
    assert out.name == "table1-smoke"
    for keys, message in [
        ({}, "nothing to compare: pass experiment=NAME"),
        ({"experiment": "fig9"}, "no runs of experiment 'fig9'"),
        ({"experiment": "table1", "budget": "paper"}, "with budget 'paper' in"),
        ({"runs": ["nowhere"]}, "no folder 'nowhere'"),
        ({"runs": str(tmp_path)}, None),  # a single path (not a list) works
    ]:
        if message is None:
            main({"root": str(root), **keys})
            continue
        with pytest.raises(SystemExit) as exit_info:
            main({"root": str(root), **keys})
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("neode: error: ") and message in err and "\n" not in err


def test_runs_filter_by_budget_and_a_broken_section_does_not_lose_the_report(tmp_path):
    root = tmp_path / "outputs"
    write_table1_sweep(root, seeds=(0,), budget="smoke")
    write_table1_sweep(root, seeds=(0, 1), budget="cpu")
    collection = collect([root]).filtered(lambda r: r.budget == "cpu")
    assert len(collection.runs) == 8 and collection.runs[0].run_id == "table1/cpu/mlp_seed0"

    class Broken(Section):
        name, title, experiments = "broken", "Broken", ("table1",)

        def build(self, records):
            raise KeyError("boom")

    class Counting(Section):
        name, title, experiments = "counting", "Counting", ("table1",)

        def build(self, records):
            return SectionResult(text=[f"{len(records)} runs"])

    report = build_report(collection, [Broken(), Counting()], "t")
    assert [p.name for p in report.parts] == ["broken", "counting"]
    assert report.parts[1].result.text == ["8 runs"]
    assert any("section broken could not be built: KeyError" in p for p in report.problems)


def test_registry_lists_table1_then_fig3_first():
    assert [s.name for s in registered_sections()][:2] == ["table1", "fig3"]


def test_statistics_helpers():
    assert mean_std([1.0, 3.0, None, float("nan"), True]) == (2.0, pytest.approx(2 ** 0.5), 2)
    assert mean_std([]) == (None, None, 0)
    slope, r = fit_through_origin([1, 2, 3], [2, 4, 6])
    assert slope == pytest.approx(2.0) and r == pytest.approx(1.0)


def test_compare_config_composes_experiment_as_a_plain_name():
    """`experiment=table1` must reach compare as a string although conf/experiment/ is a group of train."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    import neode_cli.config  # noqa: F401 - registers compare_schema
    from neode_cli.report.compare import register_primary_config

    conf = Path(__file__).resolve().parent.parent / "conf"
    name, path = register_primary_config(conf)
    assert path == "pkg://neode_cli.report"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(version_base="1.3", config_module="neode_cli.report"):
            cfg = compose(name, overrides=["experiment=table1", "budget=cpu", "runs=outputs/x"])
            assert (cfg.experiment, cfg.budget, cfg.runs, cfg.root) == ("table1", "cpu", "outputs/x", "outputs")
            with pytest.raises(Exception, match="runz"):
                compose(name, overrides=["runz=[a]"])  # a typo fails at compose (schema)
    finally:
        GlobalHydra.instance().clear()


def test_odd_values_in_records_never_break_a_section(tmp_path):
    base = tmp_path / "outputs" / "fig3" / "cpu"
    write_run(base / "a", experiment="fig3", seed="x", rtol=1e-2, ode_error=1e-3)
    odd = write_run(base / "b", experiment="fig3", seed=3, rtol=1e-3, ode_error=float("nan"))
    summary = json.loads((odd / "metrics.json").read_text())
    summary.update(test_error="n/a", params=None, nfe_forward=True, forward_time_s=[1], config="oops", versions=7)
    (odd / "metrics.json").write_text(json.dumps(summary))
    (odd / "metrics.jsonl").write_text('{"epoch": "one", "nfe_forward": "many"}\n[1, 2]\n')
    write_run(base / "c", experiment="fig3", rtol="tight")  # a tolerance that is not a number
    odd_table1 = write_run(tmp_path / "outputs" / "table1" / "cpu" / "d", seed="s1")
    summary = json.loads((odd_table1 / "metrics.json").read_text())
    (odd_table1 / "metrics.json").write_text(json.dumps({**summary, "test_error": None, "batch_size": "big"}))
    report, out, _ = compare(tmp_path, runs=(str(tmp_path / "outputs"),))
    assert [p.name for p in report.parts] == ["table1", "fig3"] and not any(p.error for p in report.parts)
    assert "Runs without a recorded tolerance (left out of the panels): fig3/cpu/c." in (out / "report.md").read_text()
    assert len(list(out.glob("fig3*.png"))) == 4


@pytest.mark.parametrize("experiment", ["table1", "fig3"])
def test_experiment_configs_compose_for_every_budget(experiment):
    """Each budget composes, sets its own sizes and seeds, and the sweep writes to outputs/<experiment>/<budget>."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import neode_cli.config  # noqa: F401 - registers the schemas

    conf = Path(__file__).resolve().parent.parent / "conf"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
            sizes = {}
            for budget in ("smoke", "cpu", "paper"):
                cfg = compose("train", overrides=[f"experiment={experiment}", f"budget={budget}"],
                              return_hydra_config=True)
                params = cfg.hydra.sweeper.params
                assert cfg.hydra.sweep.dir == f"outputs/{experiment}/{budget}"
                assert params.data == ("mnist" if budget == "paper" else "fashion_mnist")
                sizes[budget] = (cfg.trainer.max_epochs, cfg.trainer.limit_train_batches, str(params.seed))
                if experiment == "table1":
                    assert params.model == "mlp,resnet,rknet,odenet"
                else:
                    assert cfg.model._target_.endswith("ODENet") and cfg.grad.method == "adjoint"
                    assert cfg.solver.atol == cfg.solver.rtol  # one tolerance per run
            assert sizes["paper"][:2] == (160, None)  # the full protocol
            assert sizes["smoke"][0] <= sizes["cpu"][0] < 160
            with pytest.raises(Exception):  # an experiment needs an explicit budget (see table1.yaml's header)
                compose("train", overrides=[f"experiment={experiment}"])
    finally:
        GlobalHydra.instance().clear()
