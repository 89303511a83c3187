"""Figure 3 of the paper: statistics of ODE-Nets trained at different solver tolerances.

(a) numerical error and forward NFE vs tolerance, (b) forward time vs forward NFE, (c) backward vs forward NFE
with the paper's ~0.5 ratio drawn, (d) forward NFE over training epochs. Numerical error is ``ode_error``: the
mean absolute difference between the ODE block's output at the run's tolerance and a tight-tolerance reference
solve of the same trained model (measured by the classification task).
"""

from __future__ import annotations

import math
from typing import Sequence

from .base import Column, Figure, Section, SectionResult, Table, mean_std
from .figures import new_figure, to_png
from .paper import DOPRI5_NFE_INITIAL, DOPRI5_NFE_PER_STEP, FIG3_BACKWARD_FORWARD_RATIO
from .protocol import budget_sentence, classification_protocol, describe_values, solver_sentence
from .records import Run

__all__ = ["Fig3", "tolerance_rows", "fit_through_origin"]


def _tolerance(run: Run) -> float | None:
    return run.number("rtol")


def _groups(runs: Sequence[Run]) -> list[tuple[float, list[Run]]]:
    """Runs grouped by rtol, loosest tolerance first (as the paper's axis runs)."""
    tolerances = sorted({t for t in (_tolerance(r) for r in runs) if t is not None}, reverse=True)
    return [(t, [r for r in runs if _tolerance(r) == t]) for t in tolerances]


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


