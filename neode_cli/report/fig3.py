"""Figure 3 of the paper: statistics of ODE-Nets trained at different solver tolerances.

(a) numerical error and forward NFE vs tolerance, (b) forward time vs forward NFE, (c) backward vs forward NFE
with the paper's ~0.5 ratio drawn, (d) forward NFE over training epochs. Numerical error is ``ode_error``: the
mean absolute difference between the ODE block's output at the run's tolerance and a tight-tolerance reference
solve of the same trained model (measured by the classification task).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from .base import Column, Figure, Section, SectionResult, Table, mean_std
from .figures import new_figure, to_png
from .grouping import ConfigGroup, Layout, axis_label, layout
from .paper import CHEN2018, CLASSIFICATION_SOLVER, DOPRI5_NFE_INITIAL, DOPRI5_NFE_PER_STEP, FIG3_BACKWARD_FORWARD_RATIO
from .protocol import budget_sentence, classification_protocol, describe_values, solver_sentence
from .records import Run
from .verdicts import enough_points, points_withheld

__all__ = ["Fig3", "tolerance_rows", "fit_through_origin"]

#: Figure 3's own axis: the tolerance (rtol, with atol beside it); other varying axes split the series.
SHOWN = ("rtol", "atol")


def _tolerance(run: Run) -> float | None:
    return run.number("rtol")


@dataclasses.dataclass(frozen=True)
class _Point:
    """One configuration on Figure 3's axes: its tolerance, its series (the other varying settings), its colour."""

    tol: float
    series: str
    group: ConfigGroup
    color: tuple
    label: str


def _points(plan: Layout) -> list[_Point]:
    """The configurations with a tolerance, by series then loosest tolerance first (as the paper's axis runs)."""
    others = [k for k in plan.varying if k not in SHOWN]
    rows = [(g.get("rtol"), g.describe(others), g) for g in plan.groups if isinstance(g.get("rtol"), (int, float))]
    rows.sort(key=lambda t: (t[1], -float(t[0])))
    colors = _colors(len(rows))
    return [_Point(float(tol), series, g, color, f"tol {tol:.0e}" + (f", {series}" if series else ""))
            for (tol, series, g), color in zip(rows, colors)]


def _series(points: Sequence[_Point]) -> list[list[_Point]]:
    found: dict[str, list[_Point]] = {}
    for p in points:
        found.setdefault(p.series, []).append(p)
    return list(found.values())


def fit_through_origin(xs: Sequence[float], ys: Sequence[float]) -> tuple[float | None, float | None]:
    """Least-squares slope of ``y = slope * x`` and Pearson's r of the points (None where undefined)."""
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None]
    if not pairs:
        return None, None
    sxx = math.fsum(x * x for x, _ in pairs)
    slope = math.fsum(x * y for x, y in pairs) / sxx if sxx > 0 else None
    if len(pairs) < 2:
        return slope, None
    mx = math.fsum(x for x, _ in pairs) / len(pairs)
    my = math.fsum(y for _, y in pairs) / len(pairs)
    cov = math.fsum((x - mx) * (y - my) for x, y in pairs)
    vx = math.fsum((x - mx) ** 2 for x, _ in pairs)
    vy = math.fsum((y - my) ** 2 for _, y in pairs)
    r = cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else None
    return slope, r


def tolerance_rows(runs: Sequence[Run], plan: Layout | None = None) -> list[dict]:
    """One row per configuration (:mod:`.grouping`), loosest tolerance first: means over its seeds (and the spread
    of the numerical error)."""
    plan = plan or layout(runs, SHOWN)
    rows = []
    for point in _points(plan):
        group = point.group
        err_mean, err_std, err_n = group.stats("ode_error")
        fwd, bwd = group.mean("nfe_forward"), group.mean("nfe_backward")
        rows.append({
            "rtol": point.tol, "atol": group.get("atol"), **plan.row(group),
            "ode_error_mean": err_mean, "ode_error_std": err_std, "ode_error_n": err_n,
            "nfe_forward": fwd, "nfe_backward": bwd,
            "backward_forward_ratio": bwd / fwd if fwd and bwd is not None else None,
            "forward_time_ms": _ms(group.mean("forward_time_s")),
            "backward_time_ms": _ms(group.mean("backward_time_s")),
            "test_nfe_forward": group.mean("test_nfe_forward"),
            "test_error_mean": group.mean("test_error"),
            "epochs": describe_values(r.get("epochs") for r in group.runs),
        })
    return rows


def _ms(seconds: float | None) -> float | None:
    return seconds * 1000.0 if seconds is not None else None


def _colors(count: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(count - 1, 1) * 0.9) for i in range(count)]


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} recorded", ha="center", va="center", transform=ax.transAxes)


