"""Section 4 of the paper and FFJORD's toys: continuous normalizing flows vs planar flows.

- :class:`Fig4`: density matching (``kl_loss`` = E_q[log q + U], lower is better) of the planar NF with K layers
  vs the planar CNF with M units on the targets U1..U4: loss vs K/M (figure) and a table pairing NF and CNF at
  each matched K = M.
- :class:`Fig5`: maximum likelihood (``test_nll``) of CNF (M = 64) vs NF (K = 64) on circles and moons.
- :class:`FfjordToys`: maximum likelihood with FFJORD's MLP vector field on the eight toys, with NFE.

Density heatmaps and flow snapshots live in each run folder (``figures/*.png``, TensorBoard); the report reads
only run records, so it names those folders rather than copying their images.
"""

from __future__ import annotations

from typing import Sequence

from .base import MISSING_CELL, Column, Figure, Section, SectionResult, Table, format_number, mean_of, mean_std
from .figures import new_figure, to_png
from .protocol import budget_sentence, describe_values, distinct, solver_sentence
from .records import Run, natural_key

__all__ = ["Fig4", "Fig5", "FfjordToys", "fig4_rows", "fig4_pairs", "likelihood_rows", "iterations"]

#: Display order and names of the flow models (others follow alphabetically).
MODEL_ORDER = ("planar_nf", "cnf")
MODEL_LABELS = {"planar_nf": "NF (planar)", "cnf": "CNF"}
#: FFJORD reports about 70-100 function evaluations per solve on the 2-D toys (no numeric table).
FFJORD_TOY_NFE = (70, 100)
PAPER_ITERATIONS = {"cnf": 10_000, "planar_nf": 500_000}  # Figure 4 (CNF: Adam; NF: RMSprop)
#: log Z of the targets that are proper densities, so KL = kl_loss + log Z: U1 by quadrature on [-8, 8]^2
#: (4001^2 points; tests/test_report_cnf.py checks it). U2-U4 are not normalisable on R^2.
LOG_NORMALISERS = {"u1": 1.8775}


def iterations(run: Run) -> int | None:
    """Optimizer steps the run made: the sum of ``batches`` over its epochs, else epochs x batches_per_epoch."""
    counted = [row.get("batches") for row in run.epochs]
    if counted and all(isinstance(b, int) for b in counted):
        return sum(counted)
    epochs, per_epoch = run.get("epochs"), run.get("batches_per_epoch") or run.config("data.batches_per_epoch")
    if isinstance(epochs, int) and isinstance(per_epoch, int):
        return epochs * per_epoch
    return None


def _units(run: Run) -> int | None:
    value = run.config("model.units")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _model_rank(model: str) -> tuple:
    return (MODEL_ORDER.index(model), "") if model in MODEL_ORDER else (len(MODEL_ORDER), model)


def _label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def _architecture(run: Run) -> str:
    """What the model is, in a few words (``planar, M=8``; ``mlp concatsquash 64-64-64``; ``K=8``)."""
    if run.model == "planar_nf" or run.config("model.field") is None:
        units = _units(run)
        return f"K={units}" if units is not None else "?"
    if run.config("model.field") == "mlp":
        dims = run.config("model.hidden_dims") or []
        return f"mlp {run.config('model.layer', '?')} {'-'.join(str(d) for d in dims)}"
    return f"planar, M={_units(run)}"


def _common(group: Sequence[Run]) -> dict:
    """Columns every flow table shares: runs, seeds, iterations, cost."""
    return {
        "runs": len(group),
        "seeds": ",".join(str(s) for s in distinct(r.get("seed") for r in group)),
        "iterations": mean_std(iterations(r) for r in group)[0],
        "params": mean_of(group, "params"),
        "nfe_forward": mean_of(group, "nfe_forward"),
        "nfe_backward": mean_of(group, "nfe_backward"),
        "test_nfe_forward": mean_of(group, "test_nfe_forward"),
        "epoch_time_s": mean_of(group, "epoch_time_s"),
        "train_time_s": mean_of(group, "train_time_s"),
        "trace": describe_values(r.config("model.trace") for r in group) if group[0].model != "planar_nf" else None,
    }


