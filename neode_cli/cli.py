"""``neode <command> [hydra overrides]``: dispatch to a Hydra app over the repository's ``conf/``.

Commands: ``train`` (config ``conf/train.yaml``) and ``compare`` (config ``conf/compare.yaml``). Everything
after the command is handed to Hydra unchanged, so ``--help``, ``--cfg job``, ``-m`` and overrides behave
as in any Hydra app.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from . import sweeps  # registers the resolvers conf/hydra/neode.yaml names (in every process that runs a job)
from .distributed import Processes
from .interrupts import exit_code, preemption_signal

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

#: The arguments of ``neode train`` and the process that parsed them; a job in another process (a joblib
#: worker, a submitit job) builds its resume command from its own overrides. The pid tells them apart: a job
#: function pickled by value (``python -m neode_cli.cli`` makes this module ``__main__``, which cloudpickle
#: ships with its globals) carries the sweep process's arguments into the worker.
_COMMAND_ARGS: list[str] | None = None
_COMMAND_PID: int | None = None


def _command_args_here() -> list[str] | None:
    """The command line's arguments when this process parsed them, else None (a launcher's worker or job)."""
    return _COMMAND_ARGS if _COMMAND_PID == os.getpid() else None


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
                   sweep_subdir: str | None = None, launch: Sequence[str] = ("neode",)) -> str:
    """The command that continues a run: ``argv`` (``neode train`` and its arguments) without an earlier
    ``trainer.resume``/folder override, plus ``trainer.resume=true`` and the run folder (``-m``: the sweep
    folder, so the whole sweep is rerun: finished jobs are skipped; with ``sweep_subdir`` also the job's folder in
    it, for a command that reruns one job of the sweep). ``launch`` are the words that start neode
    (:meth:`neode_cli.distributed.Processes.launch_words`: the torchrun command under torchrun)."""
    drop = ("trainer.resume=", "hydra.run.dir=", "hydra.sweep.dir=", "hydra.sweep.subdir=")
    args = [a for a in argv if not a.startswith(drop)]
    if multirun:
        folder = [f"hydra.sweep.dir={hydra_string(str(sweep_dir))}"]
        if sweep_subdir is not None:
            folder.append(f"hydra.sweep.subdir={hydra_string(sweep_subdir)}")
    else:
        folder = [f"hydra.run.dir={hydra_string(str(run_dir))}"]
    return shlex.join([*launch, "train", *args, "trainer.resume=true", *folder])


def _hydra_files(cfg) -> dict[str, str]:
    """What Hydra's own ``.hydra/`` would hold (``hydra.output_subdir`` is null: the run writes it)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hydra_root = HydraConfig.instance().cfg
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml(hydra_root),
            "overrides.yaml": OmegaConf.to_yaml(hydra_root.hydra.overrides.task)}


class _Exit(SystemExit):
    """The end of a process of a torchrun run: its status, and whether every rank knows the run ended so
    (then all wait for each other before leaving, so rank 0's record is written before torchrun stops them)."""

    def __init__(self, code: int, agreed: bool) -> None:
        super().__init__(code)
        self.agreed = agreed


def _resume_command_of_job(hydra_cfg, multirun: bool, launch: Sequence[str] = ("neode",)) -> str:
    """The command that continues this job: the command line plus ``trainer.resume=true`` when this process
    parsed it (the whole sweep: finished jobs are skipped); in a launcher's worker, which does not know the command
    line, ``-m``, this job's own overrides and the hydra overrides, with its folder (it continues this job)."""
    output_dir = hydra_cfg.runtime.output_dir
    sweep_dir = hydra_cfg.sweep.dir if multirun else None
    args = _command_args_here()
    if args is not None:
        return resume_command(args, multirun, output_dir, sweep_dir, launch=launch)
    args = [*(["-m"] if multirun else []), *hydra_cfg.overrides.task,
            *(o for o in hydra_cfg.overrides.hydra if not o.startswith("hydra.mode="))]
    subdir = os.path.relpath(output_dir, sweep_dir) if multirun else None
    return resume_command(args, multirun, output_dir, sweep_dir, subdir, launch=launch)