def _legend(ax) -> None:
    """A legend placed where it covers the fewest points (matplotlib's "best"), small and translucent."""
    ax.legend(fontsize=7, loc="best", framealpha=0.8)


def _panel_a(points: Sequence[_Point], reference: str) -> Figure:
    fig, (left, right) = new_figure(ncols=2)
    have_error = False
    for p in points:
        errors = [r.number("ode_error") for r in p.group.runs if r.number("ode_error")]
        have_error |= bool(errors)
        left.scatter([p.tol] * len(errors), errors, color=p.color, s=18, zorder=3)
        nfes = [r.number("nfe_forward") for r in p.group.runs if r.number("nfe_forward") is not None]
        right.scatter([p.tol] * len(nfes), nfes, color=p.color, s=18, zorder=3, label=p.label)
    multi = len(_series(points)) > 1
    for line in _series(points):
        name = f" ({line[0].series})" if multi else ""
        pts = [(p.tol, p.group.mean("ode_error")) for p in line if p.group.mean("ode_error")]
        if pts:
            left.plot(*zip(*pts), color="0.3", lw=1, label=f"mean over seeds{name}")
        nfe = [(p.tol, p.group.mean("nfe_forward")) for p in line if p.group.mean("nfe_forward") is not None]
        if nfe:
            right.plot(*zip(*nfe), color="0.3", lw=1)
    tols = [p.tol for p in points]
    if have_error:
        left.plot(sorted(set(tols)), sorted(set(tols)), color="0.6", ls=":", lw=1, label="error = tolerance")
        _legend(left)
    else:
        _no_data(left, "ode_error")
    left.set_xscale("log")
    if have_error:
        left.set_yscale("log")
    left.invert_xaxis()
    left.set_xlabel("solver tolerance (rtol)")
    left.set_ylabel("numerical error |h(1) - h_ref(1)| (mean)")
    left.set_title("(a, left) numerical error vs tolerance")
    if any(p.group.mean("nfe_forward") is not None for p in points):
        _legend(right)
    else:
        _no_data(right, "forward NFE")
    right.set_xscale("log")
    right.invert_xaxis()
    right.set_xlabel("solver tolerance (rtol)")
    right.set_ylabel("forward NFE per training batch")
    right.set_title("(a, right) forward NFE vs tolerance")
    caption = ("Each point is one trained ODE-Net (one seed) at the tolerance on the x-axis; lines join the means "
               f"over the seeds of each configuration. Left: mean absolute difference between the ODE block's output "
               f"at that tolerance and {reference} of the same trained model, on test images. Right: forward "
               "function evaluations per training batch in the last epoch. The paper's claim (Figure 3a): the "
               "tolerance controls the error, and tighter tolerances (right on the axis) cost more evaluations.")
    return to_png(fig, "fig3a", "Figure 3a: numerical error and forward NFE vs tolerance", caption)


def _panel_b(points: Sequence[_Point], runs: Sequence[Run]) -> tuple[Figure, str]:
    fig, ax = new_figure()
    for p in points:
        pts = [(r.number("nfe_forward"), _ms(r.number("forward_time_s"))) for r in p.group.runs]
        pts = [q for q in pts if None not in q]
        if pts:
            ax.scatter(*zip(*pts), color=p.color, s=22, label=p.label, zorder=3)
    pairs = [(r.number("nfe_forward"), _ms(r.number("forward_time_s"))) for r in runs]
    pairs = [q for q in pairs if None not in q]
    slope, corr = fit_through_origin([x for x, _ in pairs], [y for _, y in pairs])
    if slope is not None:
        top = max(x for x, _ in pairs)
        ax.plot([0, top], [0, slope * top], color="0.4", lw=1, ls="--", label=f"fit: {slope:.3g} ms per NFE")
        _legend(ax)
    else:
        _no_data(ax, "forward time and NFE")
    ax.set_xlabel("forward NFE per training batch")
    ax.set_ylabel("forward pass wall time per batch (ms)")
    ax.set_title("(b) forward time vs forward NFE")
    n = len(pairs)
    if corr is not None and enough_points(n):
        r_text = f"Pearson r = {corr:.3f} over {n} runs"
    elif enough_points(n):
        r_text = f"Pearson r undefined over {n} runs (no spread in NFE or time)"
    else:
        r_text = f"Pearson r {points_withheld(n)}"
    summary = (f"Forward time per batch vs forward NFE: least-squares slope through the origin "
               f"{slope:.3g} ms per evaluation over {n} runs; {r_text}." if slope is not None
               else "Forward time vs NFE: no data.")
    caption = ("One point per run: mean wall-clock time of the forward pass of a training batch (last epoch) against "
               "its mean forward NFE; the dashed line is the least-squares fit through the origin. The paper's claim "
               f"(Figure 3b): time proportional to NFE. {summary}")
    return to_png(fig, "fig3b", "Figure 3b: forward time vs forward NFE", caption), summary