def _mean_sd_cell(key: str, spec: str = ".3f"):
    def render(row: dict) -> str:
        mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
        if mean is None:
            return MISSING_CELL
        return f"{mean:{spec}} ± {std:{spec}}" if std is not None else f"{mean:{spec}}"
    return render


def _nfe_cell(key: str):
    def render(row: dict) -> str:
        return format_number(row.get(key), ".1f") if row.get(key) else MISSING_CELL  # 0: no ODE (planar NF)
    return render


# ----------------------------------------------------------------------------------------------------------
# Figure 4: density matching
# ----------------------------------------------------------------------------------------------------------
def fig4_rows(runs: Sequence[Run]) -> list[dict]:
    """One row per (target, model, size): ``kl_loss`` mean and sd over seeds, plus cost columns."""
    keys = {(str(r.get("target") or r.config("data.target") or "?"), r.model, _units(r)) for r in runs}
    rows = []
    for target, model, units in sorted(keys, key=lambda k: (natural_key(k[0]), _model_rank(k[1]), k[2] or 0)):
        group = [r for r in runs if (str(r.get("target") or r.config("data.target") or "?"), r.model, _units(r))
                 == (target, model, units)]
        mean, std, _ = mean_std(r.number("kl_loss") for r in group)
        log_z = LOG_NORMALISERS.get(target)
        rows.append({"target": target, "model": model, "label": _label(model), "units": units,
                     "architecture": _architecture(group[0]), "kl_loss_mean": mean, "kl_loss_std": std,
                     "kl_mean": mean + log_z if mean is not None and log_z is not None else None,
                     "kl_loss_se": mean_of(group, "kl_loss_se"), **_common(group)})
    return rows


def fig4_pairs(rows: Sequence[dict]) -> list[dict]:
    """NF and CNF side by side at each (target, K = M): the paper's claim is CNF loss <= NF loss."""
    pairs = []
    for target, units in sorted({(r["target"], r["units"]) for r in rows}, key=lambda k: (natural_key(k[0]), k[1] or 0)):
        by_model = {r["model"]: r for r in rows if (r["target"], r["units"]) == (target, units)}
        nf, cnf = by_model.get("planar_nf", {}).get("kl_loss_mean"), by_model.get("cnf", {}).get("kl_loss_mean")
        both = nf is not None and cnf is not None
        pairs.append({"target": target, "units": units, "nf_kl_loss": nf, "cnf_kl_loss": cnf,
                      "cnf_minus_nf": cnf - nf if both else None,
                      "cnf_at_or_below_nf": (cnf <= nf) if both else None})
    return pairs


def _claim_cell(row: dict) -> str:
    value = row.get("cnf_at_or_below_nf")
    return MISSING_CELL if value is None else ("yes" if value else "no")


FIG4_COLUMNS = (
    Column("Target", "target"),
    Column("Model", "label"),
    Column("K / M", "units", "d"),
    Column("KL loss (mean ± sd)", "kl_loss_mean", render=_mean_sd_cell("kl_loss")),
    Column("MC s.e.", "kl_loss_se", ".3f"),
    Column("KL (U1: + log Z)", "kl_mean", ".3f"),
    Column("Runs", "runs", "d"),
    Column("Iterations", "iterations", ",.0f"),
    Column("NFE fwd", "nfe_forward", render=_nfe_cell("nfe_forward")),
    Column("NFE bwd", "nfe_backward", render=_nfe_cell("nfe_backward")),
    Column("Epoch time (s)", "epoch_time_s", ".1f"),
)
FIG4_PAIR_COLUMNS = (
    Column("Target", "target"),
    Column("K = M", "units", "d"),
    Column("NF KL loss", "nf_kl_loss", ".3f"),
    Column("CNF KL loss", "cnf_kl_loss", ".3f"),
    Column("CNF − NF", "cnf_minus_nf", "+.3f"),
    Column("CNF ≤ NF", "cnf_at_or_below_nf", render=_claim_cell),
)


