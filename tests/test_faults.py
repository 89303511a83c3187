"""Fault-injection battery: every way a run can be stopped, refused or starved, and what it must leave behind.

Each case asserts the exit status, the one line on stderr and that the record and checkpoint on disk are
intact (byte-for-byte where nothing may change). Disk-full and permission faults are injected at the writes
of ``neode_cli.runs`` (tests run as root, for whom chmod does not deny anything); real signals are sent to
this process from inside a training step, one case uses a real subprocess.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import neode_cli.runs as runs
from neode_cli.run_lock import RunLock
from neode_cli.tasks.classification import ClassificationTask

from conftest import REPO, read_summary, run_neode, tiny_overrides

BASE = ("model.hidden=4", "trainer.limit_train_batches=2", "trainer.limit_test_batches=1", "data.ode_error_samples=0",
        "logger=none")
KEPT = ("metrics.json", "metrics.jsonl", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml",
        "checkpoint.pt")


def lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in KEPT if (folder / name).exists()}


@pytest.fixture(scope="module")
def finished(tiny_mnist, tmp_path_factory) -> Path:
    """A completed 1-epoch mlp run (resumable to more epochs), copied by each case that needs one."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    args = ["train", *tiny_overrides(tiny_mnist, "mlp"), *BASE, f"hydra.run.dir={folder}"]
    assert run_neode(args) == 0
    return folder


@pytest.fixture()
def job(tiny_mnist, tmp_path, finished, capsys):
    """``job(*overrides, copy=True)`` runs the mlp job in ``tmp_path/run`` (a copy of ``finished`` when
    ``copy``); returns ``(status, folder, stderr lines)``."""
    folder = tmp_path / "run"

    def run(*overrides: str, copy: bool = False):
        if copy and not folder.exists():
            shutil.copytree(finished, folder)
        capsys.readouterr()
        status = run_neode(["train", *tiny_overrides(tiny_mnist, "mlp"), *BASE, f"hydra.run.dir={folder}", *overrides])
        return status, folder, lines(capsys.readouterr().err)

    return run


def inject(monkeypatch, name: str, code: int, after: int = 0):
    """Make the ``after + 1``-th write of a file called ``name`` (and every later one) fail with ``code``."""
    seen = {"n": 0}

    def fail(path: Path) -> None:
        if Path(path).name == name:
            seen["n"] += 1
            if seen["n"] > after:
                raise OSError(code, os.strerror(code))

    monkeypatch.setattr(runs, "_before_write", fail)


# ----------------------------------------------------------------------------------- a failed resume

def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 3])


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x00not a checkpoint" * 50)


def _not_a_state(path: Path) -> None:
    torch.save([1, 2, 3], path)


def _other_model(path: Path) -> None:
    state = torch.load(path, weights_only=False)
    state["model"] = {"net.0.weight": torch.zeros(3, 3)}
    torch.save(state, path)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


@pytest.mark.parametrize(("damage", "message"), [
    (_truncate, "is unreadable"),
    (_garbage, "is unreadable"),
    (_empty, "is unreadable"),
    (_not_a_state, "is unreadable (not a neode training checkpoint)"),
    (_other_model, "does not match model mlp"),
])
def test_a_bad_checkpoint_refuses_the_resume_and_changes_nothing(job, damage, message):
    status, folder, _ = job("trainer.max_epochs=1", "trainer.resume=true", copy=True)  # completed: nothing to do
    assert status == 0
    damage(folder / "checkpoint.pt")
    before = snapshot(folder)
    status, _, err = job("trainer.max_epochs=2", "trainer.resume=true")
    assert status == 2 and len(err) == 1 and message in err[0] and "checkpoint.pt" in err[0]
    assert snapshot(folder) == before


