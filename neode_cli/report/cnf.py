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

from .base import MISSING_CELL, Column, Figure, Section, SectionResult, Table, mean_std
from .figures import new_figure, to_png
from .grouping import ConfigGroup, Layout, comparison_key, layout, ode_cell
from .paper import CHEN2018, CNF_SOLVER, EXAMPLES_URL, FFJORD, FFJORD_SOLVER
from .protocol import budget_sentence, describe_values, distinct, seeds_sentence, solver_sentence
from .records import Run, natural_key
from .verdicts import MIN_SEEDS, enough_seeds, seeds_withheld

__all__ = ["Fig4", "Fig5", "FfjordToys", "fig4_rows", "fig4_pairs", "likelihood_rows", "iterations"]

#: Display order and names of the flow models (others follow alphabetically).
MODEL_ORDER = ("planar_nf", "cnf")
MODEL_LABELS = {"planar_nf": "NF (planar)", "cnf": "CNF"}
#: FFJORD reports about 70-100 function evaluations per solve on the 2-D toys (no numeric table).
FFJORD_TOY_NFE = (70, 100)
PAPER_ITERATIONS = {"cnf": 10_000, "planar_nf": 500_000}  # Figure 4 (CNF: Adam; NF: RMSprop)
PAPER_OPTIMIZER = {"cnf": "Adam", "planar_nf": "RMSprop"}
#: log Z of the targets that are proper densities, so KL = kl_loss + log Z: U1 by quadrature on [-8, 8]^2
#: (4001^2 points; tests/test_report_cnf.py checks it). U2-U4 are not normalisable on R^2.
LOG_NORMALISERS = {"u1": 1.8775}
#: The keys the Figure 4 table shows itself; the likelihood tables' (architecture spells out the model.* keys).
FIG4_SHOWN = ("model", "target", "model.units")
LIKELIHOOD_SHOWN = ("dataset", "model", "model.field", "model.units", "model.hidden_dims", "model.layer",
                    "model.trace")


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


def _common(group: ConfigGroup) -> dict:
    """Columns every flow table shares: cost means over the configuration's seeds."""
    return {
        "iterations": mean_std(iterations(r) for r in group.runs)[0],
        "params": group.mean("params"),
        "nfe_forward": group.mean("nfe_forward"),
        "nfe_backward": group.mean("nfe_backward"),
        "test_nfe_forward": group.mean("test_nfe_forward"),
        "epoch_time_s": group.mean("epoch_time_s"),
        "train_time_s": group.mean("train_time_s"),
        "has_ode": group.has_ode,
        "trace": describe_values(r.config("model.trace") for r in group.runs) if group.has_ode else None,
    }


def _mean_sd_cell(key: str, spec: str = ".3f"):
    def render(row: dict) -> str:
        mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
        if mean is None:
            return MISSING_CELL
        return f"{mean:{spec}} ± {std:{spec}}" if std is not None else f"{mean:{spec}}"
    return render


# ----------------------------------------------------------------------------------------------------------
# Figure 4: density matching
# ----------------------------------------------------------------------------------------------------------
def _target(run: Run) -> str:
    return str(run.get("target") or run.config("data.target") or "?")


def fig4_rows(runs: Sequence[Run], plan: Layout | None = None) -> list[dict]:
    """One row per configuration (target, model, size, and anything else that varies): ``kl_loss`` mean and sd
    over its seeds, plus cost columns."""
    plan = plan or layout(runs, FIG4_SHOWN)
    rows = []
    for group in plan.groups:
        run = group.runs[0]
        mean, std, n = group.stats("kl_loss")
        target = _target(run)
        log_z = LOG_NORMALISERS.get(target)
        rows.append({"target": target, "model": run.model, "label": _label(run.model), "units": _units(run),
                     "architecture": _architecture(run), **plan.row(group), "kl_loss_mean": mean,
                     "kl_loss_std": std, "kl_loss_n": n,
                     "kl_mean": mean + log_z if mean is not None and log_z is not None else None,
                     "kl_loss_se": group.mean("kl_loss_se"), **_common(group),
                     "_key": comparison_key(group, plan.varying, ignore=("model.units", "target"))})
        rows[-1]["setting"] = group.describe([k for k, _ in rows[-1]["_key"]])
    rows.sort(key=lambda r: (natural_key(r["target"]), _model_rank(r["model"]), r["units"] or 0, r["configuration"]))
    return rows