def _loss_vs_units_figure(rows: Sequence[dict]) -> Figure:
    targets = distinct(r["target"] for r in rows)
    fig, axes = new_figure(ncols=max(1, len(targets)), size=(3.4, 3.0))
    axes = axes if isinstance(axes, list) else [axes]
    for ax, target in zip(axes, targets):
        for model in sorted({r["model"] for r in rows if r["target"] == target}, key=_model_rank):
            points = [r for r in rows if r["target"] == target and r["model"] == model
                      and r["units"] is not None and r["kl_loss_mean"] is not None]
            if not points:
                continue
            ax.errorbar([p["units"] for p in points], [p["kl_loss_mean"] for p in points],
                        yerr=[p["kl_loss_std"] or 0.0 for p in points], marker="o", capsize=3, label=_label(model))
        ax.set_xscale("log", base=2)
        ax.set_title(target.upper())
        ax.set_xlabel("K (NF layers) / M (CNF units)")
        ax.set_ylabel("KL loss E_q[log q + U]")
        ax.legend(fontsize=8)
    caption = ("Density matching loss after training vs model size, per target (lower is better; the loss is "
               "KL(q||p) - log Z, so only differences within a target are meaningful). Error bars: sd over seeds.")
    return to_png(fig, "fig4_loss_vs_units", "Figure 4: loss vs K / M", caption)


class Fig4(Section):
    """Figure 4 (density matching, NF vs CNF). Reports ``experiment=fig4`` and density-matching runs made
    without an experiment."""

    name = "fig4"
    title = "Figure 4: density matching, planar NF (K layers) vs planar CNF (M units)"
    experiments = ("fig4",)

    def select(self, records: Sequence[Run]) -> list[Run]:
        return [r for r in records if r.experiment in self.experiments
                or (r.experiment is None and r.get("task") == "density_matching")]

    def build(self, records: list[Run]) -> SectionResult:
        rows = fig4_rows(records)
        pairs = fig4_pairs(rows)
        judged = [p for p in pairs if p["cnf_at_or_below_nf"] is not None]
        wins = sum(1 for p in judged if p["cnf_at_or_below_nf"])
        table = Table("fig4", "Figure 4: KL loss per target, model and size", FIG4_COLUMNS, rows,
                      "KL loss = E_q[log q(x) + U(x)] on n_eval samples of the trained model drawn with a fixed seed "
                      "(exact trace), the reverse KL to exp(-U)/Z up to the constant log Z. MC s.e.: Monte-Carlo "
                      "standard error of that estimate. KL: the true KL(q || p) where log Z is known (U1: log Z = "
                      f"{LOG_NORMALISERS['u1']}). NFE per training batch (last epoch); NF runs solve no ODE.")
        pair_table = Table("fig4_pairs", "Figure 4: CNF vs NF at matched K = M", FIG4_PAIR_COLUMNS, pairs,
                           "The paper's claim: the CNF reaches a lower loss than the NF at every matched size.")
        text = [budget_sentence(records), solver_sentence(records),
                f"Training: {describe_values((iterations(r) for r in records), ',')} iterations of "
                f"{describe_values(r.get('batch_size') for r in records)} samples, optimizer "
                f"{describe_values(r.get('optim') for r in records)} with learning rate "
                f"{describe_values(r.get('lr') for r in records)}; seeds "
                f"{describe_values((r.get('seed') for r in records), flag_differences=False)}.",
                f"CNF at or below NF in {wins} of {len(judged)} matched (target, K = M) pairs."]
        notes = [
            "The paper does not name its targets; we use the four energies U1-U4 of Rezende & Mohamed (2015).",
            "U2-U4 do not confine z1 (exp(-U) is not normalisable on R^2; Rezende & Mohamed plot them on [-4, 4]^2), "
            "so their KL loss has no lower bound and part of a lower loss is a wider spread along z1; U1 is the "
            "only proper density. Models are compared at the same iterations, so the comparison stays like for like.",
            "The paper trains the CNF 10,000 Adam iterations and the NF 500,000 RMSprop iterations; here both models "
            "get the iterations and optimizer listed above (the NF is cheaper per iteration, not better trained). "
            "With few iterations a deeper NF need not reach a lower loss than a shallow one.",
            "NF: K planar layers z + u tanh(w^T z + b) with Rezende & Mohamed's constraint on u, initialised near the "
            "identity. CNF: dz/dt = sum_m sigma_m(t) u_m tanh(w_m^T z + b_m), parameters from a hypernetwork of t "
            "(our choices: 2 tanh layers of 32 units, integration time [0, 1], base N(0, I)).",
            "Density heatmaps and flow snapshots: figures/density.png and figures/snapshots.png in each run folder.",
        ]
        return SectionResult(text=text, tables=[pair_table, table], figures=[_loss_vs_units_figure(rows)],
                             notes=notes)


