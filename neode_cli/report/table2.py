"""Table 2 of the paper: extrapolation RMSE of the latent ODE and the RNN on irregularly sampled spirals.

Rows RNN and latent ODE (other sequence models follow), columns n = observed points per window (30/50/100 in
the paper), each cell the mean ``test_rmse`` over the runs (seeds) with the paper's value beside it, and a
figure of RMSE against n.
"""

from __future__ import annotations

from typing import Sequence

from .base import MISSING_CELL, Column, Section, SectionResult, Table, mean_std
from .figures import new_figure, to_png
from .grouping import ConfigGroup, Layout, comparison_key, layout, ode_cell
from .paper import CHEN2018, EXAMPLES_URL, SEQUENCE_SOLVER
from .protocol import budget_sentence, describe_values, distinct, seeds_sentence, solver_sentence
from .records import Run
from .verdicts import enough_seeds, seeds_withheld

__all__ = ["Table2", "table2_rows", "TABLE2_PAPER", "TABLE2_ORDER"]

#: The paper's Table 2 (predictive RMSE on the test set, extrapolation) by model and observed points n.
TABLE2_PAPER = {
    "rnn": {30: 0.3937, 50: 0.3202, 100: 0.1813},
    "latent_ode": {30: 0.1642, 50: 0.1502, 100: 0.1346},
}
TABLE2_ORDER = ("rnn", "latent_ode")
LABELS = {"rnn": "RNN", "latent_ode": "Latent ODE"}
PAPER_N = (30, 50, 100)
#: The paper's sequence-model solver tolerance.
PAPER_TOLERANCE = 1.5e-8
#: Table 2's own axes: model (rows) and observed points n (column pairs).
SHOWN = ("model", "n_obs")
#: The paper's sizes of the models (Chen et al. 2018, Section 5): config key -> published value.
PAPER_UNITS = {"latent_ode": {"rec_hidden": 25, "latent_dim": 4, "dyn_hidden": 20, "dec_hidden": 20},
               "rnn": {"hidden": 25}}
#: The authors' spiral example (latent_ode.py): data config key -> value (the paper does not give them).
EXAMPLE_DATA = {"a": 0.0, "b": 0.3, "centre": 5.0, "noise_std": 0.3}


def _n_obs(run: Run) -> int | None:
    value = run.get("n_obs", run.config("data.n_obs"))
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _columns_n(runs: Sequence[Run]) -> list[int]:
    return sorted({n for n in map(_n_obs, runs) if n is not None})


def _model_rank(model: str) -> tuple:
    return (TABLE2_ORDER.index(model), "") if model in TABLE2_ORDER else (len(TABLE2_ORDER), model)


def _rows_of(plan: Layout) -> list[list[ConfigGroup]]:
    """Configurations that differ only in n_obs share a table row: [[group at each n], ...] in model order."""
    found: dict[tuple, list[ConfigGroup]] = {}
    for group in plan.groups:
        key = tuple(sorted((k, str(v)) for k, v in group.values.items() if k != "n_obs"))
        found.setdefault(key, []).append(group)
    return sorted(found.values(), key=lambda gs: _model_rank(str(gs[0].get("model"))))


def table2_rows(runs: Sequence[Run], plan: Layout | None = None) -> list[dict]:
    """One row per configuration apart from n (model first); for each n found: mean/sd/seed count of
    ``test_rmse`` and ``test_rmse_interp`` over that configuration's seeds, and the paper's value."""
    plan = plan or layout(runs, SHOWN)
    ns = _columns_n([r for g in plan.groups for r in g.runs])
    rows = []
    for groups in _rows_of(plan):
        first = groups[0]
        model = str(first.get("model"))
        members = [r for g in groups for r in g.runs]
        row: dict = {"model": model, "label": LABELS.get(model, model), **plan.row(first),
                     "runs": len(members), "run_ids": " ".join(r.run_id for r in members),
                     "seed_list": ",".join(str(s) for s in distinct(r.get("seed") for r in members)),
                     "has_ode": first.has_ode}
        row.pop("configuration", None)
        row.pop("seeds", None)  # seeds are counted per cell (rmse_n<n>_runs)
        for n in ns:
            cell = next((g for g in groups if g.get("n_obs") == n), None)
            mean, std, count = cell.stats("test_rmse") if cell else (None, None, 0)
            row[f"rmse_n{n}_mean"], row[f"rmse_n{n}_std"], row[f"rmse_n{n}_runs"] = mean, std, count
            row[f"rmse_interp_n{n}_mean"] = cell.mean("test_rmse_interp") if cell else None
            row[f"paper_rmse_n{n}"] = TABLE2_PAPER.get(model, {}).get(n)
        for key in ("nfe_forward", "nfe_backward", "epoch_time_s", "params"):
            row[key] = mean_std(r.number(key) for r in members)[0]
        row["configuration_label"] = first.describe([k for k in plan.varying if k not in SHOWN])
        rows.append(row)
    return rows


