"""RNODE (Finlay et al. 2020): the same CNF with and without kinetic + Jacobian regularisation, NFE and NLL vs weight.

One row per configuration (:func:`neode_cli.report.grouping.layout`): the regulariser weights are the shown axes,
every other difference gets a column of its own. NFE are counted by the solver: per training batch (forward,
with the regulariser states) and per test solve (``test_nfe_forward``: exact trace, no regulariser states, so it
measures how hard the learned dynamics are to integrate).
"""

from __future__ import annotations

from typing import Sequence

from .base import Column, Section, SectionResult, Table, format_number, mean_std
from .figures import new_figure, to_png
from .grouping import layout
from .paper import FFJORD_SOLVER
from .protocol import budget_sentence, describe_values, seeds_sentence, solver_sentence
from .records import Run

__all__ = ["Rnode", "rnode_rows", "RNODE"]

RNODE = ("Finlay, Jacobsen, Nurbekyan & Oberman 2020, \"How to train your neural ODE: the world of Jacobian and "
         "kinetic regularization\" (arXiv:2002.02798)")
SHOWN = ("reg.kinetic_weight", "reg.jacobian_weight")
METRICS = ("test_nll", "test_nfe_forward", "nfe_forward", "nfe_backward", "train_reg_kinetic",
           "train_reg_jacobian", "train_time_s")


def _weight(run: Run, name: str) -> float:
    value = run.get(f"reg_{name}_weight", run.config(f"reg.{name}_weight"))
    return float(value) if isinstance(value, (int, float)) else 0.0


def rnode_rows(runs: Sequence[Run]) -> list[dict]:
    """One row per configuration, ordered by total weight: the weights, means over seeds of :data:`METRICS`,
    and the test NFE and NLL relative to the unregularised configuration with otherwise equal settings."""
    plan = layout(runs, SHOWN)
    rows = []
    for group in plan.groups:
        first = group.runs[0]
        row = {"kinetic_weight": _weight(first, "kinetic"), "jacobian_weight": _weight(first, "jacobian"),
               **plan.row(group)}
        for key in METRICS:
            mean, std, _ = group.stats(key)
            row[key] = mean
            row[f"{key}_std"] = std
        rows.append(row)
        row["_runs"] = group.runs
    rows.sort(key=lambda r: (r.get("other_differences") or "", r["kinetic_weight"] + r["jacobian_weight"]))
    for row in rows:  # baselines: the unregularised row with the same other settings
        base = next((r for r in rows if r["kinetic_weight"] == 0 and r["jacobian_weight"] == 0
                     and r.get("other_differences") == row.get("other_differences")), None)
        for key in ("test_nfe_forward", "test_nll"):
            ok = base is not None and base.get(key) not in (None, 0) and row.get(key) is not None
            row[f"{key}_vs_unregularised"] = row[key] / base[key] if ok and key == "test_nfe_forward" else (
                row[key] - base[key] if ok else None)
        row.update(_paired(row["_runs"], base["_runs"]) if base is not None and base is not row else {})
    for row in rows:
        del row["_runs"]
    return rows


def _paired(runs: Sequence[Run], baseline: Sequence[Run]) -> dict:
    """Seed-by-seed comparison with the unregularised runs (same seed: same data and initialisation), which
    removes the seed-to-seed spread that dominates small effects: ``paired_seeds``, ``paired_nll_diff`` (mean
    and sd of NLL - NLL(λ=0)), ``paired_fewer_nfe`` (seeds whose test NFE is lower than at λ=0)."""
    by_seed = {r.get("seed"): r for r in baseline}
    diffs, fewer = [], 0
    for run in runs:
        base = by_seed.get(run.get("seed"))
        nll, base_nll = run.number("test_nll"), base.number("test_nll") if base is not None else None
        nfe, base_nfe = run.number("test_nfe_forward"), base.number("test_nfe_forward") if base is not None else None
        if nll is None or base_nll is None or nfe is None or base_nfe is None:
            continue
        diffs.append(nll - base_nll)
        fewer += nfe < base_nfe
    if not diffs:
        return {}
    mean, std, n = mean_std(diffs)
    return {"paired_seeds": n, "paired_nll_diff": mean, "paired_nll_diff_std": std, "paired_fewer_nfe": fewer}


def _mean_sd_cell(key: str, spec: str):
    def render(row: dict) -> str:
        mean, std = row.get(key), row.get(f"{key}_std")
        if mean is None:
            return "–"
        return f"{mean:{spec}} ± {std:{spec}}" if std is not None else f"{mean:{spec}}"
    return render


def _paired_cell(row: dict) -> str:
    if row.get("paired_seeds") is None:
        return "–"
    std = row.get("paired_nll_diff_std")
    spread = f" ± {std:.3f}" if std is not None else ""
    return (f"{row['paired_nll_diff']:+.3f}{spread}; fewer NFE in {row['paired_fewer_nfe']} of "
            f"{row['paired_seeds']} seeds")