def fig4_pairs(rows: Sequence[dict]) -> list[dict]:
    """NF and CNF side by side at each matched K = M (and equal other settings): the paper's claim is CNF loss <=
    NF loss; the yes/no is withheld when either side has fewer than :data:`MIN_SEEDS` seeds."""
    pairs = []
    for cnf in (r for r in rows if r["model"] == "cnf"):
        for nf in (r for r in rows if r["model"] == "planar_nf"):
            if (nf["target"], nf["units"], nf["_key"]) != (cnf["target"], cnf["units"], cnf["_key"]):
                continue
            a, b = nf["kl_loss_mean"], cnf["kl_loss_mean"]
            both = a is not None and b is not None
            judged = both and enough_seeds(nf["kl_loss_n"], cnf["kl_loss_n"])
            pairs.append({"target": cnf["target"], "units": cnf["units"], "setting": cnf["setting"],
                          "nf_kl_loss": a, "cnf_kl_loss": b, "nf_seeds": nf["kl_loss_n"],
                          "cnf_seeds": cnf["kl_loss_n"], "cnf_minus_nf": b - a if both else None,
                          "cnf_at_or_below_nf": (b <= a) if judged else None,
                          "verdict": ("yes" if b <= a else "no") if judged else
                          (seeds_withheld(nf["kl_loss_n"], cnf["kl_loss_n"]) if both else MISSING_CELL)})
    return pairs


FIG4_LEADING = (
    Column("Target", "target"),
    Column("Model", "label"),
    Column("K / M", "units", "d"),
)
FIG4_COLUMNS = (
    Column("KL loss (mean ± sd)", "kl_loss_mean", render=_mean_sd_cell("kl_loss")),
    Column("MC s.e.", "kl_loss_se", ".3f"),
    Column("KL (U1: + log Z)", "kl_mean", ".3f"),
    Column("Seeds", "seeds", "d"),
    Column("Iterations", "iterations", ",.0f"),
    Column("NFE fwd", "nfe_forward", render=ode_cell("nfe_forward")),
    Column("NFE bwd", "nfe_backward", render=ode_cell("nfe_backward")),
    Column("Epoch time (s)", "epoch_time_s", ".1f"),
)
FIG4_PAIR_COLUMNS = (
    Column("Target", "target"),
    Column("K = M", "units", "d"),
    Column("NF KL loss", "nf_kl_loss", ".3f"),
    Column("CNF KL loss", "cnf_kl_loss", ".3f"),
    Column("CNF − NF", "cnf_minus_nf", "+.3f"),
    Column("Seeds NF / CNF", "nf_seeds", render=lambda r: f"{r['nf_seeds']} / {r['cnf_seeds']}"),
    Column("CNF ≤ NF", "verdict"),
)


def _csv_rows(rows: Sequence[dict]) -> list[dict]:
    """Rows without the helper keys (``_key``) that only pairing uses."""
    return [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]


def _legend(ax) -> None:
    ax.legend(fontsize=7, loc="best", framealpha=0.8)