def _rmse_cell(n: int):
    def render(row: dict) -> str:
        mean, std, count = row[f"rmse_n{n}_mean"], row[f"rmse_n{n}_std"], row[f"rmse_n{n}_runs"]
        if mean is None:
            return MISSING_CELL
        spread = f" ± {std:.4f}" if std is not None else ""
        return f"{mean:.4f}{spread} ({count})"
    return render


def _ordering(plan: Layout, ns: Sequence[int]) -> str:
    """Whether the latent ODE's mean extrapolation RMSE is below the RNN's at each n (the paper's claim), for each
    pair of configurations that share everything but the model's own settings; withheld below the seed minimum."""
    by_model: dict[str, list[ConfigGroup]] = {}
    for g in plan.groups:
        by_model.setdefault(str(g.get("model")), []).append(g)
    if "rnn" not in by_model or "latent_ode" not in by_model:
        return "Latent ODE below RNN (the paper's claim): not judged; needs both RNN and latent ODE runs."
    parts = []
    for n in ns:
        odes = [g for g in by_model["latent_ode"] if g.get("n_obs") == n]
        rnns = [g for g in by_model["rnn"] if g.get("n_obs") == n]
        if not odes or not rnns:
            parts.append(f"n={n}: {MISSING_CELL} (no {'latent ODE' if not odes else 'RNN'} run)")
            continue
        for ode in odes:
            key = comparison_key(ode, plan.varying, ignore=("n_obs",))
            matches = [g for g in rnns if comparison_key(g, plan.varying, ignore=("n_obs",)) == key]
            others = [k for k in plan.varying if k not in ("n_obs", "model")]
            if not matches:
                parts.append(f"n={n} [{ode.describe(others)}]: {MISSING_CELL} (no RNN run with the same settings)")
            for rnn in matches:
                (a, _, na), (b, _, nb) = ode.stats("test_rmse"), rnn.stats("test_rmse")
                where = f"n={n}" + (f" [{ode.describe(others)} vs {rnn.describe(others)}]" if others else "")
                if a is None or b is None:
                    parts.append(f"{where}: {MISSING_CELL}")
                elif not enough_seeds(na, nb):
                    parts.append(f"{where}: {seeds_withheld(na, nb)}; means {a:.4f} vs {b:.4f}")
                else:
                    verdict = "yes" if a < b else "NO"
                    parts.append(f"{where}: {verdict} ({a:.4f} vs {b:.4f}, ratio {a / b:.2f}; {na} and {nb} seeds)")
    if not parts:
        return "Latent ODE below RNN (the paper's claim): not judged; no latent ODE and RNN configurations match."
    return "Latent ODE below RNN (the paper's claim; mean test RMSE over seeds): " + "; ".join(parts) + "."


