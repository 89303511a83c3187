"""``neode <command> [hydra overrides]``: dispatch to a Hydra app over the repository's ``conf/``.

Commands: ``train`` (config ``conf/train.yaml``) and ``compare`` (config ``conf/compare.yaml``). Everything
after the command is handed to Hydra unchanged, so ``--help``, ``--cfg job``, ``-m`` and overrides behave
as in any Hydra app.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from . import sweeps  # registers the resolvers conf/hydra/neode.yaml names (in every process that runs a job)

__all__ = ["main", "find_config_dir", "resume_command", "hydra_string", "COMMANDS"]

#: command -> (primary config name, one-line description)
COMMANDS = {
    "train": ("train", "train a model: neode train model=odenet solver=dopri5 grad=adjoint [overrides]"),
    "compare": ("compare", "tables and figures from run records: neode compare experiment=table1 | runs=[PATH,...]"),
}

USAGE = """usage: neode <command> [hydra overrides] [--help] [--cfg job] [-m]

The command-line lab for neural ODEs (Chen et al. 2018, reproduced and measured).

commands:
{commands}

`neode <command> --help` lists the config groups and their options.
Examples:
  neode train model=odenet solver=dopri5 grad=adjoint
  neode train -m model=odenet,rknet seed=0,1,2 trainer.max_epochs=10
  neode train model=resnet trainer.resume=true hydra.run.dir=outputs/2026-01-01/12-00-00_resnet