def _loss_vs_units_figure(rows: Sequence[dict]) -> Figure:
    targets = distinct(r["target"] for r in rows)
    fig, axes = new_figure(ncols=max(1, len(targets)), size=(3.6, 3.2))
    axes = axes if isinstance(axes, list) else [axes]
    for ax, target in zip(axes, targets):
        series = sorted({(r["model"], r["setting"]) for r in rows if r["target"] == target},
                        key=lambda k: (_model_rank(k[0]), k[1]))
        for model, setting in series:
            points = [r for r in rows if (r["target"], r["model"], r["setting"]) == (target, model, setting)
                      and r["units"] is not None and r["kl_loss_mean"] is not None]
            if not points:
                continue
            ax.errorbar([p["units"] for p in points], [p["kl_loss_mean"] for p in points],
                        yerr=[p["kl_loss_std"] or 0.0 for p in points], marker="o", capsize=3,
                        label=_label(model) + (f" ({setting})" if setting else ""))
        ax.set_xscale("log", base=2)
        ax.set_title(f"target {target.upper()}")
        ax.set_xlabel("K (NF layers) / M (CNF units)")
        ax.set_ylabel("KL loss E_q[log q + U]")
        _legend(ax)
    caption = ("Density matching loss after training vs model size, per target (lower is better; the loss is "
               "KL(q||p) - log Z, so only differences within a target are meaningful). Error bars: sd over the "
               "seeds of each configuration (none with one seed).")
    return to_png(fig, "fig4_loss_vs_units", "Figure 4: loss vs K / M", caption)


def _iterations_by_model(runs: Sequence[Run]) -> str:
    """``"planar_nf: 1,000 iterations of adam; cnf: 1,000 iterations of adam"`` as recorded."""
    parts = []
    for model in sorted({r.model for r in runs}, key=_model_rank):
        same = [r for r in runs if r.model == model]
        parts.append(f"{_label(model)} {describe_values((iterations(r) for r in same), ',')} iterations of "
                     f"{describe_values(r.get('optim') for r in same)} (lr {describe_values(r.get('lr') for r in same)})")
    return "; ".join(parts)


def _training_sentence(runs: Sequence[Run], what: str) -> str:
    return (f"Training: {_iterations_by_model(runs)}, batches of {describe_values(r.get('batch_size') for r in runs)} "
            f"{what}. {seeds_sentence(runs)}")