def _figure(rows: Sequence[dict]):
    fig, (left, right) = new_figure(ncols=2, size=(4.2, 3.2))
    weights = [r["kinetic_weight"] + r["jacobian_weight"] for r in rows]
    # A log axis needs a place for weight 0: put it one decade below the smallest positive weight.
    positive = [w for w in weights if w > 0]
    zero_at = min(positive) / 10 if positive else 1e-3
    xs = [w if w > 0 else zero_at for w in weights]
    for ax, keys, ylabel, title in (
            (left, (("test_nfe_forward", "test (exact trace)"), ("nfe_forward", "training, forward")),
             "NFE per solve / batch", "Function evaluations vs weight"),
            (right, (("test_nll", "test NLL"),), "test NLL (nats)", "Held-out NLL vs weight")):
        for key, label in keys:
            points = [(x, r[key], r.get(f"{key}_std") or 0.0) for x, r in zip(xs, rows) if r.get(key) is not None]
            if points:
                ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points],
                            marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel(f"lambda = kinetic + jacobian weight (0 drawn at {zero_at:g})")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7, loc="best", framealpha=0.8)
    caption = ("Left: NFE of the evaluation solves (exact trace, no regulariser states) and of the training "
               "forward solves, vs the regulariser weight. Right: held-out NLL. Error bars: sd over seeds (none "
               "with one seed). Weight 0 is the unregularised run.")
    return to_png(fig, "rnode_nfe_nll_vs_weight", "RNODE: NFE and NLL vs regulariser weight", caption)


class Rnode(Section):
    """``experiment=rnode``: a CNF trained at several RNODE weights (table and figure of NFE and NLL vs weight)."""

    name = "rnode"
    title = "RNODE: kinetic + Jacobian regularisation of a CNF, NFE and NLL vs weight"
    experiments = ("rnode",)

    def build(self, records: list[Run]) -> SectionResult:
        plan = layout(records, SHOWN)
        rows = rnode_rows(records)
        columns = [Column("Kinetic weight", "kinetic_weight", "g"), Column("Jacobian weight", "jacobian_weight", "g"),
                   *plan.columns(),
                   Column("Test NLL", "test_nll", render=_mean_sd_cell("test_nll", ".3f")),
                   Column("ΔNLL vs λ=0", "test_nll_vs_unregularised", "+.3f"),
                   Column("Same seed: ΔNLL, NFE", "paired_nll_diff", render=_paired_cell),
                   Column("Test NFE", "test_nfe_forward", render=_mean_sd_cell("test_nfe_forward", ".1f")),
                   Column("Test NFE / λ=0", "test_nfe_forward_vs_unregularised", ".2f"),
                   Column("Train NFE fwd", "nfe_forward", ".1f"), Column("Train NFE bwd", "nfe_backward", ".1f"),
                   Column("Kinetic (train)", "train_reg_kinetic", ".3g"),
                   Column("Jacobian (train)", "train_reg_jacobian", ".3g"),
                   Column("Train s", "train_time_s", ".0f"), Column("Seeds", "seeds", "d")]
        table = Table(self.name, "NFE and test NLL vs regulariser weight", columns, rows,
                      f"{plan.caption()} Test NLL: nats on the held-out points (exact trace); test NFE: mean function "
                      "evaluations per evaluation solve; same seed: the NLL difference to the λ=0 run of the same seed (mean ± sd over seeds) and in how many seeds the test NFE is lower; train NFE: per training batch (last epoch); kinetic / "
                      "Jacobian: the integrated regulariser values, batch means over the last epoch.")
        iterations = describe_values(r.get("epochs", 0) * (r.get("batches_per_epoch") or 0) for r in records)
        text = [f"The regularisers of {RNODE}: the loss adds λ_K ∫||f||² dt + λ_J ∫||∂f/∂z||_F² dt (Hutchinson "
                "estimate sharing the trace's probe), integrated by the solver with the state.",
                budget_sentence(records), solver_sentence(records, FFJORD_SOLVER),
                f"Training: {iterations} iterations on {describe_values(r.get('dataset') for r in records)}, "
                f"batches of {describe_values(r.get('batch_size') for r in records)}. {seeds_sentence(records)}"]
        notes = [*plan.notes(),
                 "Finlay et al. report for FFJORD-style CNFs on MNIST/CIFAR-10 similar bits/dim with 2-3x fewer NFE "
                 "and faster training at λ_K = λ_J = 0.01; on 2-D toys they show pictures, no numbers."]
        return SectionResult(text=text, tables=[table], figures=[_figure(rows)], notes=notes)
