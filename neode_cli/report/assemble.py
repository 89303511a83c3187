"""A report from a collection of run records: overview, one part per section, the run list and the problems.

Everything here is deterministic: runs are already sorted by ``run_id``, sections come in registry order, and no
clock or machine state enters the content.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from .base import Column, Section, SectionResult, Table
from .grouping import axis_label, configuration, format_value, has_ode, layout, ode_cell
from .protocol import distinct
from .records import Collection, Run

__all__ = ["Report", "SectionPart", "build_report", "flat_summary"]

#: Keys of metrics.json shown in the report's run list (all keys go to runs.csv).
RUN_LIST_COLUMNS = (
    Column("Run", "run_id"),
    Column("Status", "status"),
    Column("Experiment", "experiment"),
    Column("Budget", "budget"),
    Column("Model", "model"),
    Column("Seed", "seed", "d"),
    Column("Configuration", "configuration"),
    Column("Solver", "solver", render=ode_cell("solver", "")),
    Column("rtol", "rtol", render=ode_cell("rtol", ".0e")),
    Column("Gradient", "grad", render=ode_cell("grad", "")),
    Column("Epochs", "epochs", "d"),
    Column("Test error %", "test_error", ".2f"),
    Column("NFE fwd", "nfe_forward", render=ode_cell("nfe_forward")),
    Column("Train time (s)", "train_time_s", ".1f"),
)

UNFINISHED_COLUMNS = (
    Column("Run", "run_id"),
    Column("Status", "status"),
    Column("Model", "model"),
    Column("Epochs done", "epochs", "d"),
    Column("Reason", "error"),
)


#: What the run list says for a status recorded without a reason.
_NO_REASON = {"running": "still training, or killed before it could record why (continue it with trainer.resume=true)"}


@dataclasses.dataclass(frozen=True)
class SectionPart:
    """One built section: its id, title, and what it produced (``error`` set when building it failed)."""

    name: str
    title: str
    result: SectionResult
    runs: int
    error: str | None = None


@dataclasses.dataclass
class Report:
    """Everything the writers render. ``data_tables`` go to CSV only (every number of every run and epoch)."""

    title: str
    overview: list[str]
    parts: list[SectionPart]
    run_list: Table
    unfinished: Table
    problems: list[str]
    data_tables: list[Table]
    #: Set by ``neode compare`` when it wrote over an earlier report (that report's title); never rendered.
    replaced: str | None = None

    def tables(self) -> list[Table]:
        """Every table with a CSV file: the sections', the run lists and the data tables."""
        found = [t for part in self.parts for t in part.result.tables]
        return found + [self.run_list, self.unfinished] + self.data_tables


def flat_summary(run: Run) -> dict[str, Any]:
    """``metrics.json`` as one flat row: ``run_id`` first, nested dicts (except ``config``) as ``key.sub``,
    lists as JSON text."""
    row: dict[str, Any] = {"run_id": run.run_id}
    for key, value in run.summary.items():
        if key == "config":
            continue
        if isinstance(value, dict):
            for sub, inner in value.items():
                row[f"{key}.{sub}"] = json.dumps(inner) if isinstance(inner, (list, dict)) else inner
        elif isinstance(value, list):
            row[key] = json.dumps(value)
        else:
            row[key] = value
    return row


def _describe(values: dict, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={format_value(k, values.get(k))}" for k in keys)


def _epoch_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        for epoch in run.epochs:
            rows.append({"run_id": run.run_id, **{k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                                                  for k, v in epoch.items()}})
    return rows


def _build_part(section: Section, runs: list[Run]) -> SectionPart:
    try:
        result = section.build(runs)
        error = None
    except Exception as exc:  # noqa: BLE001 - one broken section must not lose the rest of the report
        result = SectionResult()
        error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return SectionPart(section.name, section.title, result, len(runs), error)


def build_report(collection: Collection, sections: Sequence[Section], title: str,
                 overview: Sequence[str] = ()) -> Report:
    """Build every section that has completed runs among ``collection``, plus the run list and problems.

    ``overview`` lines (e.g. what was searched) come first; counts and budgets are added here.
    """
    completed = collection.completed
    parts = []
    claimed: set[str] = set()
    for section in sections:
        selected = section.select(completed)
        if selected:
            parts.append(_build_part(section, selected))
            claimed.update(r.run_id for r in selected)
    unclaimed = [r.run_id for r in completed if r.run_id not in claimed]
    lines = list(overview)
    budgets = distinct(r.budget for r in collection.runs)
    lines.append(f"Runs: {len(completed)} completed, {len(collection.unfinished)} failed or incomplete, "
                 f"{len(collection.skipped)} records skipped as corrupt or partial.")
    lines.append(f"Budget(s): {', '.join(budgets) if budgets else 'not recorded'}.")
    plan = layout(completed) if completed else None
    if plan is not None:
        varying = ", ".join(axis_label(k) for k in plan.varying) or "nothing"
        lines.append(f"Configurations: {len(plan.groups)} among the completed runs (varying: {varying}); each table "
                     "has one row per configuration and pools only runs that differ by seed.")
    if unclaimed:
        lines.append(f"Completed runs that no section reports (listed under Runs): {len(unclaimed)}.")
    problems = [str(p) for p in collection.skipped] + [str(p) for p in collection.warnings]
    problems += [f"section {p.name} could not be built: {p.error}" for p in parts if p.error]
    every = layout(collection.runs) if collection.runs else None
    run_rows = [{**flat_summary(r), "has_ode": has_ode(r),
                 "configuration": _describe(configuration(r), every.varying if every else [])}
                for r in collection.runs]
    unfinished_rows = [{"run_id": r.run_id, "status": r.status, "model": r.get("model"), "epochs": r.get("epochs"),
                        "error": r.get("error") or _NO_REASON.get(r.status, "")} for r in collection.unfinished]
    return Report(
        title=title,
        overview=lines,
        parts=parts,
        run_list=Table("runs", "All runs", RUN_LIST_COLUMNS, run_rows,
                       "Every run record found (runs.csv holds every key of every metrics.json). Configuration: "
                       "the run's values of the settings that vary across these runs (seed aside); \"-\": does not "
                       "apply (no ODE in the model)."),
        unfinished=Table("unfinished", "Failed or incomplete runs", UNFINISHED_COLUMNS, unfinished_rows,
                         "Not used in any table or figure. Status from metrics.json; a folder with epochs but no "
                         "metrics.json is incomplete."),
        problems=problems,
        data_tables=[Table("epochs", "Per-epoch records", (), _epoch_rows(collection.runs),
                           "Every line of every metrics.jsonl.")],
    )