def _field_note(runs: Sequence[Run]) -> str | None:
    """The CNF's vector field and integration setup, as recorded."""
    cnf = [r for r in runs if r.model == "cnf"]
    if not cnf:
        return None
    def m(key):
        return describe_values(r.config(f"model.{key}") for r in cnf)
    parts = []
    if any(r.config("model.field", "planar") == "planar" for r in cnf):
        parts.append(f"planar field dz/dt = sum_m sigma_m(t) u_m tanh(w_m^T z + b_m), parameters from a hypernetwork "
                     f"of t with two tanh layers of {m('hyper_hidden')} units")
    if any(r.config("model.field") == "mlp" for r in cnf):
        parts.append(f"MLP field {m('hidden_dims')} of {m('layer')} layers (FFJORD's toy architecture)")
    return (f"CNF: {'; '.join(parts)}; integration time [0, {m('t1')}], base N(0, {m('base_std')}² I), trace "
            f"{m('trace')} in training (evaluation: exact).")


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
        plan = layout(records, FIG4_SHOWN)
        rows = fig4_rows(records, plan)
        pairs = fig4_pairs(rows)
        judged = [p for p in pairs if p["cnf_at_or_below_nf"] is not None]
        wins = sum(1 for p in judged if p["cnf_at_or_below_nf"])
        withheld = [p for p in pairs if p["cnf_at_or_below_nf"] is None and p["cnf_minus_nf"] is not None]
        table = Table("fig4", "Figure 4: KL loss per configuration", (*FIG4_LEADING, *plan.columns(), *FIG4_COLUMNS),
                      _csv_rows(rows),
                      f"{plan.caption()} KL loss = E_q[log q(x) + U(x)] on n_eval samples of the trained model drawn "
                      "with a fixed seed (exact trace), the reverse KL to exp(-U)/Z up to the constant log Z. MC s.e.: "
                      "Monte-Carlo standard error of that estimate. KL: the true KL(q || p) where log Z is known (U1: "
                      f"log Z = {LOG_NORMALISERS['u1']}). NFE per training batch (last epoch); \"-\": the NF solves "
                      "no ODE.")
        pair_columns = list(FIG4_PAIR_COLUMNS)
        if any(p["setting"] for p in pairs):
            pair_columns.insert(2, Column("Setting", "setting"))
        pair_table = Table("fig4_pairs", "Figure 4: CNF vs NF at matched K = M", pair_columns, pairs,
                           f"The paper's claim ({CHEN2018}, Figure 4): the CNF reaches a lower loss than the NF at "
                           f"every matched size. CNF ≤ NF is judged only with at least {MIN_SEEDS} seeds on each side "
                           "(mean over seeds); otherwise the difference is shown and the verdict withheld.")
        if judged:
            claim = (f"CNF at or below NF in {wins} of {len(judged)} matched (target, K = M) pairs with at least "
                     f"{MIN_SEEDS} seeds each")
        else:
            claim = f"CNF at or below NF: no pair has {MIN_SEEDS} seeds on each side, so no verdict"
        if withheld:
            lower = sum(1 for p in withheld if p["cnf_minus_nf"] <= 0)
            claim += (f"; {len(withheld)} pair(s) withheld for fewer seeds (there the CNF mean is lower in {lower} of "
                      f"{len(withheld)})")
        text = [budget_sentence(records), solver_sentence(records, CNF_SOLVER),
                _training_sentence(records, "samples"), claim + "."]
        targets = distinct(_target(r) for r in records)
        notes = [*plan.notes(),
                 f"{CHEN2018} do not name their targets; these runs use {', '.join(t.upper() for t in targets)} of "
                 "the four energies U1-U4 of Rezende & Mohamed (2015)."]
        unbounded = [t.upper() for t in targets if t in ("u2", "u3", "u4")]
        if unbounded:
            notes.append(f"{', '.join(unbounded)} do not confine z1 (exp(-U) is not normalisable on R^2; Rezende & "
                         "Mohamed plot them on [-4, 4]^2), so their KL loss has no lower bound and part of a lower loss "
                         "is a wider spread along z1; U1 is the only proper density.")
        notes.append(f"{CHEN2018} train the CNF {PAPER_ITERATIONS['cnf']:,} {PAPER_OPTIMIZER['cnf']} iterations and "
                     f"the NF {PAPER_ITERATIONS['planar_nf']:,} {PAPER_OPTIMIZER['planar_nf']} iterations; these runs: "
                     f"{_iterations_by_model(records)}.")
        nf = [r for r in records if r.model == "planar_nf"]
        if nf:
            notes.append("NF: K planar layers z + u tanh(w^T z + b) with Rezende & Mohamed's constraint on u, base "
                         f"N(0, {describe_values(r.config('model.base_std') for r in nf)}² I).")
        field = _field_note(records)
        if field:
            notes.append(field)
        notes.append("Density heatmaps and flow snapshots: figures/density.png and figures/snapshots.png in each run "
                     "folder (the CSV column run_ids names them).")
        return SectionResult(text=text, tables=[pair_table, table], figures=[_loss_vs_units_figure(rows)],
                             notes=notes)


# ----------------------------------------------------------------------------------------------------------
# Maximum likelihood: Figure 5 and FFJORD's toys
# ----------------------------------------------------------------------------------------------------------
def _dataset(run: Run) -> str:
    return str(run.get("dataset") or run.config("data.name") or "?")


def likelihood_rows(runs: Sequence[Run], plan: Layout | None = None) -> list[dict]:
    """One row per configuration (dataset, model, architecture, and anything else that varies): held-out
    ``test_nll`` mean and sd over its seeds, plus cost."""
    plan = plan or layout(runs, LIKELIHOOD_SHOWN)
    rows = []
    for group in plan.groups:
        run = group.runs[0]
        mean, std, n = group.stats("test_nll")
        extra = [k for k in plan.varying if k not in LIKELIHOOD_SHOWN]
        rows.append({"dataset": _dataset(run), "model": run.model, "label": _label(run.model),
                     "architecture": _architecture(run), **plan.row(group), "setting": group.describe(extra),
                     "test_nll_mean": mean, "test_nll_std": std, "test_nll_n": n,
                     "test_nll_se": group.mean("test_nll_se"), **_common(group)})
    rows.sort(key=lambda r: (natural_key(r["dataset"]), _model_rank(r["model"]), natural_key(r["architecture"]),
                             r["configuration"]))
    return rows