def _train_job(cfg, processes: Processes | None = None,
               hand_over: Callable[[dict], None] | None = None) -> dict | sweeps.FailedJob | None:
    """The Hydra task of ``neode train``: one run in Hydra's output folder (a failed job of a sweep returns a
    :class:`~neode_cli.sweeps.FailedJob`, so a parallel launcher can hand it back to the sweep's process).
    Under torchrun (rank 0) ``hand_over`` gives the other ranks the composed job before training with them."""
    import torch
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from .train import RunError, train

    processes = processes or Processes()
    hydra_cfg = HydraConfig.get()
    multirun = _is_multirun()
    output_dir = hydra_cfg.runtime.output_dir
    # In a launcher's worker or job process (it parsed no command line), a job stopped by a signal returns after
    # saving, so the process ends normally and the sweep's process decides (submitit's preemption signal aside:
    # its exit status is what requeues the job). In a joblib worker a stop of the sweep means: start no new job.
    launcher = str(hydra_cfg.launcher.get("_target_", "")).lower() if multirun else ""
    job_process = multirun and _command_args_here() is None and ("joblib" in launcher or "submitit" in launcher)
    if job_process and "joblib" in launcher and sweeps.stop_requested(hydra_cfg.sweep.dir, os.getppid()):
        return None
    command = _resume_command_of_job(hydra_cfg, multirun, launch=processes.launch_words())
    choices = dict(hydra_cfg.runtime.choices)
    if multirun and cfg.trainer.threads is None:
        # A sweep's parallel jobs share the machine's cores (trainer.threads, when set, is applied by train()).
        threads = sweeps.threads_per_job(hydra_cfg.launcher, sweeps.available_cores())
        if threads is not None:
            torch.set_num_threads(threads)
    if hand_over is not None:
        hand_over({"cfg": OmegaConf.to_container(cfg, resolve=True), "run_dir": output_dir, "choices": choices,
                   "command": command})
    try:
        return train(cfg, output_dir, choices, start_if_nothing_to_resume=multirun,
                     resume_command=command, hydra_files=_hydra_files(cfg), processes=processes)
    except RunError as exc:
        if processes.distributed:
            if exc.show:
                print(f"neode: error: {exc}", file=sys.stderr)
            raise _Exit(exc.exit_code, exc.agreed) from None
        requeued = "submitit" in launcher and exc.exit_code == exit_code(preemption_signal())
        if multirun and (not exc.interrupted or (job_process and not requeued)):  # a signal stops a sweep in here
            # A sweep records the failed (or, in a job process, stopped) cell and goes on to the next job.
            failed = sweeps.FailedJob(str(output_dir), str(exc), exc.exit_code)
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
    global _COMMAND_ARGS, _COMMAND_PID
    saved_argv = sys.argv
    sys.argv = [prog, *args]  # Hydra parses sys.argv; argv[0] names the app in its messages
    _COMMAND_ARGS, _COMMAND_PID = list(args), os.getpid()
    try:
        app()
    finally:
        sys.argv = saved_argv
        _COMMAND_ARGS, _COMMAND_PID = None, None
        GlobalHydra.instance().clear()


def _lead(processes: Processes, args: Sequence[str]) -> tuple[int, bool]:
    """Rank 0 under torchrun: run Hydra as one process would (folder, logs, ``.hydra/``) and hand the composed
    job to the other ranks; when Hydra ends without a job (``--help``, a bad override) they get the status."""
    handed: list[dict] = []

    def hand_over(job: dict) -> None:
        handed.append(job)
        processes.broadcast(job)

    def job(cfg):
        return _train_job(cfg, processes, hand_over)

    code, agreed = 0, True
    try:
        _run_hydra("train", job, args, "neode train")
    except _Exit as exc:
        code, agreed = int(exc.code), exc.agreed
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        print("neode: error: interrupted during start-up of neode train; nothing was run", file=sys.stderr)
        code = 130
    if not handed:
        processes.broadcast({"exit": code})
    return code, agreed


def _follow(processes: Processes) -> tuple[int, bool]:
    """Ranks > 0 under torchrun: train rank 0's job with it; print only what rank 0 cannot know."""
    from omegaconf import OmegaConf

    from .train import RunError, train

    job = processes.broadcast(None)
    if "exit" in job:
        return job["exit"], True
    try:
        train(OmegaConf.create(job["cfg"]), job["run_dir"], job["choices"], resume_command=job["command"],
              processes=processes)
    except RunError as exc:
        if exc.show:
            print(f"neode: error: rank {processes.rank}: {exc}", file=sys.stderr)
        return exc.exit_code, exc.agreed
    return 0, True


def _run_distributed(processes: Processes, command: str, args: Sequence[str]) -> NoReturn:
    """``torchrun ... -m neode_cli train ...``: one DDP run over all ranks (rank 0 leads, see :func:`_lead`).
    A sweep (``-m``) is refused: torchrun's processes are one run's."""
    if command != "train" or any(a in ("-m", "--multirun") or a == "hydra.mode=MULTIRUN" for a in args):
        what = (f"neode {command} runs as one process" if command != "train" else
                "a sweep (-m) cannot run under torchrun (its processes train one run together)")
        if processes.is_main:
            _error(f"{what}; run it without torchrun, or run one configuration per torchrun command", 2)
        raise SystemExit(2)
    processes.start()
    code, agreed = 1, False
    try:
        code, agreed = _lead(processes, args) if processes.is_main else _follow(processes)
    finally:
        processes.close(agreed)
    # Leave without the interpreter's finalization: gloo's threads can still hold tensors whose destruction then
    # aborts the process (SIGABRT, "terminate called without an active exception"; seen here now and then on
    # a rank of a run that had finished; https://github.com/pytorch/pytorch/pull/179291). Everything neode
    # wrote is closed by now (the record's files are written atomically); flush what is buffered.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``neode`` console script; ``argv`` defaults to ``sys.argv[1:]``. Under torchrun
    (its environment variables set) ``neode train`` is one DistributedDataParallel run over its processes."""
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
    processes = Processes.from_environment()
    if processes.distributed:
        _run_distributed(processes, command, rest)
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
