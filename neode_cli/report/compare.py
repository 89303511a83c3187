"""``neode compare``: find run records, build the report, write it to a folder.

Two ways to say which runs:
- ``experiment=NAME`` reads the sweep of ``conf/experiment/NAME.yaml``, which writes to
  ``<root>/NAME/<budget>/`` (root: ``outputs``). Without ``budget=``, the largest budget found is used
  (paper > cpu > smoke) and the report says so.
- ``runs=PATH`` or ``runs=[PATH,...]``: every run record at or below those folders (``budget=`` and
  ``experiment=`` then filter by the records' own keys).

The report folder's name says what it reports: ``<root>/reports/<experiment>-<budget>``, or for ``runs=``
``<root>/reports/runs-<name of the first folder>-<digest of the folders and filters>``. A folder that already holds
a report is replaced, and ``neode compare`` prints a line saying so; a non-empty folder that holds no report is
never written into (one-line error).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from . import registered_sections
from .assemble import Report, build_report
from .protocol import BUDGET_ORDER
from .records import Collection, InputError, collect, natural_key
from .writers import NotAReportFolder, previous_report, write_report

__all__ = ["CompareError", "CompareOptions", "run", "main", "register_primary_config", "PRIMARY_CONFIG"]

#: Name under which :func:`register_primary_config` stores ``conf/compare.yaml`` in Hydra's ConfigStore.
PRIMARY_CONFIG = "neode_compare"  # not "compare": Hydra would match it to conf/compare.yaml as a schema


class CompareError(ValueError):
    """A request ``neode compare`` cannot serve; the message is one line: what is wrong and what to do."""


@dataclasses.dataclass(frozen=True)
class CompareOptions:
    """What to compare and where to write (the keys of ``conf/compare.yaml``)."""

    experiment: str | None = None
    runs: tuple[str, ...] = ()
    budget: str | None = None
    out: str | None = None
    root: str = "outputs"

    @classmethod
    def from_config(cls, cfg: Any) -> "CompareOptions":
        """From the composed config (any mapping with the keys of ``conf/compare.yaml``)."""
        runs = cfg.get("runs")
        if runs is None or runs == "":
            runs = ()
        elif isinstance(runs, (str, Path)):
            runs = (str(runs),)
        else:
            runs = tuple(str(r) for r in runs)
        experiment = cfg.get("experiment")
        budget = cfg.get("budget")
        return cls(experiment=str(experiment) if experiment else None, runs=runs,
                   budget=str(budget) if budget else None,
                   out=str(cfg.get("out")) if cfg.get("out") else None, root=str(cfg.get("root") or "outputs"))


def _budget_rank(name: str) -> tuple:
    """Larger protocols rank higher; unknown budget names rank below the known ones."""
    return (BUDGET_ORDER.index(name) if name in BUDGET_ORDER else -1, natural_key(name))


def _experiment_inputs(options: CompareOptions) -> tuple[list[str], str, list[str]]:
    """The folder of the experiment's runs, the budget used, and overview lines explaining the choice."""
    base = Path(options.root) / options.experiment
    command = f"neode train -m experiment={options.experiment} budget={options.budget or 'cpu'}"
    if not base.is_dir():
        raise CompareError(f"no runs of experiment {options.experiment!r}: {base} does not exist; run `{command}` "
                           f"first, or pass root=<folder holding {options.experiment}/> or runs=[PATH,...]")
    found = sorted((p.name for p in base.iterdir() if p.is_dir()), key=_budget_rank)
    if options.budget:
        if options.budget not in found:
            raise CompareError(f"no runs of experiment {options.experiment!r} with budget {options.budget!r} in {base} "
                               f"(found: {', '.join(found) or 'none'}); run `{command}` first")
        return [str(base / options.budget)], options.budget, []
    if not found:
        raise CompareError(f"no budget folders in {base}; run `{command}` first")
    chosen = found[-1]
    if len(found) == 1:
        lines = [f"Budget `{chosen}`: the only one with runs in `{base}`."]
    else:
        others = ", ".join(f for f in found if f != chosen)
        lines = [f"Budget `{chosen}` chosen as the largest found (also found: {others}; pass budget=... to pick one)."]
    return [str(base / chosen)], chosen, lines


def _filter(collection: Collection, options: CompareOptions) -> Collection:
    keep = collection
    if options.runs and options.budget:
        keep = keep.filtered(lambda r: r.budget == options.budget)
    if options.experiment:
        keep = keep.filtered(lambda r: r.experiment in (options.experiment, None))
    return keep