LIKELIHOOD_LEADING = (
    Column("Data", "dataset"),
    Column("Model", "label"),
    Column("Architecture", "architecture"),
)
LIKELIHOOD_COLUMNS = (
    Column("Test NLL, nats (mean ± sd)", "test_nll_mean", render=_mean_sd_cell("test_nll")),
    Column("s.e.", "test_nll_se", ".3f"),
    Column("Seeds", "seeds", "d"),
    Column("Iterations", "iterations", ",.0f"),
    Column("Trace (training)", "trace", render=lambda r: "-" if r.get("has_ode") is False else str(r.get("trace"))),
    Column("NFE fwd", "nfe_forward", render=ode_cell("nfe_forward")),
    Column("NFE bwd", "nfe_backward", render=ode_cell("nfe_backward")),
    Column("Epoch time (s)", "epoch_time_s", ".1f"),
)


def _series_label(row: dict) -> str:
    return f"{_label(row['model'])} ({row['architecture']}" + (f", {row['setting']}" if row["setting"] else "") + ")"


def _headroom(ax, fraction: float = 0.45) -> None:
    """Room above the tallest bar, so the legend finds a place that covers no bar."""
    low, high = ax.get_ylim()
    if high > 0:
        ax.set_ylim(min(low, 0), high * (1 + fraction))


def _nll_bars(rows: Sequence[dict], name: str, title: str, caption: str, with_nfe: bool) -> Figure:
    datasets = distinct(r["dataset"] for r in rows)
    series = sorted({_series_label(r) for r in rows}, key=natural_key)
    fig, axes = new_figure(ncols=2 if with_nfe else 1, size=(max(4.0, 0.9 * len(datasets) + 2.0), 3.8))
    fig.subplots_adjust(bottom=1.2 / 3.8)  # room for the rotated dataset names and the axis label
    ax = axes[0] if with_nfe else axes
    width = 0.8 / max(1, len(series))
    for i, label in enumerate(series):
        found = {r["dataset"]: r for r in rows if _series_label(r) == label and r["test_nll_mean"] is not None}
        xs = [j + i * width for j, d in enumerate(datasets) if d in found]
        ax.bar(xs, [found[d]["test_nll_mean"] for d in datasets if d in found], width,
               yerr=[found[d]["test_nll_std"] or 0.0 for d in datasets if d in found], capsize=3, label=label)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(datasets))], datasets, rotation=30, ha="right")
    _headroom(ax)
    ax.set_xlabel("dataset")
    ax.set_ylabel("test NLL (nats, lower is better)")
    ax.set_title("held-out negative log-likelihood")
    _legend(ax)
    if with_nfe:
        nfe_ax = axes[1]
        cnf_rows = [r for r in rows if r.get("nfe_forward")]
        names = [r["dataset"] + (f"\n{r['setting']}" if r["setting"] else "") for r in cnf_rows]
        nfe_ax.bar([j - 0.2 for j in range(len(names))], [r["nfe_forward"] for r in cnf_rows], 0.4, label="forward")
        nfe_ax.bar([j + 0.2 for j in range(len(names))], [r["nfe_backward"] or 0 for r in cnf_rows], 0.4,
                   label="backward")
        band = nfe_ax.axhspan(*FFJORD_TOY_NFE, color="grey", alpha=0.2, label="FFJORD: ~70-100")
        band.set_gid("background")  # a reference band behind the bars, not data
        _headroom(nfe_ax)
        nfe_ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        nfe_ax.set_xlabel("dataset")
        nfe_ax.set_ylabel("NFE per training batch (last epoch)")
        nfe_ax.set_title("CNF function evaluations")
        _legend(nfe_ax)
    return to_png(fig, name, title, caption)