def tolerance_rows(runs: Sequence[Run]) -> list[dict]:
    """One row per tolerance: means (and spread of the error) over the runs trained at it."""
    rows = []
    for tol, group in _groups(runs):
        err_mean, err_std, _ = mean_std(r.number("ode_error") for r in group)
        fwd = mean_std(r.number("nfe_forward") for r in group)[0]
        bwd = mean_std(r.number("nfe_backward") for r in group)[0]
        rows.append({
            "rtol": tol, "atol": describe_values(r.get("atol") for r in group), "runs": len(group),
            "ode_error_mean": err_mean, "ode_error_std": err_std,
            "nfe_forward": fwd, "nfe_backward": bwd,
            "backward_forward_ratio": bwd / fwd if fwd and bwd is not None else None,
            "forward_time_ms": _ms(mean_std(r.number("forward_time_s") for r in group)[0]),
            "backward_time_ms": _ms(mean_std(r.number("backward_time_s") for r in group)[0]),
            "test_nfe_forward": mean_std(r.number("test_nfe_forward") for r in group)[0],
            "test_error_mean": mean_std(r.number("test_error") for r in group)[0],
            "epochs": describe_values(r.get("epochs") for r in group),
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


def _panel_a(groups, colors) -> Figure:
    fig, (left, right) = new_figure(ncols=2)
    have_error = False
    for (tol, group), color in zip(groups, colors):
        errors = [r.number("ode_error") for r in group if r.number("ode_error")]
        have_error |= bool(errors)
        left.scatter([tol] * len(errors), errors, color=color, s=18, zorder=3)
        nfes = [r.number("nfe_forward") for r in group if r.number("nfe_forward") is not None]
        right.scatter([tol] * len(nfes), nfes, color=color, s=18, zorder=3)
    tols = [t for t, _ in groups]
    means = [mean_std(r.number("ode_error") for r in g)[0] for _, g in groups]
    pts = [(t, m) for t, m in zip(tols, means) if m]
    if pts:
        left.plot(*zip(*pts), color="0.3", lw=1, label="mean over seeds")
        left.plot(tols, tols, color="0.6", ls=":", lw=1, label="error = tolerance")
        left.legend(fontsize=8)
    if not have_error:
        _no_data(left, "ode_error")
    left.set_xscale("log")
    if have_error:
        left.set_yscale("log")
    left.invert_xaxis()
    left.set_xlabel("solver tolerance (rtol = atol)")
    left.set_ylabel("numerical error |h(1) - h_ref(1)| (mean)")
    left.set_title("(a) error vs tolerance")
    nfe_means = [(t, mean_std(r.number("nfe_forward") for r in g)[0]) for t, g in groups]
    nfe_means = [(t, m) for t, m in nfe_means if m is not None]
    if nfe_means:
        right.plot(*zip(*nfe_means), color="0.3", lw=1)
    else:
        _no_data(right, "forward NFE")
    right.set_xscale("log")
    right.invert_xaxis()
    right.set_xlabel("solver tolerance (rtol = atol)")
    right.set_ylabel("forward NFE per training batch")
    right.set_title("(a) NFE vs tolerance")
    caption = ("Each point is one trained ODE-Net (one seed) at the tolerance on the x-axis; lines join the means. "
               "Left: mean absolute difference between the ODE block's output at that tolerance and a dopri5 "
               "reference solve at 1e-7 of the same trained model, on test images. Right: forward function "
               "evaluations per training batch in the last epoch. Tighter tolerance (right on the axis): smaller "
               "error, more evaluations.")
    return to_png(fig, "fig3a", "Figure 3a: numerical error and forward NFE vs tolerance", caption)


def _panel_b(groups, colors, runs) -> tuple[Figure, str]:
    fig, ax = new_figure()
    for (tol, group), color in zip(groups, colors):
        pts = [(r.number("nfe_forward"), _ms(r.number("forward_time_s"))) for r in group]
        pts = [p for p in pts if None not in p]
        if pts:
            ax.scatter(*zip(*pts), color=color, s=22, label=f"tol {tol:.0e}", zorder=3)
    xs = [r.number("nfe_forward") for r in runs]
    ys = [_ms(r.number("forward_time_s")) for r in runs]
    slope, corr = fit_through_origin(xs, ys)
    if slope is not None:
        top = max(x for x in xs if x is not None)
        ax.plot([0, top], [0, slope * top], color="0.4", lw=1, ls="--", label=f"fit: {slope:.3g} ms per NFE")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "forward time and NFE")
    ax.set_xlabel("forward NFE per training batch")
    ax.set_ylabel("forward pass wall time per batch (ms)")
    ax.set_title("(b) forward time vs NFE")
    r_text = f"Pearson r = {corr:.3f}" if corr is not None else "r undefined (fewer than two distinct points)"
    summary = (f"Forward time per batch vs forward NFE: least-squares slope through the origin "
               f"{slope:.3g} ms per evaluation, {r_text}." if slope is not None else "Forward time vs NFE: no data.")
    caption = ("One point per run: mean wall-clock time of the forward pass of a training batch (last epoch) against "
               "its mean forward NFE; the dashed line is the least-squares fit through the origin. The paper's claim: "
               f"time proportional to NFE. {summary}")
    return to_png(fig, "fig3b", "Figure 3b: forward time vs forward NFE", caption), summary


def _panel_c(groups, colors, runs) -> tuple[Figure, str]:
    fig, ax = new_figure()
    for (tol, group), color in zip(groups, colors):
        pts = [(r.number("nfe_forward"), r.number("nfe_backward")) for r in group]
        pts = [p for p in pts if None not in p]
        if pts:
            ax.scatter(*zip(*pts), color=color, s=22, label=f"tol {tol:.0e}", zorder=3)
    xs = [r.number("nfe_forward") for r in runs if r.number("nfe_forward") and r.number("nfe_backward") is not None]
    ratios = [r.number("nfe_backward") / r.number("nfe_forward") for r in runs
              if r.number("nfe_forward") and r.number("nfe_backward") is not None]
    if xs:
        top = max(xs) * 1.05
        ax.plot([0, top], [0, FIG3_BACKWARD_FORWARD_RATIO * top], color="tab:red", lw=1.2,
                label=f"paper (Adams): backward ≈ {FIG3_BACKWARD_FORWARD_RATIO} × forward")
        ax.plot([0, top], [0, top], color="0.6", lw=1, ls=":", label="backward = forward")
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "forward and backward NFE")
    ax.set_xlabel("forward NFE per training batch")
    ax.set_ylabel("backward NFE per training batch")
    ax.set_title("(c) backward vs forward NFE")
    mean_ratio, std_ratio, n = mean_std(ratios)
    grads = describe_values(r.get("grad") for r in runs)
    summary = (f"Backward/forward NFE ratio: {mean_ratio:.2f}" + (f" ± {std_ratio:.2f}" if std_ratio is not None else "")
               + f" over {n} runs (gradient: {grads}); the paper reports about {FIG3_BACKWARD_FORWARD_RATIO} with its "
               "Adams solver and says it need not carry over to dopri5.") if n else "Backward vs forward NFE: no data."
    caption = ("One point per run: mean backward NFE (evaluations of the adjoint dynamics, or of recorded "
               "evaluations for backprop) against mean forward NFE per training batch, last epoch. Red: the paper's "
               f"claim (Figure 3c). {summary}")
    return to_png(fig, "fig3c", "Figure 3c: backward vs forward NFE", caption), summary