def _default_out(options: CompareOptions, budget: str | None) -> Path:
    """``<root>/reports/<experiment>-<budget>``, or for ``runs=``: ``runs-<first folder's name>[+<more>]
    [-<experiment>][-<budget>]-<8 hex digits of the resolved folders and filters>`` (same inputs, same folder)."""
    if options.experiment and not options.runs:
        return Path(options.root) / "reports" / f"{options.experiment}-{budget}"
    folders = sorted(str(Path(p).resolve()) for p in options.runs)
    digest = hashlib.sha256("\n".join([*folders, f"experiment={options.experiment}",
                                        f"budget={options.budget}"]).encode()).hexdigest()[:8]
    first = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(folders[0]).name or "root") if folders else "none"
    more = f"+{len(folders) - 1}" if len(folders) > 1 else ""
    name = "-".join(part for part in ("runs", first + more, options.experiment, options.budget, digest) if part)
    return Path(options.root) / "reports" / name


def run(options: CompareOptions) -> tuple[Report, Path, list[Path]]:
    """Build and write the report; return it, its folder and the files written.

    Raises :class:`CompareError` (one line) when there is nothing to compare; bad run records never raise.
    """
    if not options.experiment and not options.runs:
        raise CompareError("nothing to compare: pass experiment=NAME (the sweep of `neode train -m experiment=NAME`) "
                           "or runs=PATH / runs=[PATH,...] (folders holding run records)")
    overview: list[str] = []
    budget = options.budget
    if options.runs:
        inputs = list(options.runs)
    else:
        inputs, budget, overview = _experiment_inputs(options)
    try:
        collection = _filter(collect(inputs), options)
    except InputError as exc:
        raise CompareError(str(exc)) from None
    if not collection.runs and not collection.skipped:
        wanted = " and ".join(f"{k}={v}" for k, v in (("experiment", options.experiment), ("budget", options.budget)) if v)
        raise CompareError(f"no run records (metrics.json) below {', '.join(inputs)}"
                           + (f" matching {wanted}" if wanted else "") + "; check the paths or run the sweep first")
    if options.runs:
        where = ", ".join(sorted(options.runs))
        title = f"neode report: runs in {where}" + "".join(f", {k} {v}" for k, v in (
            ("experiment", options.experiment), ("budget", options.budget)) if v)
    else:
        title = f"neode report: {options.experiment} (budget {budget})"
    overview = [f"Run records searched: {', '.join(f'`{p}`' for p in sorted(inputs))}."] + overview
    report = build_report(collection, registered_sections(), title, overview)
    out = Path(options.out) if options.out else _default_out(options, budget)
    try:
        report.replaced = previous_report(out)
    except NotAReportFolder as exc:
        raise CompareError(str(exc)) from None
    files = write_report(report, out)
    return report, out, files


def summary_lines(report: Report, out: Path, files: Sequence[Path]) -> list[str]:
    """What ``neode compare`` prints: where the report is, what it holds, and every problem with a record."""
    csvs = sum(1 for f in files if f.suffix == ".csv")
    pngs = sum(1 for f in files if f.suffix == ".png")
    lines = [f"report: {out / 'report.html'} (and report.md, {csvs} CSV, {pngs} PNG in {out})"]
    if report.replaced is not None:
        lines.append(f"replaced the earlier report in {out}" + (f" ({report.replaced})" if report.replaced else "")
                     + "; pass out=<folder> to keep reports side by side")
    lines += [f"section {p.name}: {p.runs} runs" + (f" (not built: {p.error})" if p.error else "") for p in report.parts]
    lines += [line for line in report.overview if line.startswith(("Runs:", "Budget `"))]
    lines += [f"{r['status']}: {r['run_id']}" + (f" ({r['error']})" if r["error"] else "") for r in report.unfinished.rows]
    lines += [f"problem: {p}" for p in report.problems]
    return [line for line in lines if line]


def register_primary_config(config_dir: str | Path) -> tuple[str, str]:
    """Store ``<config_dir>/compare.yaml`` in Hydra's ConfigStore; return ``(config_name, config_path)`` for
    ``hydra.main``.

    Why: ``conf/experiment/`` is a config group of ``neode train``, so with ``conf/`` on Hydra's search path
    ``neode compare experiment=table1`` is read as "select option experiment/table1" and fails. Composed from
    the ConfigStore, with a config path that holds no groups (this package), ``experiment`` is the plain string
    key of ``conf/compare.yaml``; the schema ``compare_schema`` (``neode_cli/config.py``) still validates it.
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name=PRIMARY_CONFIG, node=OmegaConf.load(Path(config_dir) / "compare.yaml"))
    return PRIMARY_CONFIG, "pkg://neode_cli.report"


def main(cfg: Any) -> Path:
    """The ``neode compare`` task: compare per ``cfg`` and print where the report went; a user error ends the
    process with one line on stderr (exit status 2)."""
    try:
        report, out, files = run(CompareOptions.from_config(cfg))
    except CompareError as exc:
        print(f"neode: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print("\n".join(summary_lines(report, out, files)))
    return out