@pytest.mark.parametrize(("override", "key"), [
    ("model.hidden=8", "model.hidden"),
    ("seed=1", "seed"),
    ("optim.lr=0.5", "optim.lr"),
    ("solver=rk4", "solver.method"),
    ("grad=backprop", "grad.method"),
    ("data.batch_size=8", "data.batch_size"),
    ("trainer.limit_train_batches=1", "trainer.limit_train_batches"),
])
def test_a_resume_that_changes_what_is_trained_is_refused_naming_the_keys(job, override, key):
    status, folder, _ = job("trainer.max_epochs=1", "trainer.resume=true", copy=True)
    before = snapshot(folder)
    status, _, err = job("trainer.max_epochs=2", "trainer.resume=true", override)
    assert status == 2 and len(err) == 1 and f"cannot resume {folder}: " in err[0] and key in err[0]
    assert snapshot(folder) == before


def test_keys_that_do_not_change_the_result_may_differ_and_the_record_says_so(job):
    status, folder, err = job("trainer.max_epochs=2", "trainer.resume=true", "trainer.threads=1",
                              "logger.log_every_n_batches=5", "trainer.checkpoint_every_n_batches=1", copy=True)
    assert status == 0, err
    summary = read_summary(folder)
    assert summary["status"] == "completed" and summary["epochs"] == 2
    changed = summary["resumed"][-1]["changed"]
    assert changed["trainer.max_epochs"] == [1, 2] and changed["trainer.threads"] == [None, 1]
    assert summary["config"]["trainer"]["max_epochs"] == 2


def test_a_refused_rerun_into_a_run_folder_rewrites_nothing(job):
    status, folder, _ = job(copy=True)
    before = snapshot(folder)
    status, _, err = job("seed=5")
    assert status == 2 and len(err) == 1 and "already holds a run" in err[0]
    assert snapshot(folder) == before


def test_resume_into_a_folder_without_a_run_is_one_line(job):
    status, _, err = job("trainer.resume=true")
    assert status == 2 and len(err) == 1 and "holds no checkpoint.pt and no run record" in err[0]


# ----------------------------------------------------------------------------------- one run per folder

def test_a_second_run_into_a_locked_folder_exits_2_naming_the_holder(job):
    status, folder, _ = job(copy=True)
    before = snapshot(folder)
    with RunLock(folder):  # held as another process would hold it (flock: per open file)
        status, _, err = job("trainer.max_epochs=2", "trainer.resume=true")
    assert status == 2 and len(err) == 1 and f"is in use by pid {os.getpid()}" in err[0]
    assert snapshot(folder) == before


def test_a_stale_lock_file_does_not_block(job):
    status, folder, _ = job(copy=True)
    (folder / "run.lock").write_text("pid 999999 on elsewhere since yesterday\n")
    status, _, err = job("trainer.max_epochs=2", "trainer.resume=true")
    assert status == 0, err


# ----------------------------------------------------------------------------------- no dead ends

def test_a_run_that_failed_before_any_checkpoint_restarts_with_the_printed_command(job):
    status, folder, err = job("solver.rtol=-1")
    assert status == 2 and read_summary(folder)["status"] == "failed" and not (folder / "checkpoint.pt").exists()
    status, _, err = job("solver.rtol=-1")  # the same command again is refused: the folder holds a run ...
    assert status == 2 and "continue it with trainer.resume=true" in err[0]
    status, _, err = job("trainer.resume=true")  # ... and the printed way out works
    assert status == 0, err
    assert read_summary(folder)["status"] == "completed"


def test_ctrl_c_in_epoch_1_without_checkpoints_can_be_restarted(job, monkeypatch):
    original = ClassificationTask.training_loss

    def interrupted(self, model, batch):
        os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "training_loss", interrupted)
    status, folder, err = job("trainer.checkpoint=false")
    assert status == 130 and len(err) == 1 and "nothing was saved yet; restart with: " in err[0]
    assert f"trainer.resume=true hydra.run.dir={folder}" in err[0]
    monkeypatch.setattr(ClassificationTask, "training_loss", original)
    status, _, err = job("trainer.checkpoint=false", "trainer.resume=true")
    assert status == 0, err