def _figure(rows: Sequence[dict], ns: Sequence[int]):
    fig, ax = new_figure(size=(5.6, 3.8))
    colors = {"rnn": "tab:orange", "latent_ode": "tab:blue"}
    drawn_paper = set()
    for row in rows:
        color = colors.get(row["model"]) if sum(r["model"] == row["model"] for r in rows) == 1 else None
        points = [(n, row[f"rmse_n{n}_mean"], row[f"rmse_n{n}_std"]) for n in ns if row[f"rmse_n{n}_mean"] is not None]
        extra = row.get("configuration_label")
        if points:
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] or 0.0 for p in points],
                        marker="o", capsize=3, color=color,
                        label=f"{row['label']}{' (' + extra + ')' if extra else ''} (measured)")
        paper = TABLE2_PAPER.get(row["model"])
        if paper and row["model"] not in drawn_paper:
            drawn_paper.add(row["model"])
            ax.plot(list(paper), list(paper.values()), ls="--", marker="x", color=colors.get(row["model"], "0.5"),
                    label=f"{row['label']} (paper)")
    ax.set_xlabel("observed points per window (n)")
    ax.set_ylabel("extrapolation RMSE (test)")
    ax.set_title("Table 2: extrapolation RMSE vs n")
    ax.set_xticks(sorted(set(ns) | set(PAPER_N)))
    ax.legend(fontsize=7, loc="best", framealpha=0.8)
    return fig
