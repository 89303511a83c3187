"""Every figure a report or a task draws: a distinct title on every panel, labelled axes, legends that cover no
data point, and a colour scale on density images (checked on the matplotlib figures before they become PNGs)."""

from __future__ import annotations

import numpy as np
import pytest
from test_report import write_fig3_sweep, write_table1_sweep
from test_report_cnf import fig4_records, write_flow_run
from test_report_table2 import write_sweep

from neode_cli.report import cnf, fig3, table2
from neode_cli.report.compare import CompareOptions, run


def _panels(fig):
    return [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]


def _points(ax) -> np.ndarray:
    """Display coordinates of every plotted data point of ``ax`` (line vertices, scatter offsets, bar tops)."""
    found = []
    for line in ax.get_lines():
        xy = np.column_stack(line.get_data()).astype(float)
        if len(xy):
            found.append(ax.transData.transform(xy))
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets(), dtype=float)
        if offsets.size and collection.get_offset_transform() is ax.transData:
            found.append(ax.transData.transform(offsets))
    return np.concatenate(found) if found else np.zeros((0, 2))


def _bars(ax) -> list:
    """Display boxes of the bars (patches other than reference bands marked gid="background")."""
    return [p.get_window_extent() for p in ax.patches if p.get_gid() != "background"]


def check_figure(fig, name: str) -> None:
    fig.canvas.draw()
    panels = _panels(fig)
    titles = [ax.get_title() for ax in panels]
    assert all(titles), f"{name}: a panel without a title: {titles}"
    assert len(set(titles)) == len(titles), f"{name}: panel titles repeat: {titles}"
    for ax in panels:
        assert ax.get_xlabel() and ax.get_ylabel() or not ax.axison, f"{name}: unlabelled axes in {ax.get_title()!r}"
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent()
        inside = [p for p in _points(ax) if box.x0 < p[0] < box.x1 and box.y0 < p[1] < box.y1]
        assert not inside, f"{name}: the legend of {ax.get_title()!r} covers {len(inside)} data points"
        covered = [b for b in _bars(ax) if b.overlaps(box)]
        assert not covered, f"{name}: the legend of {ax.get_title()!r} covers {len(covered)} bars"
    images = sum(len(ax.images) for ax in panels)
    bars = sum(1 for ax in fig.axes if ax.get_label() == "<colorbar>")
    assert bars == images, f"{name}: {images} density images but {bars} colour scales"


@pytest.fixture()
def report_figures(tmp_path, monkeypatch):
    drawn = []
    for module in (fig3, table2, cnf):
        real = module.to_png
        monkeypatch.setattr(module, "to_png", lambda fig, name, *a, _real=real: (drawn.append((name, fig)),
                                                                                 _real(fig, name, *a))[1])
    out = tmp_path / "outputs"
    write_table1_sweep(out)
    write_fig3_sweep(out, seeds=(0, 1, 2))
    write_sweep(out, seeds=(0, 1, 2))
    fig4_records(tmp_path)
    for model, dataset, loss in [("planar_nf", "circles", 3.2), ("cnf", "circles", 2.9), ("planar_nf", "moons", 2.8),
                                 ("cnf", "moons", 2.5)]:
        write_flow_run(out / "fig5" / "cpu" / f"{model}_{dataset}", model=model, experiment="fig5", units=64,
                       dataset=dataset, loss=loss)
    for dataset in ("pinwheel", "8gaussians", "circles"):
        write_flow_run(out / "ffjord_toys" / "cpu" / f"cnf_{dataset}", model="cnf", experiment="ffjord_toys",
                       field="mlp", dataset=dataset, loss=2.5)
    report, _, _ = run(CompareOptions(runs=(str(out),), out=str(tmp_path / "report")))
    assert not [p.error for p in report.parts if p.error]
    return drawn


def test_every_report_figure_has_titles_labels_and_clear_legends(report_figures):
    names = [name for name, _ in report_figures]
    assert names == ["fig3a", "fig3b", "fig3c", "fig3d", "table2_rmse", "fig4_loss_vs_units", "fig5_nll",
                     "ffjord_toys_nll"]
    for name, fig in report_figures:
        check_figure(fig, name)


def test_task_figures_have_titles_labels_and_colour_scales(tmp_path):
    import torch

    from neode_cli.models.cnf import CNF
    from neode_cli.models.latent_ode import LatentODE
    from neode_cli.integrator import Integrator
    from neode_cli.tasks.density import build_energy_task, build_toy_task
    from neode_cli.tasks.latent import build_task as build_latent_task

    class Writer:
        def __init__(self):
            self.figures = []

        def add_figure(self, tag, fig, *args, **kwargs):
            self.figures.append((tag, fig))

    integrator = Integrator(method="dopri5", rtol=1e-3, atol=1e-3, gradient="backprop")
    torch.manual_seed(0)
    writer = Writer()
    flow = CNF(integrator=integrator, units=4)
    build_toy_task(batch_size=16, batches_per_epoch=1, n_test=64, grid_size=12, figure_samples=64).log_figures(
        flow, tmp_path / "toy", writer, 1)
    build_energy_task(target="u1", grid_size=12, figure_samples=64).log_figures(flow, tmp_path / "energy", writer, 1)
    latent = build_latent_task(n_spirals=8, n_train=4, batch_size=4, test_batch_size=4, figure_spirals=2)
    latent.log_figures(LatentODE(integrator=integrator), tmp_path / "latent", writer, 1)
    assert [tag for tag, _ in writer.figures] == ["figures/density", "figures/snapshots", "figures/density",
                                                  "figures/snapshots", "spirals"]
    for tag, fig in writer.figures:
        check_figure(fig, tag)