def test_ctrl_c_during_start_up_is_one_line(job, monkeypatch):
    import neode_cli.train as train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "build_model", interrupted)
    status, folder, err = job()
    assert status == 130 and len(err) == 1 and "interrupted" in err[0] and "Traceback" not in err[0]


def test_ctrl_c_while_hydra_composes_is_one_line(job, monkeypatch):
    import hydra._internal.hydra as hydra_internal

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hydra_internal.Hydra, "compose_config", interrupted)
    status, _, err = job()
    assert status == 130 and err == ["neode: error: interrupted during start-up of neode train; nothing was run"]


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(job, monkeypatch):
    original = ClassificationTask.training_loss
    calls = {"n": 0}

    def twice(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "training_loss", twice)
    status, folder, err = job("trainer.checkpoint_every_n_batches=1", "trainer.max_epochs=1")
    assert status == 130 and len(err) == 1 and "stopped at once" in err[0]
    assert "the checkpoint of epoch 1, batch 1 is kept" in err[0]
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["batch"] == 1
    monkeypatch.setattr(ClassificationTask, "training_loss", original)
    status, _, err = job("trainer.checkpoint_every_n_batches=1", "trainer.max_epochs=1", "trainer.resume=true")
    assert status == 0, err


# ----------------------------------------------------------------------------------- checkpoint writes

def test_a_kill_during_a_checkpoint_write_keeps_the_previous_one(job, monkeypatch):
    status, folder, _ = job(copy=True)
    before = (folder / "checkpoint.pt").read_bytes()

    def killed(path: Path) -> None:
        if Path(path).name == "checkpoint.pt":
            raise KeyboardInterrupt  # the user's second Ctrl-C, in the middle of the write

    monkeypatch.setattr(runs, "_before_write", killed)
    status, _, err = job("trainer.max_epochs=2", "trainer.resume=true")
    assert status == 130 and len(err) == 1
    assert (folder / "checkpoint.pt").read_bytes() == before
    assert not list(folder.glob(".*.tmp"))


def test_temporary_files_of_a_killed_writer_are_removed_at_the_next_start(job):
    status, folder, _ = job(copy=True)
    for name in (".checkpoint.pt.abc123.tmp", ".metrics.json.x1.tmp"):
        (folder / name).write_bytes(b"half")
    (folder / "notes.tmp").write_text("mine")
    status, _, err = job("trainer.max_epochs=2", "trainer.resume=true")
    assert status == 0, err
    assert sorted(p.name for p in folder.glob("*.tmp")) == ["notes.tmp"] and not list(folder.glob(".*.tmp"))


