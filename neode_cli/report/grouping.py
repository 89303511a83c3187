"""Which runs are the same experiment: a run's configuration, groups of runs by it, and what varies.

A run's *configuration* is everything recorded that can change its results: the resolved config
(``metrics.json`` ``config``) together with the record's flat axis keys (``model``, ``data``, ``solver``,
``rtol``, ...), minus the seed and minus the keys that do not change results (device, threads, progress bars,
logging, checkpointing, where data and figures live). Runs with equal configurations differ by seed alone; only
they are pooled (mean ± sample sd over seeds). Every report section groups with this module, so every table has one
row per configuration, names the axes that vary, and shows any other difference instead of averaging over it.

For a model without an ODE (an MLP, a ResNet, an RNN, a planar flow) the solver, tolerances, step size, backend
and gradient method are recorded but unused: they are :data:`NOT_APPLICABLE` in its configuration, never split its
runs, and show as "-".
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Iterable, Mapping, Sequence

from .base import Column, MISSING_CELL, format_number, mean_std
from .records import Run, natural_key

__all__ = ["NOT_APPLICABLE", "Axis", "AXES", "has_ode", "configuration", "ConfigGroup", "group_by_configuration",
           "varying_keys", "Layout", "layout", "ode_cell", "axis_label", "format_value", "comparison_key"]

#: The value (and the cell) of a setting that does not apply to a run: solver settings of a model without an ODE.
NOT_APPLICABLE = "-"


@dataclasses.dataclass(frozen=True)
class Axis:
    """A flat key of ``metrics.json`` that names a study axis; ``config`` is the same value's dotted path in the
    resolved config (dropped from the configuration in favour of the flat key); ``ode``: meaningless without an ODE;
    ``within``: a config group whose option usually decides the value (``dataset`` follows ``data=mnist``), so it
    counts as varying only where it differs under one option of that group (see :func:`varying_keys`)."""

    name: str
    label: str
    config: str | None = None
    spec: str = "g"
    ode: bool = False
    within: str | None = None


#: The axes of a study, in the order their columns appear.
AXES: tuple[Axis, ...] = (
    Axis("model", "Model"),
    Axis("data", "Data"),
    Axis("dataset", "Dataset", "data.name", within="data"),
    Axis("target", "Target", "data.target", within="data"),
    Axis("budget", "Budget"),
    Axis("solver", "Solver", "solver.method", ode=True),
    Axis("rtol", "rtol", "solver.rtol", ".0e", ode=True),
    Axis("atol", "atol", "solver.atol", ".0e", ode=True),
    Axis("step_size", "Step size", "solver.step_size", ode=True),
    Axis("backend", "Backend", "solver.backend", ode=True),
    Axis("grad", "Gradient", "grad.method", ode=True),
    Axis("n_obs", "n_obs", "data.n_obs", "d"),
    Axis("batch_size", "Batch size", "data.batch_size", "d"),
    Axis("epochs", "Epochs", "trainer.max_epochs", "d"),
    Axis("optim", "Optimizer", "optim.name"),
    Axis("lr", "lr", "optim.lr"),
)
_AXIS = {a.name: a for a in AXES}
_ALIASED = {a.config for a in AXES if a.config}

#: Display names of config keys that are common axes of their own.
_LABELS = {"model.units": "K / M", "model.field": "Field",
           "model.cell": "Cell", "model.trace": "Trace", "data.augmentation": "Augmentation"}

#: Config keys that cannot change a run's results: how it ran, where files are, what is drawn for people.
IGNORED_KEYS = frozenset({
    "seed", "trainer.device", "trainer.threads", "trainer.progress", "trainer.resume", "trainer.checkpoint",
    "trainer.figures_every_n_epochs", "data.root", "data.mirrors", "data.download", "data.figure_samples",
    "data.figure_spirals", "data.grid_size", "data.plot_range",
})
IGNORED_PREFIXES = ("logger.", "hydra.")
#: Config groups whose option, once chosen, decides their sub-keys (``model.channels`` follows ``model``).
_CHOICE_GROUPS = ("model", "data", "solver", "grad", "optim")
#: Models that have no ODE, when the record holds no NFE to tell.
NO_ODE_MODELS = frozenset({"mlp", "resnet", "rnn", "planar_nf"})


def has_ode(run: Run) -> bool:
    """Whether the run's model integrates an ODE: recorded forward NFE above 0 (training or test); without NFE in
    the record, by model name (:data:`NO_ODE_MODELS`)."""
    counts = [run.number(k) for k in ("nfe_forward", "test_nfe_forward")]
    known = [c for c in counts if c is not None]
    if known:
        return any(c > 0 for c in known)
    return run.model not in NO_ODE_MODELS


def _flatten(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _flatten(value, f"{prefix}{key}.")
    elif prefix:
        yield prefix[:-1], node


def _is_ode_key(key: str) -> bool:
    axis = _AXIS.get(key)
    return (axis is not None and axis.ode) or key.startswith(("solver.", "grad."))


def configuration(run: Run) -> dict[str, Any]:
    """The run's configuration: axis keys (flat record values, else their config path) and every other config key,
    minus the seed and :data:`IGNORED_KEYS`; missing values are left out; lists and dicts become JSON text; ODE
    settings of a model without an ODE are :data:`NOT_APPLICABLE`."""
    values: dict[str, Any] = {}
    cfg = run.get("config")
    for key, value in _flatten(cfg if isinstance(cfg, Mapping) else {}):
        if key in IGNORED_KEYS or key in _ALIASED or key.startswith(IGNORED_PREFIXES):
            continue
        values[key] = value
    for axis in AXES:
        value = run.get(axis.name) if axis.name in run.summary else (run.config(axis.config) if axis.config else None)
        values[axis.name] = value
    if not has_ode(run):
        values = {k: (NOT_APPLICABLE if _is_ode_key(k) else v) for k, v in values.items()}
    return {k: (json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v)
            for k, v in values.items() if v is not None}


def _sort_key(key: str) -> tuple:
    return (0, [a.name for a in AXES].index(key), ()) if key in _AXIS else (1, 0, natural_key(key))


def _distinct(values: Iterable[Any]) -> list[Any]:
    """Distinct values in a stable order (numbers by value, then text naturally; None last)."""
    seen = {json.dumps(v, sort_keys=True, default=str): v for v in values}
    items = list(seen.values())
    def is_number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    numbers = sorted((v for v in items if is_number(v)), key=float)
    texts = sorted((v for v in items if v is not None and not is_number(v)), key=lambda v: natural_key(str(v)))
    return numbers + texts + ([None] if any(v is None for v in items) else [])


def varying_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys whose value differs between ``configs`` (:func:`configuration` dicts), axes first.

    :data:`NOT_APPLICABLE` values do not count. A sub-key of a config group (``model.channels``, or an axis with
    ``within``) counts only when it differs between configurations with the same option of that group
    (``model=odenet``): otherwise it merely follows the option, which is shown as ``model``. The primary axes
    (solver, tolerances, step size, gradient, batch size, epochs, ...) always count.
    """
    keys = sorted({k for c in configs for k in c}, key=_sort_key)
    found = []
    for key in keys:
        applicable = [c for c in configs if c.get(key) != NOT_APPLICABLE]
        if len(_distinct(c.get(key) for c in applicable)) < 2:
            continue
        group = _AXIS[key].within if key in _AXIS else key.split(".", 1)[0] if "." in key else None
        if group in _CHOICE_GROUPS:
            by_option: dict[str, list] = {}
            for c in applicable:
                by_option.setdefault(json.dumps(c.get(group), default=str), []).append(c.get(key))
            if all(len(_distinct(v)) < 2 for v in by_option.values()):
                continue
        found.append(key)
    return found