# ----------------------------------------------------------------------------------------------------------
# Maximum likelihood: Figure 5 and FFJORD's toys
# ----------------------------------------------------------------------------------------------------------
def _dataset(run: Run) -> str:
    return str(run.get("dataset") or run.config("data.name") or "?")


def likelihood_rows(runs: Sequence[Run]) -> list[dict]:
    """One row per (dataset, model, architecture): held-out ``test_nll`` mean and sd over seeds, plus cost."""
    keys = {(_dataset(r), r.model, _architecture(r)) for r in runs}
    rows = []
    for dataset, model, arch in sorted(keys, key=lambda k: (natural_key(k[0]), _model_rank(k[1]), natural_key(k[2]))):
        group = [r for r in runs if (_dataset(r), r.model, _architecture(r)) == (dataset, model, arch)]
        mean, std, _ = mean_std(r.number("test_nll") for r in group)
        rows.append({"dataset": dataset, "model": model, "label": _label(model), "architecture": arch,
                     "test_nll_mean": mean, "test_nll_std": std, "test_nll_se": mean_of(group, "test_nll_se"),
                     **_common(group), "run_dirs": " ".join(r.run_id for r in group)})
    return rows


LIKELIHOOD_COLUMNS = (
    Column("Data", "dataset"),
    Column("Model", "label"),
    Column("Architecture", "architecture"),
    Column("Test NLL, nats (mean ± sd)", "test_nll_mean", render=_mean_sd_cell("test_nll")),
    Column("s.e.", "test_nll_se", ".3f"),
    Column("Runs", "runs", "d"),
    Column("Iterations", "iterations", ",.0f"),
    Column("Trace (training)", "trace"),
    Column("NFE fwd", "nfe_forward", render=_nfe_cell("nfe_forward")),
    Column("NFE bwd", "nfe_backward", render=_nfe_cell("nfe_backward")),
    Column("Epoch time (s)", "epoch_time_s", ".1f"),
)


def _nll_bars(rows: Sequence[dict], name: str, title: str, caption: str, with_nfe: bool) -> Figure:
    datasets = distinct(r["dataset"] for r in rows)
    series = sorted({(r["model"], r["architecture"]) for r in rows}, key=lambda k: (_model_rank(k[0]), k[1]))
    fig, axes = new_figure(ncols=2 if with_nfe else 1, size=(max(3.5, 0.9 * len(datasets) + 1.5), 3.2))
    ax = axes[0] if with_nfe else axes
    width = 0.8 / max(1, len(series))
    for i, (model, arch) in enumerate(series):
        found = {r["dataset"]: r for r in rows if (r["model"], r["architecture"]) == (model, arch)}
        xs = [j + i * width for j, d in enumerate(datasets) if found.get(d, {}).get("test_nll_mean") is not None]
        ys = [found[d]["test_nll_mean"] for d in datasets if found.get(d, {}).get("test_nll_mean") is not None]
        errs = [found[d]["test_nll_std"] or 0.0 for d in datasets if found.get(d, {}).get("test_nll_mean") is not None]
        ax.bar(xs, ys, width, yerr=errs, capsize=3, label=f"{_label(model)} ({arch})")
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))], datasets, rotation=30, ha="right")
    ax.set_ylabel("test NLL (nats, lower is better)")
    ax.legend(fontsize=7)
    if with_nfe:
        nfe_ax = axes[1]
        cnf_rows = [r for r in rows if r.get("nfe_forward")]
        names = [r["dataset"] for r in cnf_rows]
        nfe_ax.bar([j - 0.2 for j in range(len(names))], [r["nfe_forward"] for r in cnf_rows], 0.4, label="forward")
        nfe_ax.bar([j + 0.2 for j in range(len(names))], [r["nfe_backward"] or 0 for r in cnf_rows], 0.4,
                   label="backward")
        nfe_ax.axhspan(*FFJORD_TOY_NFE, color="grey", alpha=0.2, label="FFJORD: ~70-100")
        nfe_ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        nfe_ax.set_ylabel("NFE per training batch (last epoch)")
        nfe_ax.legend(fontsize=7)
    return to_png(fig, name, title, caption)


