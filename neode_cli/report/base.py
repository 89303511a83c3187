"""The pieces a report is made of: tables, figures, and the :class:`Section` interface experiments implement.

A report is a list of sections (one per experiment: Table 1, Figure 3, Table 2, ...), each built from the run
records that belong to it. This module holds no knowledge of any experiment; it is what ``table1.py``,
``fig3.py``, ``table2.py`` and ``cnf.py`` build on, and what the writers (``writers.py``) render.

Writing a section (the whole contract)::

    from neode_cli.report.base import Column, Section, SectionResult, Table

    class Table2(Section):
        name = "table2"                  # stable id: file names (table2.csv, table2_*.png), HTML anchors
        title = "Table 2: latent ODE vs RNN"
        experiments = ("table2",)        # runs whose metrics.json says experiment=table2 belong here

        def build(self, records):        # completed runs only (failed/incomplete ones are listed by the report)
            plan = layout(records, shown=("model",))   # grouping.py: one row per configuration
            rows = [{"model": g.get("model"), **plan.row(g), "rmse": g.mean("test_rmse")} for g in plan.groups]
            table = Table("table2", "Extrapolation RMSE", [Column("Model", "model"), *plan.columns(), ...], rows,
                          caption=plan.caption())  # every row key also goes to table2.csv
            return SectionResult(text=["what was run ..."], tables=[table], figures=[], notes=plan.notes())

then one line in ``neode_cli/report/__init__.py``: ``register(Table2())``. ``build`` must be deterministic (same
records, same result: sort what you group) and must not raise on missing metrics (show "–", add a note). Rows
are configurations from :func:`neode_cli.report.grouping.layout` (mean ± sd over seeds only; the axes that vary get
columns, other differences are flagged); a yes/no claim goes through :mod:`neode_cli.report.verdicts`.
Figures are made with :func:`neode_cli.report.figures.new_figure` and turned into a :class:`Figure` with
:func:`neode_cli.report.figures.to_png`.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, Callable, Iterable, Sequence

from .records import Run

__all__ = ["Column", "Table", "Figure", "SectionResult", "Section", "mean_std", "format_number", "MISSING_CELL"]

#: What a table shows where a value is missing or not finite.
MISSING_CELL = "–"


def format_number(value: Any, spec: str = ".4g") -> str:
    """``value`` formatted with ``spec`` when it is a finite number, else as text; missing -> :data:`MISSING_CELL`."""
    if value is None:
        return MISSING_CELL
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return MISSING_CELL
        return format(value, spec)
    return str(value)


@dataclasses.dataclass(frozen=True)
class Column:
    """One displayed column: ``header`` over the row value ``key`` formatted with ``spec``.

    ``render`` (optional) builds the cell from the whole row instead, e.g. ``"0.42 ± 0.03"`` from the keys
    ``error_mean`` and ``error_std``; the CSV keeps those as separate numeric columns.
    """

    header: str
    key: str
    spec: str = ".4g"
    render: Callable[[dict], str] | None = None

    def cell(self, row: dict) -> str:
        """The text shown for ``row`` in this column."""
        if self.render is not None:
            return self.render(row)
        return format_number(row.get(self.key), self.spec)


@dataclasses.dataclass(frozen=True)
class Table:
    """A table: displayed ``columns`` over ``rows`` (dicts); the CSV gets every key of every row, raw.

    ``name`` is the CSV file stem (``<name>.csv``) and must be unique in a report.
    """

    name: str
    title: str
    columns: Sequence[Column]
    rows: Sequence[dict]
    caption: str = ""

    def csv_keys(self) -> list[str]:
        """Every key of every row, in order of first appearance (the CSV header)."""
        keys: dict[str, None] = {}
        for row in self.rows:
            for key in row:
                keys.setdefault(key, None)
        return list(keys)


@dataclasses.dataclass(frozen=True)
class Figure:
    """A rendered figure: PNG bytes, a file stem ``name`` (``<name>.png``), a title and a caption saying what ran."""

    name: str
    title: str
    caption: str
    png: bytes


@dataclasses.dataclass
class SectionResult:
    """What a section contributes: Markdown paragraphs, then tables, figures, and notes (bullets, e.g. deviations)."""

    text: list[str] = dataclasses.field(default_factory=list)
    tables: list[Table] = dataclasses.field(default_factory=list)
    figures: list[Figure] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


class Section(abc.ABC):
    """One experiment's part of a report (see the module docstring for a complete example).

    Subclasses set ``name`` (stable id), ``title`` and ``experiments`` (the ``experiment`` values of the run
    records they report), and implement :meth:`build`. Override :meth:`select` to claim records by other keys
    (e.g. runs made without an experiment).
    """

    name: str = ""
    title: str = ""
    experiments: tuple[str, ...] = ()

    def select(self, records: Sequence[Run]) -> list[Run]:
        """The records this section reports, in the given order (default: ``experiment`` in ``experiments``)."""
        return [r for r in records if r.experiment in self.experiments]

    @abc.abstractmethod
    def build(self, records: list[Run]) -> SectionResult:
        """Tables, figures and text from the selected *completed* records (never empty). Deterministic; no raising
        on missing metrics."""


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (ddof=1; None for fewer than 2 values) and count of the finite numbers."""
    xs = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    if not xs:
        return None, None, 0
    mean = math.fsum(xs) / len(xs)
    if len(xs) < 2:
        return mean, None, len(xs)
    var = math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    return mean, math.sqrt(var), len(xs)