def _panel_d(groups, colors) -> tuple[Figure, str]:
    fig, ax = new_figure()
    changes = []
    plotted = False
    for (tol, group), color in zip(groups, colors):
        by_epoch: dict[int, list[float]] = {}
        for run in group:
            for row in run.epochs:
                epoch, nfe = row.get("epoch"), row.get("nfe_forward")
                if isinstance(epoch, int) and isinstance(nfe, (int, float)) and math.isfinite(nfe):
                    by_epoch.setdefault(epoch, []).append(float(nfe))
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        means = [math.fsum(by_epoch[e]) / len(by_epoch[e]) for e in epochs]
        ax.plot(epochs, means, marker="o", ms=3, color=color, label=f"tol {tol:.0e}")
        plotted = True
        if len(epochs) > 1:
            changes.append(f"{tol:.0e}: {means[0]:.1f} → {means[-1]:.1f}")
    if plotted:
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "per-epoch NFE (metrics.jsonl)")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training epoch")
    ax.set_ylabel("forward NFE per training batch")
    ax.set_title("(d) NFE over training")
    summary = ("Forward NFE per batch, first → last epoch, by tolerance: " + "; ".join(changes) + "."
               if changes else "NFE over training: fewer than two epochs recorded.")
    caption = ("Mean forward NFE per training batch in each epoch (metrics.jsonl), averaged over seeds, one line per "
               f"tolerance. The paper's claim: NFE increases as training proceeds (the dynamics get more complex). "
               f"dopri5 spends {DOPRI5_NFE_PER_STEP} evaluations per step plus {DOPRI5_NFE_INITIAL} to choose the "
               f"first step. {summary}")
    return to_png(fig, "fig3d", "Figure 3d: forward NFE over training epochs", caption), summary


def _error_cell(row: dict) -> str:
    mean, std = row["ode_error_mean"], row["ode_error_std"]
    if mean is None:
        return "–"
    return f"{mean:.2e} ± {std:.1e}" if std is not None else f"{mean:.2e}"


COLUMNS = (
    Column("Tolerance", "rtol", ".0e"),
    Column("Runs", "runs", "d"),
    Column("Numerical error (mean ± sd)", "ode_error_mean", render=_error_cell),
    Column("NFE fwd", "nfe_forward", ".1f"),
    Column("NFE bwd", "nfe_backward", ".1f"),
    Column("bwd/fwd", "backward_forward_ratio", ".2f"),
    Column("Forward ms/batch", "forward_time_ms", ".1f"),
    Column("Backward ms/batch", "backward_time_ms", ".1f"),
    Column("Test NFE fwd", "test_nfe_forward", ".1f"),
    Column("Test error %", "test_error_mean", ".2f"),
)


class Fig3(Section):
    """Figure 3 (ODE-Net statistics across tolerances): runs of ``experiment=fig3``."""

    name = "fig3"
    title = "Figure 3: statistics of trained ODE-Nets across solver tolerances"
    experiments = ("fig3",)

    def build(self, records: list[Run]) -> SectionResult:
        """The per-tolerance table, panels (a)-(d) with captions, and the measured trends as notes."""
        groups = _groups(records)
        colors = _colors(len(groups))
        rows = tolerance_rows(records)
        table = Table("fig3", "Figure 3 data by tolerance", COLUMNS, rows,
                      "Means over the runs at each tolerance (last training epoch, per training batch). Numerical "
                      "error: ODE block output vs a reference solve at 1e-7 on test images.")
        fig_a = _panel_a(groups, colors)
        fig_b, time_summary = _panel_b(groups, colors, records)
        fig_c, ratio_summary = _panel_c(groups, colors, records)
        fig_d, epoch_summary = _panel_d(groups, colors)
        facts, deviations = classification_protocol(records)
        samples = describe_values(r.config("data.ode_error_samples") for r in records)
        text = [budget_sentence(records),
                "What was run: one ODE-Net trained from scratch at each tolerance (rtol = atol) and seed; every "
                "statistic is measured on that run. The paper shows the same statistics for trained ODE-Nets "
                "without publishing numbers, so the comparison is of trends.",
                *facts, solver_sentence(records),
                f"Numerical error: measured against a dopri5 solve at rtol = atol = 1e-7 of the same trained model on "
                f"the first {samples} test images."]
        notes = [time_summary, ratio_summary, epoch_summary, *deviations]
        missing = [r.run_id for r in records if _tolerance(r) is None]
        if missing:
            notes.append(f"Runs without a recorded tolerance (left out of the panels): {', '.join(missing)}.")
        return SectionResult(text=text, tables=[table], figures=[fig_a, fig_b, fig_c, fig_d], notes=notes)