"""

#: The arguments of ``neode train`` in the process that parsed them; a job in another process (a joblib
#: worker, a submitit job) does not see them and builds its resume command from its own overrides.
_COMMAND_ARGS: list[str] | None = None


def find_config_dir() -> Path:
    """The ``conf/`` folder: ``$NEODE_CONFIG_DIR`` if set, else next to the package (an editable install)."""
    override = os.environ.get("NEODE_CONFIG_DIR")
    candidate = Path(override) if override else Path(__file__).resolve().parent.parent / "conf"
    if not (candidate / "train.yaml").is_file():
        raise FileNotFoundError(
            f"neode: error: config folder {candidate} not found (no train.yaml); install from a clone with "
            "`pip install -e .` or set NEODE_CONFIG_DIR to the repository's conf/ folder")
    return candidate


def _error(message: str, code: int) -> NoReturn:
    print(f"neode: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


def hydra_string(value: str) -> str:
    """``value`` as a Hydra override value: as it is when Hydra reads it back unchanged, else single-quoted
    (a folder named by a sweep's overrides holds ``=`` and ``,``, which Hydra would read as a sweep)."""
    if value and all(c.isalnum() or c in "_-./@+:" for c in value):
        return value
    # Inside quotes Hydra reads a backslash as an escape only before a quote (or the closing quote).
    escaped = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
    return f"'{escaped}'"


def resume_command(argv: Sequence[str], multirun: bool, run_dir: str, sweep_dir: str | None = None,
                   sweep_subdir: str | None = None) -> str:
    """The command that continues a run: ``argv`` (``neode train`` and its arguments) without an earlier
    ``trainer.resume``/folder override, plus ``trainer.resume=true`` and the run folder (``-m``: the sweep
    folder, so the whole sweep is rerun: finished jobs are skipped; with ``sweep_subdir`` also the job's folder in
    it, for a command that reruns one job of the sweep)."""
    drop = ("trainer.resume=", "hydra.run.dir=", "hydra.sweep.dir=", "hydra.sweep.subdir=")
    args = [a for a in argv if not a.startswith(drop)]
    if multirun:
        folder = [f"hydra.sweep.dir={hydra_string(str(sweep_dir))}"]
        if sweep_subdir is not None:
            folder.append(f"hydra.sweep.subdir={hydra_string(sweep_subdir)}")
    else:
        folder = [f"hydra.run.dir={hydra_string(str(run_dir))}"]
    return shlex.join(["neode", "train", *args, "trainer.resume=true", *folder])


def _hydra_files(cfg) -> dict[str, str]:
    """What Hydra's own ``.hydra/`` would hold (``hydra.output_subdir`` is null: the run writes it)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hydra_root = HydraConfig.instance().cfg
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml(hydra_root),
            "overrides.yaml": OmegaConf.to_yaml(hydra_root.hydra.overrides.task)}


def _resume_command_of_job(hydra_cfg, multirun: bool) -> str:
    """The command that continues this job: the command line plus ``trainer.resume=true`` when this process
    parsed it (the whole sweep: finished jobs are skipped); in a launcher's worker, which does not know the command
    line, ``-m``, this job's own overrides and the hydra overrides, with its folder (it continues this job)."""
    output_dir = hydra_cfg.runtime.output_dir
    sweep_dir = hydra_cfg.sweep.dir if multirun else None
    if _COMMAND_ARGS is not None:
        return resume_command(_COMMAND_ARGS, multirun, output_dir, sweep_dir)
    args = [*(["-m"] if multirun else []), *hydra_cfg.overrides.task,
            *(o for o in hydra_cfg.overrides.hydra if not o.startswith("hydra.mode="))]
    subdir = os.path.relpath(output_dir, sweep_dir) if multirun else None
    return resume_command(args, multirun, output_dir, sweep_dir, subdir)


def _train_job(cfg) -> dict | sweeps.FailedJob:
    """The Hydra task of ``neode train``: one run in Hydra's output folder (a failed job of a sweep returns a
    :class:`~neode_cli.sweeps.FailedJob`, so a parallel launcher can hand it back to the sweep's process)."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    from .train import RunError, train

    hydra_cfg = HydraConfig.get()
    multirun = _is_multirun()
    output_dir = hydra_cfg.runtime.output_dir
    command = _resume_command_of_job(hydra_cfg, multirun)
    if multirun and cfg.trainer.threads is None:
        # A sweep's parallel jobs share the machine's cores (trainer.threads, when set, is applied by train()).
        threads = sweeps.threads_per_job(hydra_cfg.launcher, sweeps.available_cores())
        if threads is not None:
            torch.set_num_threads(threads)
    try:
        return train(cfg, output_dir, dict(hydra_cfg.runtime.choices), start_if_nothing_to_resume=multirun,
                     resume_command=command, hydra_files=_hydra_files(cfg))
    except RunError as exc:
        if multirun and not exc.interrupted:  # a signal stops the whole sweep
            # A sweep records the failed cell and goes on to the next job.
            failed = sweeps.FailedJob(str(output_dir), str(exc))
            sweeps.note_failed(failed)
            print(f"neode: error: job {hydra_cfg.job.num} ({output_dir}): {exc}", file=sys.stderr)
            return failed
        _error(str(exc), exc.exit_code)


def _compare_job(cfg):
    """The Hydra task of ``neode compare`` (implemented in ``neode_cli.report.compare``)."""
    try:
        from .report import compare
    except ImportError as exc:
        _error(f"neode compare is not available in this installation ({exc})", 1)
    try:
        return compare.main(cfg)
    except OSError as exc:  # a report folder that cannot be written: read-only, a file in the way, disk full
        if exc.errno is None:
            raise
        _error(f"cannot write the report: {exc.filename or 'a file of the report'}: {exc.strerror or exc}", 2)


def check_group_choices(config_dir: Path, args: Sequence[str], prog: str = "neode train") -> None:
    """Fail with one line when a ``group=option`` override names an option with no yaml in ``conf/<group>/``.

    Hydra would fail too, with a longer message; this catches the common case (a misspelt model or
    solver, also inside a ``-m`` list ``a,b``) before Hydra starts. Overrides it cannot judge (extra config
    folders, sweep functions, interpolations) are left to Hydra.
    """
    if any(a.startswith(("hydra.searchpath", "--config-dir", "-cd")) for a in args):
        return
    for arg in args:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue
        group, value = arg.split("=", 1)
        group_dir = config_dir / group
        if any(c in group for c in "./@") or not group_dir.is_dir() or any(c in value for c in "()[]{}*$\\"):
            continue
        options = sorted(p.stem for p in group_dir.glob("*.yaml"))
        for option in (v.strip() for v in value.split(",")):
            if option and option != "null" and option not in options:
                _error(f"unknown {group} {option!r}; valid: {', '.join(options)} (see {prog} --help)", 2)


def _check_experiment_has_budget(args: Sequence[str]) -> None:
    """Fail with one line when ``experiment=`` comes without ``budget=``.

    An experiment reads its sizes from ``conf/budget/<experiment>/<budget>.yaml`` through an interpolation in
    its defaults list, which Hydra resolves from the command line only, so there is no default budget.
    """
    experiments = [a.split("=", 1)[1] for a in args if a.startswith("experiment=")]
    if experiments and experiments[0] not in ("", "null") and not any(a.startswith("budget=") for a in args):
        _error(f"experiment={experiments[0]} needs a budget: add budget=smoke (seconds), budget=cpu "
               "(a reduced protocol for a laptop CPU) or budget=paper (the full protocol, for a GPU)", 2)


def _check_experiment_is_a_sweep(args: Sequence[str]) -> None:
    """Fail with one line when ``experiment=`` comes without ``-m``: an experiment is a sweep (its axes live in
    ``hydra.sweeper.params``), and without ``-m`` Hydra would run one job of the defaults instead, quietly.

    ``--cfg``/``--help``/``--info`` (nothing runs) and ``hydra.mode=MULTIRUN`` are left alone.
    """
    experiments = [a.split("=", 1)[1] for a in args if a.startswith("experiment=")]
    if not experiments or experiments[0] in ("", "null"):
        return
    sweeping = any(a in ("-m", "--multirun") or a == "hydra.mode=MULTIRUN" for a in args)
    inspecting = any(a in ("--help", "-h", "--hydra-help", "--info", "-i") or a.startswith(("--cfg", "-c", "--info="))
                     for a in args)
    if not sweeping and not inspecting:
        rest = " ".join(a for a in args if not a.startswith("experiment="))
        _error(f"experiment={experiments[0]} is a sweep: add -m (neode train -m experiment={experiments[0]}"
               f"{' ' + rest if rest else ''})", 2)


def _run_hydra(config_name: str, task: Callable, args: Sequence[str], prog: str) -> None:
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from . import config  # noqa: F401 - registers the schemas in Hydra's ConfigStore

    try:
        config_dir = find_config_dir()
    except FileNotFoundError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2)
    if not (config_dir / f"{config_name}.yaml").is_file():
        _error(f"{prog}: no {config_name}.yaml in {config_dir}; this installation lacks the command's config", 2)
    check_group_choices(config_dir, args, prog)
    config_path = str(config_dir)
    if config_name == "train":
        _check_experiment_has_budget(args)
        _check_experiment_is_a_sweep(args)
    elif config_name == "compare":
        # conf/experiment/ is a group of train: compose compare.yaml from the ConfigStore so that its
        # `experiment=NAME` stays a plain string (see neode_cli/report/compare.py:register_primary_config).
        from .report.compare import register_primary_config

        config_name, config_path = register_primary_config(config_dir)
    GlobalHydra.instance().clear()  # several in-process calls (tests) each start a fresh Hydra
    app = hydra.main(config_path=config_path, config_name=config_name, version_base="1.3")(task)
    global _COMMAND_ARGS
    saved_argv = sys.argv
    sys.argv = [prog, *args]  # Hydra parses sys.argv; argv[0] names the app in its messages
    _COMMAND_ARGS = list(args)
    try:
        app()
    finally:
        sys.argv = saved_argv
        _COMMAND_ARGS = None
        GlobalHydra.instance().clear()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``neode`` console script; ``argv`` defaults to ``sys.argv[1:]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = "\n".join(f"  {name:<9} {desc}" for name, (_, desc) in COMMANDS.items())
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE.format(commands=commands))
        return
    command, rest = args[0], args[1:]
    if command in ("-V", "--version"):
        from . import __version__

        print(f"neode {__version__}")
        return
    if command not in COMMANDS:
        _error(f"unknown command {command!r}; commands: {', '.join(COMMANDS)} (see neode --help)", 2)
    sweeps.FAILED_JOBS.clear()
    job = {"train": _train_job, "compare": _compare_job}[command]
    try:
        _run_hydra(COMMANDS[command][0], job, rest, f"neode {command}")
    except KeyboardInterrupt:  # Ctrl-C before the run took over the signals (imports, Hydra's compose, ...)
        _error(f"interrupted during start-up of neode {command}; nothing was run", 130)
    if sweeps.FAILED_JOBS:
        failed = sweeps.FAILED_JOBS
        _error(f"{len(failed)} run(s) of the sweep failed; their metrics.json say why: {', '.join(failed)}", 1)


if __name__ == "__main__":
    main()