def _panel_c(points: Sequence[_Point], runs: Sequence[Run]) -> tuple[Figure, str]:
    fig, ax = new_figure()
    for p in points:
        pts = [(r.number("nfe_forward"), r.number("nfe_backward")) for r in p.group.runs]
        pts = [q for q in pts if None not in q]
        if pts:
            ax.scatter(*zip(*pts), color=p.color, s=22, label=p.label, zorder=3)
    usable = [r for r in runs if r.number("nfe_forward") and r.number("nfe_backward") is not None]
    ratios = [r.number("nfe_backward") / r.number("nfe_forward") for r in usable]
    if usable:
        top = max(r.number("nfe_forward") for r in usable) * 1.05
        ax.plot([0, top], [0, FIG3_BACKWARD_FORWARD_RATIO * top], color="tab:red", lw=1.2,
                label=f"paper (Adams): backward ≈ {FIG3_BACKWARD_FORWARD_RATIO} × forward")
        ax.plot([0, top], [0, top], color="0.6", lw=1, ls=":", label="backward = forward")
        _legend(ax)
    else:
        _no_data(ax, "forward and backward NFE")
    ax.set_xlabel("forward NFE per training batch")
    ax.set_ylabel("backward NFE per training batch")
    ax.set_title("(c) backward vs forward NFE")
    mean_ratio, _, n = mean_std(ratios)
    grads = describe_values(r.get("grad") for r in runs)
    by_solver: dict[str, list[float]] = {}
    for run, ratio in zip(usable, ratios):
        by_solver.setdefault(_solver_name(run), []).append(ratio)
    per_solver = "; ".join(f"{name}: mean {mean_std(values)[0]:.2f} (range {min(values):.2f}–{max(values):.2f}, "
                           f"{len(values)} run{'s' if len(values) != 1 else ''})"
                           for name, values in sorted(by_solver.items()))
    summary = (f"Backward/forward NFE ratio by solver (gradient {grads}): {per_solver}; over all {n} runs mean "
               f"{mean_ratio:.2f}. {CHEN2018} report about {FIG3_BACKWARD_FORWARD_RATIO} with their implicit Adams "
               "solver (LSODE; Figure 3c) and claim nothing for other solvers; neode's adams is an adaptive "
               "variable-order Adams of the same family (PECE, two evaluations per step), not LSODE itself."
               if n else "Backward vs forward NFE: no data.")
    caption = ("One point per run: mean backward NFE (evaluations of the adjoint dynamics, or of recorded "
               "evaluations for backprop) against mean forward NFE per training batch, last epoch. Red: the paper's "
               f"claim (Figure 3c). {summary}")
    return to_png(fig, "fig3c", "Figure 3c: backward vs forward NFE", caption), summary


def _solver_name(run: Run) -> str:
    """The run's solver method; for scipy_solver with the SciPy method it ran (``scipy_solver/LSODA``)."""
    method = str(run.get("solver"))
    if method == "scipy_solver":
        return f"scipy_solver/{run.config('solver.options.solver') or 'LSODA'}"
    return method