class Table2(Section):
    """Table 2 (spirals). Reports runs of ``experiment=table2`` and of the quick start (``experiment=quickstart``:
    n = 30 only), and latent-task runs made without an experiment (so ``neode compare runs=...`` over single runs
    gives a Table 2 too)."""

    name = "table2"
    title = "Table 2: latent ODE vs RNN, extrapolation RMSE on irregularly sampled spirals"
    experiments = ("table2", "quickstart")

    def select(self, records: Sequence[Run]) -> list[Run]:
        return [r for r in records
                if r.experiment in self.experiments or (r.experiment is None and r.get("task") == "latent")]

    def build(self, records: list[Run]) -> SectionResult:
        plan = layout(records, SHOWN)
        rows = table2_rows(records, plan)
        ns = _columns_n(records)
        columns = [Column("Model", "label"), *plan.columns()]
        for n in ns:
            columns.append(Column(f"n={n}: RMSE (mean ± sd, seeds)", f"rmse_n{n}_mean", render=_rmse_cell(n)))
            columns.append(Column(f"n={n}: paper", f"paper_rmse_n{n}", ".4f"))
        columns += [Column("Epoch time (s)", "epoch_time_s", ".1f"),
                    Column("NFE fwd", "nfe_forward", render=ode_cell("nfe_forward")),
                    Column("NFE bwd", "nfe_backward", render=ode_cell("nfe_backward")),
                    Column("Params", "params", ".0f")]
        window = describe_values(r.get("n_window", r.config("data.n_window")) for r in records)
        extrap = describe_values(r.get("n_extrap", r.config("data.n_extrap")) for r in records)
        caption = (f"{plan.caption('seed count in brackets.')} Test RMSE on the {extrap} time points after each test "
                   f"spiral's observation window (extrapolation), against the noise-free spiral; n = observed "
                   f"points of the {window} in each window. Paper: {CHEN2018}, Table 2 (its data scale and noise are "
                   "not published, so compare orderings, not absolute values). NFE: function evaluations per "
                   "training batch (last epoch); \"-\": the model has no ODE. The CSV also has the interpolation "
                   "RMSE (all window points) per n.")
        table = Table("table2", "Table 2", columns, rows, caption)
        text = [budget_sentence(records), self._data_sentence(records), self._model_sentence(records),
                self._training_sentence(records), seeds_sentence(records),
                solver_sentence(records, SEQUENCE_SOLVER),
                _ordering(plan, [n for n in ns if n in PAPER_N] or ns)]
        figure = to_png(_figure(rows, ns), "table2_rmse",
                        "Extrapolation RMSE against observed points",
                        "Mean test extrapolation RMSE (error bars: sd over the seeds of each configuration) against "
                        f"n, measured (solid) and {CHEN2018}, Table 2 (dashed).")
        notes = [*plan.notes(), *self._deviations(records)]
        return SectionResult(text=text, tables=[table], figures=[figure], notes=notes)

    @staticmethod
    def _data_sentence(runs: Sequence[Run]) -> str:
        def cfg(key):
            return describe_values(r.config(f"data.{key}") for r in runs)
        return (f"Data: {cfg('n_spirals')} spirals ({describe_values(r.get('n_train') for r in runs)} train, "
                f"{describe_values(r.get('n_test') for r in runs)} test), windows of {cfg('n_window')} equally "
                f"spaced times plus {cfg('n_extrap')} extrapolation times; spiral r = {cfg('a')} + {cfg('b')}·θ, "
                f"θ up to {cfg('theta_max')} on {cfg('n_grid')} points, centres ±{cfg('centre')}, noise std "
                f"{cfg('noise_std')}, data seed {cfg('seed')}; n observed points sampled without replacement: "
                f"{describe_values((_n_obs(r) for r in runs), flag_differences=False)}.")

    @staticmethod
    def _model_sentence(runs: Sequence[Run]) -> str:
        """The models' sizes as recorded (units of each layer), per model."""
        parts = []
        for model in sorted({r.model for r in runs}, key=_model_rank):
            same = [r for r in runs if r.model == model]

            def m(key, same=same):
                return describe_values(r.config(f"model.{key}") for r in same)
            if model == "latent_ode":
                parts.append(f"latent ODE: recognition RNN of {m('rec_hidden')} units (cell {m('cell')}) read "
                             f"backwards, latent dimension {m('latent_dim')}, dynamics {m('latent_dim')}-"
                             f"{m('dyn_hidden')}-{m('latent_dim')} ({m('activation')}), decoder {m('latent_dim')}-"
                             f"{m('dec_hidden')}-{m('obs_dim')}")
            elif model == "rnn":
                parts.append(f"RNN: {m('hidden')} units (cell {m('cell')})")
            else:
                parts.append(f"{model}: {describe_values(r.get('params') for r in same)} parameters")
        return "Models (as recorded): " + "; ".join(parts) + "."

    @staticmethod
    def _training_sentence(runs: Sequence[Run]) -> str:
        return (f"Training: {describe_values(r.get('epochs') for r in runs)} epochs of "
                f"{describe_values(r.get('batch_size') for r in runs)} spirals per batch, "
                f"{describe_values(r.get('optim') for r in runs)} at lr {describe_values(r.get('lr') for r in runs)}; "
                f"devices {describe_values(r.get('device') for r in runs)}. Reported: the last epoch.")

    @staticmethod
    def _deviations(runs: Sequence[Run]) -> list[str]:
        notes = []
        differs = []
        for key, value in EXAMPLE_DATA.items():
            found = distinct(r.config(f"data.{key}") for r in runs)
            if found and found != [value]:
                differs.append(f"{key} {describe_values(found)} (example: {value:g})")
        notes.append(f"{CHEN2018} leave the spiral equations, noise, split, optimiser and iterations open; the "
                     f"authors' example latent_ode.py ({EXAMPLES_URL}) uses r = a + b·θ with a = 0, b = 0.3, centres "
                     "±5, noise std 0.3 and Adam at lr 0.01. "
                     + (f"These runs differ from it in: {'; '.join(differs)}." if differs
                        else "These runs use those values (Data line above); RMSE is against the noise-free curve."))
        for model, sizes in PAPER_UNITS.items():
            same = [r for r in runs if r.model == model]
            for key, paper in sizes.items():
                found = distinct(r.config(f"model.{key}") for r in same)
                if found and found != [paper]:
                    notes.append(f"{LABELS[model]} model.{key}: {describe_values(found)} (paper: {paper}).")
        cells = distinct(r.config("model.cell") for r in runs)
        if any(c != "rnn" for c in cells):
            notes.append(f"Recurrent cell {describe_values(cells)}: the paper's RNNs are plain (Elman) RNNs, as is the "
                         "authors' recognition network; a gated cell (gru) makes a much stronger RNN baseline, so "
                         "that comparison is not the paper's.")
        ode_runs = [r for r in runs if r.number("nfe_forward")]
        tolerances = distinct(r.get("rtol") for r in ode_runs)
        if tolerances and any(t != PAPER_TOLERANCE for t in tolerances):
            notes.append(f"Solver tolerance {describe_values(tolerances, '.0e')} (paper: {PAPER_TOLERANCE:g}, below "
                         "float32 resolution).")
        grads = distinct(r.get("grad") for r in ode_runs)
        if any(g != "adjoint" for g in grads):
            notes.append(f"Latent ODE gradients: {describe_values(grads)} (paper: adjoint); the gradient agrees up "
                         "to the solver tolerance, the cost does not.")
        return notes
