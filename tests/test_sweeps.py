"""Sweeps that scale out: folder names, threads per job, parallel launchers giving the basic launcher's results,
a sweep continued by rerunning its command with trainer.resume=true, and submitit's requeue."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, read_summary, run_neode, tiny_overrides
from neode_cli import sweeps
from neode_cli.interrupts import exit_code

# neode_cli.sweeps silences this deliberate Hydra warning for the CLI; pytest resets warning filters per test.
pytestmark = pytest.mark.filterwarnings("ignore:\\s*'hydra/launcher/:UserWarning")

# Measured results of a run: equal whichever launcher ran it (times and the run's own folder aside).
COMPARED = ("status", "epochs", "params", "train_loss", "test_loss", "test_accuracy", "nfe_forward", "nfe_backward",
            "peak_memory_mb", "seed", "rtol")


def test_path_component_keeps_short_names_and_hashes_the_rest():
    assert sweeps.path_component("seed=1,solver=bosh3") == "seed=1,solver=bosh3"
    assert sweeps.path_component("") == "defaults"
    slashed = sweeps.path_component("data.root=/tmp/x")
    assert "/" not in slashed and slashed.startswith("data.root=_tmp_x-") and len(slashed) == len("data.root=_tmp_x-") + 10
    long_a, long_b = "a=" + "x" * 200, "a=" + "x" * 199 + "y"
    names = sweeps.path_component(long_a), sweeps.path_component(long_b)
    assert names[0] != names[1] and all(len(n) <= sweeps.MAX_NAME for n in names)
    assert sweeps.path_component("..") != ".." and sweeps.path_component(long_a) == names[0]  # stable


def test_sweep_and_job_names_say_what_is_swept_and_ignore_resume():
    command = ["trainer.max_epochs=2", "solver=dopri5,bosh3", "seed=0,1"]
    assert sweeps.sweep_name(command) == "seed=0,1,solver=dopri5,bosh3,trainer.max_epochs=2"
    assert sweeps.sweep_name([*command, "trainer.resume=true"]) == sweeps.sweep_name(command)
    job = ["trainer.max_epochs=2", "solver=bosh3", "seed=1"]
    assert sweeps.job_name(job, command) == "seed=1,solver=bosh3"
    assert sweeps.job_name([*job, "trainer.resume=true"], [*command, "trainer.resume=true"]) == "seed=1,solver=bosh3"
    # Hydra writes a job's values its own way (False for false): still the same value, so left out.
    assert sweeps.job_name(["data.download=False", "seed=1"], ["data.download=false", "seed=0,1"]) == "seed=1"
    assert sweeps.job_name(["seed=0"], ["seed=0"]) == "seed=0"  # nothing varies: the job's overrides


def test_threads_per_job_shares_the_cores_among_parallel_jobs():
    assert sweeps.threads_per_job({"n_jobs": 2}, cores=8) == 4
    assert sweeps.threads_per_job({"n_jobs": 3}, cores=2) == 1
    assert sweeps.threads_per_job({"n_jobs": -1}, cores=8) == 1  # joblib: -1 is one job per core
    assert sweeps.threads_per_job({"n_jobs": -2}, cores=8) == 1
    assert sweeps.threads_per_job({"n_jobs": -5}, cores=8) == 2  # 4 jobs
    assert sweeps.threads_per_job({"cpus_per_task": 6, "timeout_min": 60}, cores=64) == 6
    assert sweeps.threads_per_job({"cpus_per_task": None}, cores=64) is None
    assert sweeps.threads_per_job({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 8) is None


def _runs(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: read_summary(p.parent) for p in sweep.glob("*/metrics.json")}


def test_parallel_launchers_give_the_basic_launchers_runs(tiny_mnist, tmp_path, capsys):
    # A job that trains and one that fails (a negative tolerance): every launcher writes the same records in the
    # same folders, and the command exits 1 naming the failed one, also when it failed in another process.
    args = ["train", "-m", *tiny_overrides(tiny_mnist, "mlp"), "model.hidden=4", "trainer.limit_train_batches=2",
            "trainer.limit_test_batches=1", "logger=none", "seed=1", "solver.rtol=1e-3,-1"]
    launchers = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                 "submitit_local": ["hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1"]}
    results = {}
    for name, launcher in launchers.items():
        sweep = tmp_path / name
        assert run_neode([*args, *launcher, f"hydra.sweep.dir={sweep}"]) == 1, name
        err = capsys.readouterr().err
        assert "1 run(s) of the sweep failed" in err and str(sweep / "solver.rtol=-1") in err, name
        results[name] = _runs(sweep)
    basic = results["basic"]
    assert sorted(basic) == ["solver.rtol=-1", "solver.rtol=0.001"]  # seed=1 is in the sweep folder's name
    assert basic["solver.rtol=0.001"]["status"] == "completed" and basic["solver.rtol=-1"]["status"] == "failed"
    for name in ("joblib", "submitit_local"):
        assert sorted(results[name]) == sorted(basic), name
        for folder, run in basic.items():
            assert {k: results[name][folder].get(k) for k in COMPARED} == {k: run.get(k) for k in COMPARED}, (name, folder)
    # trainer.threads is null: joblib's 2 jobs share the cores; submitit's jobs get cpus_per_task.
    assert results["joblib"]["solver.rtol=0.001"]["threads"] == sweeps.threads_per_job(
        {"n_jobs": 2}, sweeps.available_cores())
    assert results["submitit_local"]["solver.rtol=0.001"]["threads"] == 1


def test_rerunning_a_sweep_with_resume_continues_its_folder(tiny_mnist, tmp_path, monkeypatch, capsys):
    from neode_cli.tasks.classification import ClassificationTask

    monkeypatch.chdir(tmp_path)
    args = ["train", "-m", *tiny_overrides(tiny_mnist, "mlp"), "model.hidden=4", "trainer.limit_train_batches=2",
            "trainer.limit_test_batches=1", "logger=none", "seed=0,1"]
    original, calls = ClassificationTask.training_loss, []

    def interrupted_in_the_second_job(self, model, batch):
        calls.append(1)
        if len(calls) == 3:  # job seed=1, batch 1: a Ctrl-C that it saves after
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "training_loss", interrupted_in_the_second_job)
    assert run_neode(args) == 130
    sweeps_made = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps_made) == 1
    sweep = sweeps_made[0]
    assert sweep.name == sweeps.sweep_name(args[2:]) and sweep.name.startswith("seed=0,1,")
    printed = capsys.readouterr().err.split("continue with: ", 1)[1].strip()
    first = (sweep / "seed=0" / "metrics.json").read_text()
    assert read_summary(sweep / "seed=1")["status"] == "interrupted"

    # The printed command (the sweep folder's "=" and "," quoted for Hydra) continues it, ...
    monkeypatch.setattr(ClassificationTask, "training_loss", original)
    command = shlex.split(printed)
    assert command[:3] == ["neode", "train", "-m"] and f"hydra.sweep.dir='{sweep.relative_to(tmp_path)}'" in command
    assert run_neode(command[1:]) == 0
    assert list((tmp_path / "outputs" / "multirun").iterdir()) == [sweep]  # the same sweep, no new one
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["seed=0", "seed=1"]
    assert (sweep / "seed=0" / "metrics.json").read_text() == first  # finished: left as it was
    resumed = read_summary(sweep / "seed=1")
    assert resumed["status"] == "completed" and resumed["resumed"][0]["batch"] == 1
    # ... and so does the command as typed plus trainer.resume=true: both jobs are reported finished.
    done = (sweep / "seed=1" / "metrics.json").read_text()
    assert run_neode([*args, "trainer.resume=true"]) == 0
    assert (sweep / "seed=0" / "metrics.json").read_text() == first and (sweep / "seed=1" / "metrics.json").read_text() == done
    assert list((tmp_path / "outputs" / "multirun").iterdir()) == [sweep]


def test_a_job_in_a_worker_process_prints_the_command_that_continues_it(monkeypatch):
    # A joblib worker or a submitit job does not know the command line: it names its own overrides and folder.
    from omegaconf import OmegaConf

    from neode_cli import cli

    monkeypatch.setattr(cli, "_COMMAND_ARGS", None)
    hydra_cfg = OmegaConf.create({
        "overrides": {"task": ["seed=1", "solver=bosh3", "trainer.resume=true"],
                      "hydra": ["hydra/launcher=joblib", "hydra.mode=MULTIRUN", "hydra.sweep.dir=s"]},
        "runtime": {"output_dir": "outputs/multirun/seed=0,1,solver=dopri5,bosh3/seed=1,solver=bosh3"},
        "sweep": {"dir": "outputs/multirun/seed=0,1,solver=dopri5,bosh3"}})
    command = shlex.split(cli._resume_command_of_job(hydra_cfg, multirun=True))
    assert command == ["neode", "train", "-m", "seed=1", "solver=bosh3", "hydra/launcher=joblib", "trainer.resume=true",
                       "hydra.sweep.dir='outputs/multirun/seed=0,1,solver=dopri5,bosh3'",
                       "hydra.sweep.subdir='seed=1,solver=bosh3'"]


def test_a_requeued_submitit_job_resumes_and_submitit_hears_only_the_preemption_signal(monkeypatch, capsys):
    from hydra_plugins.neode_launchers.submitit_launchers import NeodeLocalLauncher, requeue_after_saved_stop

    launcher = NeodeLocalLauncher(submitit_folder="unused")
    delayed = launcher.checkpoint(["seed=1", "trainer.resume=false"], "hydra.sweep.dir", 3, "id", {})
    assert delayed.function is launcher and delayed.args[0] == ["seed=1", "trainer.resume=true"]
    assert delayed.args[1:4] == ("hydra.sweep.dir", 3, "id")

    heard = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: heard.append(signum))
    try:
        requeue_after_saved_stop(SystemExit(exit_code(signal.SIGTERM)), 3)  # scancel: no requeue
        assert heard == []
        requeue_after_saved_stop(SystemExit(exit_code(signal.SIGUSR2)), 3)
        assert heard == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert "job 3 saved its checkpoint on SIGUSR2" in capsys.readouterr().err

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # SLURM requeued the job itself: it resumes too
    from hydra_plugins.neode_launchers.submitit_launchers import restarted_by_scheduler
    assert restarted_by_scheduler()


def test_the_plugin_is_found_from_an_installed_wheel(tmp_path):
    # Build the wheel as pip would (from a copy: building writes build/ and *.egg-info/ next to the sources) and
    # unpack it as an installation: Hydra must find neode's launchers there, without the repository on the path.
    import shutil

    source, wheel_dir = tmp_path / "source", tmp_path / "wheel"
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for package in ("neode_cli", "hydra_plugins"):
        shutil.copytree(REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run([sys.executable, "-c", "from setuptools import build_meta as b; "
                            f"print(b.build_wheel({str(wheel_dir)!r}))"], cwd=source, capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1:]}")
    import zipfile

    site = tmp_path / "site"
    with zipfile.ZipFile(next(wheel_dir.glob("*.whl"))) as wheel:
        wheel.extractall(site)
    assert (site / "hydra_plugins" / "neode_launchers" / "submitit_launchers.py").is_file()
    assert not (site / "hydra_plugins" / "__init__.py").exists()  # a namespace package, shared with other plugins
    probe = ("import hydra_plugins.neode_launchers as p; from hydra.core.plugins import Plugins; "
             "from hydra.plugins.launcher import Launcher; "
             "names = {c.__name__ for c in Plugins.instance().discover(Launcher)}; "
             "print(p.__file__); print(sorted(n for n in names if n.startswith('Neode')))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    found = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    where, names = found.stdout.strip().splitlines()
    assert where.startswith(str(site))
    assert names == "['NeodeJoblibLauncher', 'NeodeLocalLauncher', 'NeodeSlurmLauncher']"


@pytest.mark.slow
def test_submitit_local_requeues_a_preempted_job_and_it_finishes_as_if_never_stopped(tiny_mnist, tmp_path):
    # The preemption notice goes to the job's process, as SLURM's would; the job saves, is requeued by submitit's
    # local controller and continues from its checkpoint. Waiting (not timing) decides when to send it.
    args = [*tiny_overrides(tiny_mnist, "mlp"), "model.hidden=4", "trainer.limit_train_batches=1",
            "trainer.limit_test_batches=1", "logger=none", "trainer.max_epochs=200", "trainer.threads=1", "seed=0"]
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "neode_cli.cli", "train", "-m", *args,
                                "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}"],
                               cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        rows = None
        for _ in range(1200):
            rows = next(sweep.glob("*/metrics.jsonl"), None)
            if rows is not None and len(rows.read_text().splitlines()) >= 3:
                break
            time.sleep(0.1)
        assert rows is not None, "the job never started"
        controller = next(p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit())
        task = int(Path(f"/proc/{controller}/task/{controller}/children").read_text().split()[0])
        os.kill(task, signal.SIGUSR2)
        output, _ = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 0, output
    run = read_summary(rows.parent)
    assert run["status"] == "completed" and run["epochs"] == 200 and len(run["resumed"]) == 1
    log = "".join(p.read_text() for p in (sweep / ".submitit").glob("*/*_log.err"))
    assert "saved its checkpoint on SIGUSR2" in log and "continue with:" in log
    # The same run without the interruption, in this process: the same record.
    assert run_neode(["train", *args, f"hydra.run.dir={tmp_path / 'plain'}"]) == 0
    plain = read_summary(tmp_path / "plain")
    assert {k: run[k] for k in COMPARED} == {k: plain[k] for k in COMPARED}
    assert [json.loads(r)["test_loss"] for r in rows.read_text().splitlines()] == [
        json.loads(r)["test_loss"] for r in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]


def test_a_ctrl_c_while_a_parallel_sweep_waits_ends_in_one_line(capsys):
    from hydra_plugins.neode_launchers._sweep import launch_jobs

    def interrupted():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stopped:
        launch_jobs(interrupted, "unused")
    assert stopped.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("neode: error: sweep interrupted;") and "trainer.resume=true" in err[0]


def _job_folder(sweep: Path, name: str, status: str) -> None:
    (sweep / name).mkdir(parents=True)
    (sweep / name / "metrics.json").write_text(json.dumps({"status": status}))


def test_a_job_process_that_died_ends_the_sweep_in_one_line_naming_what_it_left(tmp_path, capsys):
    from joblib.externals.loky.process_executor import TerminatedWorkerError
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from hydra_plugins.neode_launchers._sweep import launch_jobs
    from hydra_plugins.neode_launchers.joblib_launcher import worker_died
    from hydra_plugins.neode_launchers.submitit_launchers import job_died

    for name, status in (("seed=0", "completed"), ("seed=1", "running"), ("seed=2", "running")):
        _job_folder(tmp_path, name, status)
    killed = TerminatedWorkerError("A worker process managed by the executor was unexpectedly terminated. This "
                                   "could be caused by a segmentation fault ...\n\nThe exit codes of the workers "
                                   "are {SIGKILL(-9)}\nDetailed tracebacks ...")
    lost = UncompletedJobError("Job 4242_1 (task: 0) with path /x/4242_1_result.pkl\nhas not produced any output "
                               "(state: OUT_OF_MEMORY)\nError stream produced:\n----\nKilled")
    for exc, recognise, others in ((killed, worker_died, True), (lost, job_died, False)):
        def launch():
            raise exc

        with pytest.raises(SystemExit) as ended:
            launch_jobs(launch, tmp_path, recognise, others_stopped=others)
        assert ended.value.code == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("neode: error: ") and "trainer.resume=true" in err[0]
        assert f"seed=1, seed=2 in {tmp_path}" in err[0] and "seed=0" not in err[0]
        if others:
            assert "{SIGKILL(-9)}" in err[0] and "left at their last checkpoint" in err[0]
        else:
            assert "job 4242_1, task 0, state OUT_OF_MEMORY" in err[0] and "once its other jobs have ended" in err[0]
    # A job's own Python error, or anything else, is not a dead process: it propagates as it is.
    assert job_died(FailedJobError("Job (task=0) failed during processing with trace: ...")) is None
    assert worker_died(ValueError("other")) is None and job_died(RuntimeError("other")) is None


#: The jobs below run 400 tiny epochs, so they are still running when the test stops them (after their first
#: checkpoint); the resumed sweep may lower trainer.max_epochs and ends sooner.
RESUMED_EPOCHS = 30


def _joblib_sweep(tiny_mnist, sweep: Path, seeds: str) -> list[str]:
    """The command of a joblib sweep (2 workers) of long tiny jobs, one per seed in ``seeds``."""
    return [sys.executable, "-m", "neode_cli.cli", "train", "-m", *tiny_overrides(tiny_mnist, "mlp"),
            "model.hidden=4", "trainer.max_epochs=400", "trainer.limit_test_batches=1", "logger=none",
            f"seed={seeds}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"]


def _repo_env() -> dict:
    """This environment with the repository first on PYTHONPATH (for ``python -m neode_cli.cli`` subprocesses)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def _run_until_both_checkpointed(command: list[str], sweep: Path, env: dict, act) -> tuple[int, str]:
    """Start ``command`` (in a session of its own, as a terminal's job is); once jobs seed=0 and seed=1 have
    saved a checkpoint, ``act(sweep process)``; then wait for the sweep to end. Returns its exit status and
    stderr."""
    proc = subprocess.Popen(command, cwd=sweep.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not all((sweep / f"seed={s}" / "checkpoint.pt").exists() for s in (0, 1)):
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before both checkpointed"
            time.sleep(0.2)
        act(proc)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.mark.slow  # real signals to real worker processes: seconds of timing under load
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the joblib workers through /proc")
def test_a_joblib_worker_killed_mid_sweep_is_one_line_and_the_sweep_continues_on_resume(tiny_mnist, tmp_path):
    # The out-of-memory killer's SIGKILL, for real: the sweep ends in one line, each job at its last checkpoint,
    # and the same command with trainer.resume=true finishes both.
    from hydra_plugins.neode_launchers.joblib_launcher import worker_pids

    sweep = tmp_path / "sweep"
    command = _joblib_sweep(tiny_mnist, sweep, "0,1")
    env = _repo_env()

    def kill_a_worker(proc):
        workers = worker_pids(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)

    returncode, err = _run_until_both_checkpointed(command, sweep, env, kill_a_worker)
    assert returncode == 1
    lines = [line for line in err.splitlines() if line.startswith("neode:")]
    assert len(lines) == 1 and "joblib worker process died" in lines[0] and "SIGKILL" in lines[0], err[-3000:]
    assert f"seed=0, seed=1 in {sweep}" in lines[0] and "Traceback" not in err
    before = {}
    for s in (0, 1):
        record = read_summary(sweep / f"seed={s}")
        assert record["status"] == "running"  # what a killed process leaves
        before[s] = record["epochs"]

    resumed = subprocess.run([*command, "trainer.resume=true", f"trainer.max_epochs={RESUMED_EPOCHS}"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for s in (0, 1):
        record = read_summary(sweep / f"seed={s}")
        assert record["status"] == "completed" and record["resumed"]
        assert record["epochs"] == max(RESUMED_EPOCHS, before[s])  # (a job may have run past it before)


@pytest.mark.slow  # real signals to real worker processes: seconds of timing under load
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the joblib workers through /proc")
def test_sigterm_to_a_joblib_sweep_lets_its_running_jobs_save_and_starts_no_more(tiny_mnist, tmp_path):
    # `kill <sweep pid>` (or a Ctrl-C): the running jobs get the signal, save their checkpoints and say where;
    # the queued job does not start; the sweep says so in one line (exit 143); rerunning with
    # trainer.resume=true continues the two and runs the third.
    sweep = tmp_path / "sweep"
    command = _joblib_sweep(tiny_mnist, sweep, "0,1,2")
    env = _repo_env()
    returncode, err = _run_until_both_checkpointed(command, sweep, env, lambda proc: proc.send_signal(signal.SIGTERM))
    assert returncode == exit_code(signal.SIGTERM), err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("neode:")]
    assert lines[-1].startswith("neode: error: sweep stopped by SIGTERM: each job that was running saved") and (
        "trainer.resume=true" in lines[-1]), err[-3000:]
    assert sorted(line.split(" (")[0] for line in lines[:-1]) == ["neode: error: job 0", "neode: error: job 1"], (
        err[-3000:])
    assert "Traceback" not in err
    before = {2: 0}
    for s in (0, 1):
        record = read_summary(sweep / f"seed={s}")
        assert record["status"] == "interrupted" and record["error"].startswith("interrupted by SIGTERM")
        before[s] = record["epochs"]
    assert not (sweep / "seed=2" / "metrics.json").exists()  # never started
    assert not (sweep / sweeps.STOP_FILE).exists()

    resumed = subprocess.run([*command, "trainer.resume=true", f"trainer.max_epochs={RESUMED_EPOCHS}"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for s in (0, 1, 2):
        record = read_summary(sweep / f"seed={s}")
        assert record["status"] == "completed" and record["epochs"] == max(RESUMED_EPOCHS, before[s])
        assert bool(record.get("resumed")) == (s < 2)


def test_a_stop_file_stops_only_the_workers_of_the_sweep_process_that_wrote_it(tmp_path):
    assert sweeps.stop_requested(tmp_path, os.getpid()) is None
    sweeps.request_stop(tmp_path, "SIGTERM")
    assert sweeps.stop_requested(tmp_path, os.getpid()) == "SIGTERM"
    assert sweeps.stop_requested(tmp_path, os.getpid() + 1) is None  # left by another (dead) sweep process
    sweeps.clear_stop(tmp_path)
    sweeps.clear_stop(tmp_path)
    assert not (tmp_path / sweeps.STOP_FILE).exists()


@pytest.mark.slow  # real signals to real job processes: seconds of timing under load
def test_ctrl_c_to_a_submitit_local_sweep_lets_every_job_save(tiny_mnist, tmp_path):
    # A terminal's Ctrl-C goes to the whole process group: the sweep's process, submitit's local controllers
    # and the jobs. The jobs save and say where; the controllers do not kill them (they ignore SIGINT); the
    # sweep ends in one line (exit 130) and the same command with trainer.resume=true finishes both.
    sweep = tmp_path / "sweep"
    command = [*_joblib_sweep(tiny_mnist, sweep, "0,1")[:-3], "hydra/launcher=submitit_local",
               "hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={sweep}"]
    env = _repo_env()
    returncode, err = _run_until_both_checkpointed(command, sweep, env,
                                                   lambda proc: os.killpg(proc.pid, signal.SIGINT))
    assert returncode == exit_code(signal.SIGINT), err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("neode:")]
    assert len(lines) == 1 and lines[0].startswith("neode: error: 2 job(s) of the sweep stopped on a signal after "
                                                   "saving their checkpoint (seed=0, seed=1 in"), err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    for s in (0, 1):
        record = read_summary(sweep / f"seed={s}")
        assert record["status"] == "interrupted" and record["error"].startswith("interrupted by SIGINT")
    resumed = subprocess.run([*command, "trainer.resume=true", f"trainer.max_epochs={RESUMED_EPOCHS}"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for s in (0, 1):
        assert read_summary(sweep / f"seed={s}")["status"] == "completed"
