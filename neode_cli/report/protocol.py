"""What actually ran, read from run records: budget, data, epochs, solver, and deviations from the paper.

Sections use these to state their protocol in words; every statement comes from ``metrics.json`` (its flat keys
and the recorded resolved ``config``), never from what a config file would have said.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from .base import format_number
from .grouping import group_by_configuration, has_ode
from .paper import TABLE1_PROTOCOL
from .records import Run, natural_key

__all__ = ["distinct", "describe_values", "budget_sentence", "solver_sentence", "seeds_sentence",
           "classification_protocol", "images_per_epoch", "BUDGET_ORDER"]

#: Budgets from smallest to largest protocol.
BUDGET_ORDER = ("smoke", "cpu", "paper")

_DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


def distinct(values: Iterable[Any]) -> list[Any]:
    """The distinct values (None dropped), in a stable order (numbers by value, the rest naturally as text)."""
    seen: dict[str, Any] = {}
    for value in values:
        if value is None:
            continue
        key = repr(value) if not isinstance(value, (list, dict)) else repr(value)
        seen.setdefault(key, value)
    items = list(seen.values())
    numbers = sorted((v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)), key=float)
    others = sorted((v for v in items if not (isinstance(v, (int, float)) and not isinstance(v, bool))),
                    key=lambda v: natural_key(str(v)))
    return numbers + others


def describe_values(values: Iterable[Any], spec: str = "g", flag_differences: bool = True) -> str:
    """``"3"`` for one distinct value, ``"2, 3 (differ between runs)"`` for several (without the remark when
    ``flag_differences`` is false, e.g. for seeds), ``"unknown"`` for none."""
    found = distinct(values)
    if not found:
        return "unknown"
    text = ", ".join(format_number(v, spec) if isinstance(v, (int, float)) else str(v) for v in found)
    return text if len(found) == 1 or not flag_differences else f"{text} (differ between runs)"


def budget_sentence(runs: Sequence[Run]) -> str:
    """One sentence naming the budget(s) the runs were made with."""
    budgets = distinct(r.budget for r in runs)
    if not budgets:
        return "Budget: not recorded (runs made without `budget=`)."
    if len(budgets) == 1:
        return f"Budget: `{budgets[0]}`."
    return f"Budgets: {', '.join(f'`{b}`' for b in budgets)} — mixed protocols, so numbers are not comparable across them."


def _value_range(values: Iterable[Any], spec: str) -> str:
    """One value as text, or "low…high (n values)" for several numbers."""
    found = distinct(values)
    numbers = [v for v in found if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(found) > 1 and len(numbers) == len(found):
        return f"{format(numbers[0], spec)}…{format(numbers[-1], spec)} ({len(numbers)} values)"
    return describe_values(found, spec, flag_differences=False)


def solver_sentence(runs: Sequence[Run], paper: str) -> str:
    """What solved the ODEs, per model with an ODE: method, tolerances, gradient method, backend; then ``paper``
    (a cited sentence of :mod:`.paper` saying what the published experiment used)."""
    ode_runs = [r for r in runs if has_ode(r)]
    if not ode_runs:
        return "No run integrated an ODE (no forward NFE recorded)."
    parts = []
    for model in distinct(r.model for r in ode_runs):
        same = [r for r in ode_runs if r.model == model]
        methods = describe_values((r.get("solver") for r in same), flag_differences=False)
        step = distinct(r.get("step_size") for r in same)
        step_text = f", step size {_value_range(step, 'g')}" if step else ""
        parts.append(f"{model}: `{methods}` rtol {_value_range((r.get('rtol') for r in same), '.0e')}, "
                     f"atol {_value_range((r.get('atol') for r in same), '.0e')}{step_text}, "
                     f"gradient {describe_values((r.get('grad') for r in same), flag_differences=False)}, "
                     f"backend {describe_values((r.get('backend') for r in same), flag_differences=False)}")
    return f"Solver actually used: {'; '.join(parts)}. {paper}"


def seeds_sentence(runs: Sequence[Run], single_runs_in_paper: bool = False) -> str:
    """How many runs, configurations (:mod:`.grouping`) and seeds per configuration the section reports."""
    groups = group_by_configuration(runs)
    per = distinct(len(g.runs) for g in groups)
    seeds = describe_values((r.get("seed") for r in runs), flag_differences=False)
    text = (f"Runs: {len(runs)} in {len(groups)} configuration{'s' if len(groups) != 1 else ''}, "
            f"{describe_values(per, flag_differences=False)} seed{'s' if per != [1] else ''} each (seeds {seeds})")
    return text + (" (the paper reports single runs)." if single_runs_in_paper else ".")


def images_per_epoch(run: Run) -> int | None:
    """Training images per epoch: ``batches`` of the last epoch times the batch size (None when unknown)."""
    batches = run.epochs[-1].get("batches") if run.epochs else None
    batch_size = run.get("batch_size") or run.config("data.batch_size")
    if isinstance(batches, int) and isinstance(batch_size, int):
        return min(batches * batch_size, run.get("n_train") or batches * batch_size)
    return None


def _test_images(run: Run) -> int | None:
    n_test = run.get("n_test")
    limit = run.config("trainer.limit_test_batches")
    size = run.config("data.test_batch_size")
    if not isinstance(n_test, int):
        return None
    if limit is None or not isinstance(size, int):
        return n_test
    from ..tasks.base import batch_limit  # the loop's (and the tasks') one rule for batch limits

    count = batch_limit(-(-n_test // size), limit)
    return min(n_test, count * size)


def _check(deviations: list[str], runs: Sequence[Run], label: str, get: Callable[[Run], Any], paper: Any,
           spec: str = "g", why: str = "") -> str:
    values = distinct(get(r) for r in runs)
    text = describe_values(values, spec)
    if values and any(v != paper for v in values):
        paper_text = format_number(paper, spec) if isinstance(paper, (int, float)) else str(paper)
        deviations.append(f"{label}: {text} (paper: {paper_text}){' — ' + why if why else ''}")
    return text


def classification_protocol(runs: Sequence[Run]) -> tuple[list[str], list[str]]:
    """Facts about the classification runs (one line each) and their deviations from the paper's protocol."""
    facts: list[str] = []
    deviations: list[str] = []
    datasets = [_DATASET_NAMES.get(str(r.get("data")), r.get("data")) for r in runs]
    dataset = _check(deviations, runs, "Dataset", lambda r: _DATASET_NAMES.get(str(r.get("data")), r.get("data")),
                     TABLE1_PROTOCOL["dataset"], why="the paper's error rates are MNIST numbers and are not "
                     "comparable to these" if any(d != "MNIST" for d in datasets if d) else "")
    epochs = _check(deviations, runs, "Epochs", lambda r: r.get("epochs"), TABLE1_PROTOCOL["epochs"])
    per_epoch = _check(deviations, runs, "Training images per epoch", images_per_epoch, TABLE1_PROTOCOL["train_images"],
                       ",")
    test = _check(deviations, runs, "Test images evaluated", _test_images, TABLE1_PROTOCOL["test_images"], ",")
    batch = _check(deviations, runs, "Batch size", lambda r: r.get("batch_size"), TABLE1_PROTOCOL["batch_size"])
    _check(deviations, runs, "Optimizer", lambda r: r.get("optim"), "sgd")
    _check(deviations, runs, "Momentum", lambda r: r.config("optim.momentum"), TABLE1_PROTOCOL["momentum"])
    _check(deviations, runs, "Learning-rate milestones",
           lambda r: tuple(r.config("optim.milestones") or ()), TABLE1_PROTOCOL["milestones"])
    _check(deviations, runs, "Augmentation", lambda r: r.get("augmentation"), True,
           why="the paper's example uses RandomCrop(28, padding 4)")
    lr = describe_values((r.get("lr") for r in runs), "g")
    facts.append(f"Data: {dataset}; {per_epoch} training images per epoch, {test} test images; batch size {batch}.")
    facts.append(f"Training: epochs {epochs}; initial learning rate {lr} (as used, after any batch-size scaling); "
                 f"devices {describe_values(r.get('device') for r in runs)}.")
    facts.append(seeds_sentence(runs, single_runs_in_paper=True))
    deviations.append(f"Model selection: {TABLE1_PROTOCOL['selection']}.")
    return facts, deviations