def axis_label(key: str) -> str:
    """The column header of a configuration key (``rtol``, ``Solver``, ``model.channels``)."""
    return _AXIS[key].label if key in _AXIS else _LABELS.get(key, key)


def format_value(key: str, value: Any) -> str:
    """A configuration value as shown in a table: "-" where not applicable, "–" where not recorded."""
    if value == NOT_APPLICABLE:
        return NOT_APPLICABLE
    if value is None:
        return MISSING_CELL
    spec = _AXIS[key].spec if key in _AXIS else "g"
    if isinstance(value, float) and spec == "d":
        spec = "g"
    return format_number(value, spec)


@dataclasses.dataclass(frozen=True)
class ConfigGroup:
    """Runs of one configuration: ``runs`` has one run per seed (the first by ``run_id``); ``duplicates`` are
    further runs of the same configuration and seed, left out of every statistic."""

    values: Mapping[str, Any]
    runs: tuple[Run, ...]
    duplicates: tuple[Run, ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        """The configuration's value for ``key``."""
        return self.values.get(key, default)

    @property
    def seeds(self) -> list[Any]:
        """The seeds of the runs, in order."""
        return _distinct(r.get("seed") for r in self.runs if r.get("seed") is not None)

    @property
    def has_ode(self) -> bool:
        """Whether the configuration's model integrates an ODE."""
        return has_ode(self.runs[0])

    def stats(self, key: str) -> tuple[float | None, float | None, int]:
        """Mean, sample sd (None below 2) and count of the runs' finite values of ``key`` (over seeds)."""
        return mean_std(r.number(key) for r in self.runs)

    def mean(self, key: str) -> float | None:
        """Mean over seeds of the runs' finite values of ``key`` (None when there are none)."""
        return self.stats(key)[0]

    def values_of(self, get: Callable[[Run], Any]) -> list[Any]:
        """The distinct values ``get(run)`` takes over the runs."""
        return _distinct(get(r) for r in self.runs)

    def describe(self, keys: Sequence[str]) -> str:
        """``"solver=bosh3, rtol=1e-03"`` for ``keys`` (empty when ``keys`` is)."""
        return ", ".join(f"{k}={format_value(k, self.get(k))}" for k in keys)


def group_by_configuration(runs: Sequence[Run]) -> list[ConfigGroup]:
    """The runs grouped by :func:`configuration`, in the order of each group's first run (runs come sorted by
    ``run_id``); within a group, one run per seed."""
    groups: dict[str, tuple[dict, list[Run], list[Run]]] = {}
    for run in runs:
        values = configuration(run)
        key = json.dumps(values, sort_keys=True, default=str)
        _, members, duplicates = groups.setdefault(key, (values, [], []))
        seed = run.get("seed")
        if seed is not None and any(m.get("seed") == seed for m in members):
            duplicates.append(run)
        else:
            members.append(run)
    return [ConfigGroup(values, tuple(members), tuple(duplicates)) for values, members, duplicates in groups.values()]


def comparison_key(group: ConfigGroup, varying: Sequence[str], ignore: Sequence[str]) -> tuple:
    """The group's values of ``varying`` keys other than ``ignore``, its model's own keys (``model.*``) and the ODE
    settings: what two models must share to be compared like for like (e.g. latent ODE vs RNN at the same data)."""
    keep = [k for k in varying if k not in ignore and k != "model" and not k.startswith("model.") and not _is_ode_key(k)]
    return tuple((k, json.dumps(group.get(k), default=str)) for k in keep)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a section's table shows configurations: one row per :class:`ConfigGroup`; a column for each varying axis
    the section does not already show; the other varying keys, if any, in one "Other differences" column."""

    groups: list[ConfigGroup]
    varying: list[str]
    shown: tuple[str, ...]
    axis_keys: list[str]
    other_keys: list[str]

    def row(self, group: ConfigGroup) -> dict[str, Any]:
        """The configuration columns of ``group``'s row: its axis values, ``other_differences``, ``seeds`` (count),
        ``seed_list`` and ``run_ids`` (CSV only)."""
        row: dict[str, Any] = {f"cfg_{k}": group.get(k) for k in self.axis_keys}
        if self.other_keys:
            row["other_differences"] = group.describe(self.other_keys)
        row["configuration"] = group.describe([k for k in self.varying])
        row["seeds"] = len(group.runs)
        row["seed_list"] = ",".join(str(s) for s in group.seeds)
        row["run_ids"] = " ".join(r.run_id for r in group.runs)
        return row

    def columns(self) -> list[Column]:
        """Columns for the varying axes the section does not show, then "Other differences" when needed."""
        cols = [Column(axis_label(k), f"cfg_{k}", render=_value_cell(k)) for k in self.axis_keys]
        if self.other_keys:
            cols.append(Column("Other differences", "other_differences"))
        return cols

    def caption(self, seeds: str = "Seeds: how many.") -> str:
        """One sentence: how many configurations and runs, which axes vary, and what mean ± sd is over; ``seeds``
        says where the table shows the seed count."""
        runs = sum(len(g.runs) for g in self.groups)
        if self.varying:
            axes = "; ".join(f"{axis_label(k)}: {', '.join(format_value(k, v) for v in self._values(k))}"
                             for k in self.varying)
            what = f"varying across them: {axes}"
        else:
            what = "no setting varies across them"
        return (f"One row per configuration ({len(self.groups)} configurations of {runs} runs; {what}). "
                f"Mean ± sample sd over the seeds of each configuration only; {seeds}")

    def notes(self) -> list[str]:
        """Notes on rows that differ in keys without a column of their own, and on duplicate runs left out."""
        notes = []
        if self.other_keys:
            listed = "; ".join(f"{k} ({', '.join(format_value(k, v) for v in self._values(k))})" for k in self.other_keys)
            notes.append(f"Rows differ in settings this table has no column for (see Other differences): {listed}. "
                         "They are separate configurations, never averaged together.")
        dupes = [r.run_id for g in self.groups for r in g.duplicates]
        if dupes:
            notes.append(f"Left out as repeats of a run with the same configuration and seed: {', '.join(dupes)}.")
        return notes

    def _values(self, key: str) -> list[Any]:
        return _distinct(g.get(key) for g in self.groups if g.get(key) != NOT_APPLICABLE)


def ode_cell(key: str, spec: str = ".1f"):
    """A column renderer that shows "-" in rows of a model without an ODE (``row["has_ode"]`` false), else
    ``row[key]`` formatted with ``spec``: NFE, solver settings and gradient method in every table."""
    def render(row: dict) -> str:
        if row.get("has_ode") is False:
            return NOT_APPLICABLE
        return format_number(row.get(key), spec)
    return render


def _value_cell(key: str):
    def render(row: dict) -> str:
        return format_value(key, row.get(f"cfg_{key}"))
    return render


def layout(runs_or_groups: Sequence[Run] | Sequence[ConfigGroup], shown: Sequence[str] = ()) -> Layout:
    """The :class:`Layout` of a table over ``runs_or_groups`` whose own columns already show ``shown`` keys."""
    groups = (list(runs_or_groups) if runs_or_groups and isinstance(runs_or_groups[0], ConfigGroup)
              else group_by_configuration(runs_or_groups))  # type: ignore[arg-type]
    varying = varying_keys([g.values for g in groups])
    rest = [k for k in varying if k not in shown]
    return Layout(groups, varying, tuple(shown), [k for k in rest if k in _AXIS], [k for k in rest if k not in _AXIS])