class _LikelihoodSection(Section):
    """Shared build of the maximum-likelihood sections."""

    figure_title = ""
    with_nfe = False
    paper_solver = CNF_SOLVER

    def extra_notes(self, records: Sequence[Run]) -> list[str]:
        return []

    def build(self, records: list[Run]) -> SectionResult:
        from ..tasks.density import SNAPSHOT_FRACTIONS  # the task's own snapshot times

        plan = layout(records, LIKELIHOOD_SHOWN)
        rows = likelihood_rows(records, plan)
        table = Table(self.name, self.title, (*LIKELIHOOD_LEADING, *plan.columns(), *LIKELIHOOD_COLUMNS), rows,
                      f"{plan.caption()} Test NLL: mean negative log-likelihood in nats of a fixed held-out sample of "
                      f"{describe_values(r.get('n_test') for r in records)} points (exact trace, also for runs trained "
                      "with Hutchinson's estimator); s.e.: its standard error. \"-\": the NF solves no ODE. The CSV "
                      "column run_ids names each run folder (figures/density.png, figures/snapshots.png).")
        figure = _nll_bars(rows, f"{self.name}_nll", self.figure_title,
                           "Held-out negative log-likelihood per dataset (error bars: sd over the seeds of each "
                           "configuration, none with one seed)"
                           + ("; right: NFE per training batch, forward and backward." if self.with_nfe else "."),
                           self.with_nfe)
        snapshots = ", ".join(f"{f:.0%}" for f in SNAPSHOT_FRACTIONS)
        text = [budget_sentence(records), solver_sentence(records, self.paper_solver),
                _training_sentence(records, "points"),
                f"Density heatmaps and snapshots of the flow at {snapshots} of the integration time (of the K layers "
                "for the NF): figures/density.png and figures/snapshots.png in each run folder (listed in the CSV), "
                "and under figures/ in TensorBoard."]
        base = describe_values(r.config("model.base_std") for r in records)
        notes = [*plan.notes(),
                 "Toy data are generated in the project (neode_cli/data/toy2d.py) at FFJORD's scales (roughly "
                 f"[-4, 4]^2; https://github.com/rtqichen/ffjord); base density N(0, {base}² I) as recorded. The "
                 f"authors' Figure 5 example cnf.py ({EXAMPLES_URL}) used unscaled circles and a N(0, 0.1 I) base.",
                 *self.extra_notes(records)]
        field = _field_note(records)
        if field:
            notes.append(field)
        return SectionResult(text=text, tables=[table], figures=[figure], notes=notes)


class Fig5(_LikelihoodSection):
    """Figure 5 (maximum likelihood, CNF vs NF with 64 units on circles and moons): ``experiment=fig5``."""

    name = "fig5"
    title = "Figure 5: maximum likelihood, planar CNF (M = 64) vs planar NF (K = 64)"
    experiments = ("fig5",)
    figure_title = "Figure 5: test NLL, CNF vs NF"

    def extra_notes(self, records: Sequence[Run]) -> list[str]:
        return [f"{CHEN2018} show Figure 5 as pictures only (no likelihoods); the NF's log-density of data inverts "
                "each planar layer numerically (bisection, exact gradients by the implicit-function theorem)."]


class FfjordToys(_LikelihoodSection):
    """FFJORD's eight 2-D toys (``experiment=ffjord_toys``) and maximum-likelihood runs made without an experiment."""

    name = "ffjord_toys"
    title = "FFJORD toys: maximum likelihood on 2-D densities"
    experiments = ("ffjord_toys",)
    figure_title = "FFJORD toys: test NLL and NFE"
    with_nfe = True
    paper_solver = FFJORD_SOLVER

    def select(self, records: Sequence[Run]) -> list[Run]:
        return [r for r in records if r.experiment in self.experiments
                or (r.experiment is None and r.get("task") == "density_ml")]

    def extra_notes(self, records: Sequence[Run]) -> list[str]:
        t1 = describe_values(r.config("model.t1") for r in records if r.model == "cnf")
        return [f"{FFJORD} publish these toys as pictures (no numbers) and about {FFJORD_TOY_NFE[0]}-"
                f"{FFJORD_TOY_NFE[1]} NFE; their integration end time is learned (0.5 at the start), here it is fixed "
                f"at t1 = {t1}."]