class _LikelihoodSection(Section):
    """Shared build of the maximum-likelihood sections."""

    figure_title = ""
    with_nfe = False

    def extra_notes(self) -> list[str]:
        return []

    def build(self, records: list[Run]) -> SectionResult:
        rows = likelihood_rows(records)
        table = Table(self.name, self.title, LIKELIHOOD_COLUMNS, rows,
                      "Test NLL: mean negative log-likelihood in nats of a fixed held-out sample (exact trace, "
                      "also for runs trained with Hutchinson's estimator); s.e.: its standard error. The CSV "
                      "column run_dirs names each run folder (figures/density.png, figures/snapshots.png).")
        figure = _nll_bars(rows, f"{self.name}_nll", self.figure_title,
                           "Held-out negative log-likelihood per dataset (error bars: sd over seeds)"
                           + ("; right: NFE per training batch, forward and backward." if self.with_nfe else "."),
                           self.with_nfe)
        text = [budget_sentence(records), solver_sentence(records),
                f"Training: {describe_values((iterations(r) for r in records), ',')} iterations of "
                f"{describe_values(r.get('batch_size') for r in records)} points, optimizer "
                f"{describe_values(r.get('optim') for r in records)} with learning rate "
                f"{describe_values(r.get('lr') for r in records)}; seeds "
                f"{describe_values((r.get('seed') for r in records), flag_differences=False)}.",
                "Density heatmaps and snapshots of the flow at 5, 20, 40, 60, 80 and 100% of the integration time "
                "(of the K layers for the NF): figures/density.png and figures/snapshots.png in each run folder "
                "(listed in the CSV), and under figures/ in TensorBoard."]
        notes = ["Toy data are generated in the project with FFJORD's scales (roughly [-4, 4]^2) and a N(0, I) base; "
                 "the authors' Figure 5 example used unscaled circles and a N(0, 0.1 I) base.", *self.extra_notes()]
        return SectionResult(text=text, tables=[table], figures=[figure], notes=notes)


class Fig5(_LikelihoodSection):
    """Figure 5 (maximum likelihood, CNF vs NF with 64 units on circles and moons): ``experiment=fig5``."""

    name = "fig5"
    title = "Figure 5: maximum likelihood, planar CNF (M = 64) vs planar NF (K = 64)"
    experiments = ("fig5",)
    figure_title = "Figure 5: test NLL, CNF vs NF"

    def extra_notes(self) -> list[str]:
        return ["The paper shows Figure 5 as pictures only (no likelihoods); the NF's log-density of data inverts "
                "each planar layer numerically (bisection, exact gradients by the implicit-function theorem)."]


class FfjordToys(_LikelihoodSection):
    """FFJORD's eight 2-D toys (``experiment=ffjord_toys``) and maximum-likelihood runs made without an experiment."""

    name = "ffjord_toys"
    title = "FFJORD toys: maximum likelihood on eight 2-D densities"
    experiments = ("ffjord_toys",)
    figure_title = "FFJORD toys: test NLL and NFE"
    with_nfe = True

    def select(self, records: Sequence[Run]) -> list[Run]:
        return [r for r in records if r.experiment in self.experiments
                or (r.experiment is None and r.get("task") == "density_ml")]

    def extra_notes(self) -> list[str]:
        return ["FFJORD publishes these toys as pictures (no numbers) and about 70-100 NFE; its integration end "
                "time is learned (0.5 at the start), ours fixed at model.t1."]
