"""Table 1 of the paper: test error, parameters, memory and time of MLP, ResNet, RK-Net and ODE-Net.

One row per model (mean and spread over seeds), the paper's published error and parameter count in the adjacent
columns, the paper's complexity classes next to what we measured.
"""

from __future__ import annotations

from typing import Sequence

from .base import MISSING_CELL, Column, Section, SectionResult, Table, mean_std
from .grouping import NOT_APPLICABLE, ConfigGroup, Layout, format_value, layout, ode_cell
from .paper import CHEN2018, CLASSIFICATION_SOLVER, TABLE1, TABLE1_ORDER
from .protocol import budget_sentence, classification_protocol, describe_values, solver_sentence
from .records import Run, natural_key

__all__ = ["Table1", "table1_rows", "model_order"]

#: The keys Table 1's own columns show (every other varying axis gets a column from the layout).
SHOWN = ("model", "grad")


def model_order(models: Sequence[str]) -> list[str]:
    """Paper order (mlp, resnet, rknet, odenet), then any other models alphabetically."""
    known = [m for m in TABLE1_ORDER if m in models]
    return known + sorted((m for m in set(models) if m not in TABLE1_ORDER), key=natural_key)


def _ordered(plan: Layout) -> list[ConfigGroup]:
    order = model_order([g.get("model") for g in plan.groups])
    return sorted(plan.groups, key=lambda g: order.index(g.get("model")))  # stable: first-run order within a model


def table1_rows(runs: Sequence[Run], plan: Layout | None = None) -> list[dict]:
    """One row per configuration (:mod:`.grouping`): means over its seeds plus the paper's values (None where
    absent); ``has_ode`` false for models without an ODE (their solver cells show "-")."""
    plan = plan or layout(runs, SHOWN)
    rows = []
    for group in _ordered(plan):
        model = group.get("model")
        errors = [r.number("test_error") for r in group.runs]
        mean, std, n = mean_std(errors)
        finite = [e for e in errors if e is not None]
        paper = TABLE1.get(model)
        params = group.mean("params")
        rows.append({
            "model": model,
            "label": paper.label if paper else model,
            **plan.row(group),
            "has_ode": group.has_ode,
            "test_error_mean": mean, "test_error_std": std, "test_error_n": n,
            "test_error_min": min(finite) if finite else None, "test_error_max": max(finite) if finite else None,
            "paper_test_error": paper.test_error_pct if paper else None,
            "params": params, "params_m": params / 1e6 if params is not None else None,
            "paper_params_m": paper.params_m if paper else None,
            "peak_memory_mb": group.mean("peak_memory_mb"),
            "peak_memory_kind": describe_values(r.get("peak_memory_kind") for r in group.runs),
            "paper_memory": paper.memory if paper else None,
            "paper_time": paper.time if paper else None,
            "epoch_time_s": group.mean("epoch_time_s"),
            "forward_time_s": group.mean("forward_time_s"),
            "backward_time_s": group.mean("backward_time_s"),
            "nfe_forward": group.mean("nfe_forward"),
            "nfe_backward": group.mean("nfe_backward"),
            "grad": group.get("grad"),
            "epochs": describe_values(r.get("epochs") for r in group.runs),
        })
    return rows


def _error_cell(row: dict) -> str:
    mean, std = row["test_error_mean"], row["test_error_std"]
    if mean is None:
        return MISSING_CELL
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


def _grad_cell(row: dict) -> str:
    return NOT_APPLICABLE if row.get("has_ode") is False else format_value("grad", row.get("grad"))


LEADING = (
    Column("Model", "label"),
)
COLUMNS = (
    Column("Test error % (mean ± sd)", "test_error_mean", render=_error_cell),
    Column("Seeds", "seeds", "d"),
    Column("Paper error %", "paper_test_error", ".2f"),
    Column("Params (M)", "params_m", ".3f"),
    Column("Paper params (M)", "paper_params_m", ".2f"),
    Column("Peak memory (MB)", "peak_memory_mb", ".3g"),
    Column("Memory (paper)", "paper_memory"),
    Column("Time (paper)", "paper_time"),
    Column("Epoch time (s)", "epoch_time_s", ".1f"),
    Column("NFE fwd", "nfe_forward", render=ode_cell("nfe_forward")),
    Column("NFE bwd", "nfe_backward", render=ode_cell("nfe_backward")),
    Column("Gradient", "grad", render=_grad_cell),
)


class Table1(Section):
    """Table 1 (MNIST classifiers). Reports runs of ``experiment=table1``, and classification runs made without an
    experiment (so ``neode compare runs=...`` over single runs gives a Table 1 too)."""

    name = "table1"
    title = "Table 1: MLP, ResNet, RK-Net and ODE-Net classifiers"
    experiments = ("table1",)

    def select(self, records: Sequence[Run]) -> list[Run]:
        """Runs of ``experiment=table1``, and classification runs made without an experiment."""
        return [r for r in records
                if r.experiment in self.experiments or (r.experiment is None and r.get("task") == "classification")]

    def build(self, records: list[Run]) -> SectionResult:
        """The table (one row per configuration), the protocol in words, and the deviations from the paper's."""
        plan = layout(records, SHOWN)
        rows = table1_rows(records, plan)
        facts, deviations = classification_protocol(records)
        memory_kind = describe_values(r.get("peak_memory_kind") for r in records)
        caption = (f"{plan.caption()} Test error in percent after the last epoch. Peak memory: {memory_kind} "
                   f"(autograd_saved = bytes autograd holds for the backward pass of one training batch, the quantity "
                   f"behind the paper's O(1) vs O(L) claim; cuda_max_allocated = all CUDA memory). Epoch time: "
                   f"wall-clock seconds of one training epoch. NFE: function evaluations per training batch (last "
                   f"epoch), forward and backward; \"-\": the model has no ODE (so no solver, tolerance or gradient "
                   f"method applies). Paper columns: {CHEN2018}, Table 1 (MNIST, single runs; memory and time are "
                   f"complexity classes there, L = layers, L̃ = solver evaluations).")
        table = Table("table1", "Table 1", (*LEADING, *plan.columns(), *COLUMNS), rows, caption)
        text = [budget_sentence(records), *facts, solver_sentence(records, CLASSIFICATION_SOLVER)]
        models = {r.model for r in records}
        notes = [*plan.notes(), *deviations]
        if "mlp" in models:
            notes.append(f"The paper's MLP row is cited by {CHEN2018} from LeCun et al. 1998, not trained by the "
                         "authors; ours is trained with the same protocol as the other models.")
        if "rknet" in models:
            grads = describe_values(r.get("grad") for r in records if r.model == "rknet")
            notes.append(f"RK-Net here is the ODE-Net architecture with gradient {grads} (recorded); with backprop "
                         "through the solver's operations its memory grows with the number of steps, as the paper's "
                         "O(L̃) says.")
        return SectionResult(text=text, tables=[table], notes=notes)