def test_a_torn_last_line_of_metrics_jsonl_is_repaired_on_resume(job):
    status, folder, _ = job(copy=True)
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')
    status, _, err = job("trainer.max_epochs=2", "trainer.resume=true")
    assert status == 0, err
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_files_get_the_usual_permissions(job):
    old = os.umask(0o022)
    try:
        status, folder, _ = job()
    finally:
        os.umask(old)
    assert status == 0
    for name in ("metrics.json", "metrics.jsonl", "checkpoint.pt", ".hydra/config.yaml"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644, name


# ----------------------------------------------------------------------------------- filesystem faults

@pytest.mark.parametrize(("name", "code", "after", "reason"), [
    ("checkpoint.pt", errno.ENOSPC, 1, "No space left on device"),   # epoch 2's checkpoint
    ("metrics.jsonl", errno.ENOSPC, 1, "No space left on device"),   # epoch 2's row
    ("metrics.json", errno.ENOSPC, 2, "No space left on device"),    # the summary after epoch 1
    ("checkpoint.pt", errno.EACCES, 1, "Permission denied"),
    ("metrics.jsonl", errno.EROFS, 1, "Read-only file system"),
])
def test_a_filesystem_fault_is_one_line_keeps_the_record_and_resume_works_afterwards(job, monkeypatch, name, code,
                                                                                    after, reason):
    inject(monkeypatch, name, code, after)
    status, folder, err = job("trainer.max_epochs=2")
    assert status == 2 and len(err) == 1, err
    assert f"{folder / name}: {reason}" in err[0] and "trainer.resume=true" in err[0]
    assert torch.load(folder / "checkpoint.pt", weights_only=False)["epoch"] >= 1  # the last checkpoint is intact
    assert all(json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines())  # no torn line
    assert not list(folder.glob(".*.tmp"))
    monkeypatch.setattr(runs, "_before_write", lambda path: None)  # space freed
    status, _, err = job("trainer.max_epochs=2", "trainer.resume=true")
    assert status == 0, err
    summary = read_summary(folder)
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_file_where_the_run_folder_belongs_is_one_line(job, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    status, _, err = job(f"hydra.run.dir={blocker / 'run'}")
    assert status == 2 and len(err) == 1 and str(blocker) in err[0] and "Not a directory" in err[0]


@pytest.mark.skipif(os.geteuid() == 0, reason="root is never denied by file modes")
def test_a_read_only_run_folder_is_one_line(job, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        status, _, err = job(f"hydra.run.dir={folder / 'run'}")
    finally:
        folder.chmod(0o755)
    assert status == 2 and len(err) == 1 and "Permission denied" in err[0]


def test_compare_into_a_path_under_a_file_or_a_full_disk_is_one_line(finished, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    status = run_neode(["compare", f"runs={finished}", f"out={blocker / 'report'}"])
    err = lines(capsys.readouterr().err)
    assert status == 2 and len(err) == 1 and str(blocker) in err[0], err
    import neode_cli.report.writers as writers

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(writers, "_write", full)
    status = run_neode(["compare", f"runs={finished}", f"out={tmp_path / 'report'}"])
    err = lines(capsys.readouterr().err)
    assert status == 2 and len(err) == 1 and "No space left on device" in err[0] and str(tmp_path / "report") in err[0]


# ----------------------------------------------------------------------------------- a real process

def test_sigterm_to_a_real_process_checkpoints_mid_epoch_and_exits_143(tiny_mnist, tmp_path):
    folder = tmp_path / "run"
    args = [sys.executable, "-m", "neode_cli.cli", "train", *tiny_overrides(tiny_mnist, "mlp"), "model.hidden=4",
            "data.batch_size=1", "trainer.max_epochs=50", "trainer.checkpoint_every_n_batches=3", "logger=none",
            "data.ode_error_samples=0", f"hydra.run.dir={folder}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (folder / "checkpoint.pt").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    err_lines = lines(err)
    assert len(err_lines) == 1 and "interrupted by SIGTERM" in err_lines[0] and "Traceback" not in err
    summary = read_summary(folder)
    assert summary["status"] == "interrupted" and summary["interrupted_at"]["signal"] == "SIGTERM"
    state = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert (state["epoch"], state["batch"]) == (summary["interrupted_at"]["epoch"] - 1, summary["interrupted_at"]["batch"])


# ----------------------------------------------------------------------------------- compare checks values

@pytest.mark.parametrize(("key", "value", "why"), [
    ("test_error", "n/a", "is not a number"),
    ("test_error", float("nan"), "is not finite"),
    ("peak_memory_mb", -3.0, "is negative"),
    ("epoch_time_s", -1.0, "is negative"),
    ("test_error", 140.0, "is outside [0, 100]"),
])
def test_compare_leaves_out_records_with_impossible_values_consistently(tmp_path, key, value, why):
    from neode_cli.report.records import collect

    from test_report import write_run

    good = [write_run(tmp_path / f"seed{s}", seed=s, test_error=1.0 + s) for s in range(3)]
    bad = write_run(tmp_path / "seed9", seed=9)
    summary = json.loads((bad / "metrics.json").read_text())
    summary[key] = value
    (bad / "metrics.json").write_text(json.dumps(summary))  # json writes NaN as NaN, as a hand-edited file might
    collection = collect([tmp_path])
    assert sorted(r.run_id for r in collection.runs) == sorted(p.name for p in good)
    assert [p.where for p in collection.skipped] == ["seed9"] and why in collection.skipped[0].message
    assert key in collection.skipped[0].message