def _panel_d(points: Sequence[_Point], runs: Sequence[Run]) -> tuple[Figure, str]:
    fig, ax = new_figure()
    changes = []
    plotted = False
    for p in points:
        by_epoch: dict[int, list[float]] = {}
        for run in p.group.runs:
            for row in run.epochs:
                epoch, nfe = row.get("epoch"), row.get("nfe_forward")
                if isinstance(epoch, int) and isinstance(nfe, (int, float)) and math.isfinite(nfe):
                    by_epoch.setdefault(epoch, []).append(float(nfe))
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        means = [math.fsum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
        ax.plot(epochs, means, marker="o", ms=3, color=p.color, label=p.label)
        plotted = True
        if len(epochs) > 1:
            changes.append(f"{p.label.removeprefix('tol ')}: {means[0]:.1f} → {means[-1]:.1f} "
                           f"({len(p.group.runs)} seed{'s' if len(p.group.runs) != 1 else ''})")
    if plotted:
        _legend(ax)
    else:
        _no_data(ax, "per-epoch NFE (metrics.jsonl)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training epoch")
    ax.set_ylabel("forward NFE per training batch")
    ax.set_title("(d) forward NFE over training")
    summary = ("Forward NFE per batch, first → last epoch, by configuration: " + "; ".join(changes) + "."
               if changes else "NFE over training: fewer than two epochs recorded.")
    cost = (f" dopri5 spends {DOPRI5_NFE_PER_STEP} evaluations per accepted or rejected step plus "
            f"{DOPRI5_NFE_INITIAL} to choose the first step." if any(r.get("solver") == "dopri5" for r in runs) else "")
    caption = ("Mean forward NFE per training batch in each epoch (metrics.jsonl), averaged over the seeds of each "
               "configuration. The paper's claim (Figure 3d): NFE increases as training proceeds (the dynamics get "
               f"more complex).{cost} {summary}")
    return to_png(fig, "fig3d", "Figure 3d: forward NFE over training epochs", caption), summary


def _error_cell(row: dict) -> str:
    mean, std = row["ode_error_mean"], row["ode_error_std"]
    if mean is None:
        return "–"
    return f"{mean:.2e} ± {std:.1e}" if std is not None else f"{mean:.2e}"


LEADING = (
    Column("Tolerance", "rtol", ".0e"),
)
COLUMNS = (
    Column("Seeds", "seeds", "d"),
    Column("Numerical error (mean ± sd)", "ode_error_mean", render=_error_cell),
    Column("NFE fwd", "nfe_forward", ".1f"),
    Column("NFE bwd", "nfe_backward", ".1f"),
    Column("bwd/fwd", "backward_forward_ratio", ".2f"),
    Column("Forward ms/batch", "forward_time_ms", ".1f"),
    Column("Backward ms/batch", "backward_time_ms", ".1f"),
    Column("Test NFE fwd", "test_nfe_forward", ".1f"),
    Column("Test error %", "test_error_mean", ".2f"),
)


def _reference_sentence() -> str:
    from ..tasks.classification import REFERENCE_TOLERANCE  # the task's own reference solve

    return f"a dopri5 solve at rtol = atol = {REFERENCE_TOLERANCE:g}"


class Fig3(Section):
    """Figure 3 (ODE-Net statistics across tolerances): runs of ``experiment=fig3``."""

    name = "fig3"
    title = "Figure 3: statistics of trained ODE-Nets across solver tolerances"
    experiments = ("fig3",)

    def build(self, records: list[Run]) -> SectionResult:
        """The per-configuration table, panels (a)-(d) with captions, and the measured trends as notes."""
        plan = layout(records, SHOWN)
        points = _points(plan)
        rows = tolerance_rows(records, plan)
        reference = _reference_sentence()
        atol = [c for c in plan.columns() if c.key == "cfg_atol"]
        table = Table("fig3", "Figure 3 data by configuration", (*LEADING, *plan.columns(), *COLUMNS), rows,
                      f"{plan.caption()} Last training epoch, per training batch. Numerical error: ODE block output "
                      f"vs {reference} on test images." + (" atol differs from rtol in some runs (atol column)."
                                                           if atol else ""))
        with_tol = [r for r in records if _tolerance(r) is not None]
        fig_a = _panel_a(points, reference)
        fig_b, time_summary = _panel_b(points, with_tol)
        fig_c, ratio_summary = _panel_c(points, with_tol)
        fig_d, epoch_summary = _panel_d(points, with_tol)
        facts, deviations = classification_protocol(records)
        samples = describe_values(_error_images(r) for r in records)
        same_tol = all(r.number("rtol") == r.number("atol") for r in with_tol)
        varying = [axis_label(k) for k in plan.varying]
        text = [budget_sentence(records),
                f"What was run: {len(records)} runs of {describe_values(r.model for r in records)} in "
                f"{len(plan.groups)} configurations (varying: {', '.join(varying) or 'nothing'}), each trained from "
                f"scratch; {'rtol = atol in every run' if same_tol else 'rtol and atol differ in some runs'}. Every "
                f"statistic is measured on the run itself. {CHEN2018} show these statistics for trained ODE-Nets "
                "without publishing numbers, so the comparison is of trends.",
                *facts, solver_sentence(records, CLASSIFICATION_SOLVER),
                f"Numerical error: measured against {reference} of the same trained model on the first {samples} "
                "test images."]
        notes = [time_summary, ratio_summary, epoch_summary, *plan.notes(), *deviations]
        missing = [r.run_id for r in records if _tolerance(r) is None]
        if missing:
            notes.append(f"Runs without a recorded tolerance (left out of the panels): {', '.join(missing)}.")
        return SectionResult(text=text, tables=[table], figures=[fig_a, fig_b, fig_c, fig_d], notes=notes)


def _error_images(run: Run) -> int | None:
    """Test images ``ode_error`` was measured on: ``data.ode_error_samples``, at most the test set."""
    samples, n_test = run.config("data.ode_error_samples"), run.get("n_test")
    if isinstance(samples, int) and isinstance(n_test, int):
        return min(samples, n_test)
    return samples if isinstance(samples, int) else None
