"""`neode train` end to end on a tiny IDX dataset: the run record, resume, and every bad input's message."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neode_cli.ode import StepSizeUnderflowError
from neode_cli.tasks.classification import ClassificationTask

from conftest import read_summary, run_neode, tiny_overrides

FLAT_KEYS = ("status", "error", "task", "model", "solver", "grad", "rtol", "atol", "seed", "params", "epochs",
             "test_error", "test_accuracy", "nfe_forward", "nfe_backward", "forward_time_s", "backward_time_s",
             "peak_memory_mb", "epoch_time_s", "train_time_s", "device", "versions", "experiment", "budget", "config")


def error_lines(err: str) -> list[str]:
    return [line for line in err.strip().splitlines() if line.strip()]


@pytest.mark.parametrize("model", ["odenet", "rknet", "resnet", "mlp"])
def test_a_few_batch_run_of_each_model_writes_the_record(train_run, capsys, model):
    code, run_dir = train_run("trainer.limit_train_batches=2", "trainer.limit_test_batches=1", model=model)
    assert code == 0, capsys.readouterr().err
    summary = read_summary(run_dir)
    for key in FLAT_KEYS:
        assert key in summary, key
    assert summary["status"] == "completed" and summary["error"] is None
    assert summary["model"] == model and summary["task"] == "classification" and summary["epochs"] == 1
    assert summary["device"] == "cpu" and summary["peak_memory_kind"] == "autograd_saved"
    assert summary["params"] > 0 and summary["versions"]["torch"] == torch.__version__
    assert 0.0 <= summary["test_error"] <= 100.0
    assert summary["test_error"] + summary["test_accuracy"] == pytest.approx(100.0)
    assert summary["peak_memory_mb"] > 0 and summary["forward_time_s"] > 0 and summary["backward_time_s"] > 0
    assert summary["epoch_time_s"] > 0 and summary["train_time_s"] == pytest.approx(summary["epoch_time_s"])
    assert summary["config"]["model"]["_target_"].startswith("neode_cli.models.")
    # lr follows the paper's scaling: 0.1 at batch 128 -> 0.0125 at batch 16.
    assert summary["lr"] == pytest.approx(0.1 * 16 / 128)
    if model in ("odenet", "rknet"):
        assert summary["nfe_forward"] > 0 and summary["nfe_backward"] > 0
        assert summary["grad"] == ("adjoint" if model == "odenet" else "backprop")
    else:
        assert summary["nfe_forward"] == 0 and summary["nfe_backward"] == 0
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["epoch"] == 1 and rows[0]["batches"] == 2
    assert rows[0]["test_error"] == summary["test_error"]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 1 and state["global_step"] == 2
    assert {"model", "optimizer", "scheduler", "rng"} <= set(state)
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))


def test_adjoint_holds_less_memory_for_backward_than_backprop(train_run):
    """The paper's O(1) vs O(L~) memory column, measured on the CPU from autograd's saved tensors."""
    common = ("trainer.limit_train_batches=1", "trainer.limit_test_batches=1", "data.ode_error_samples=0",
              "logger=none", "trainer.checkpoint=false")
    _, adjoint = train_run(*common, "grad=adjoint", name="adjoint")
    _, backprop = train_run(*common, "grad=backprop", name="backprop")
    adjoint, backprop = read_summary(adjoint), read_summary(backprop)
    assert adjoint["nfe_forward"] == backprop["nfe_forward"]  # same solve...
    assert adjoint["peak_memory_mb"] * 2 < backprop["peak_memory_mb"]  # ...without keeping every step


def test_the_installed_command_trains_with_progress_and_tensorboard(tiny_mnist, tmp_path):
    neode = shutil.which("neode") or str(Path(sys.executable).parent / "neode")
    assert Path(neode).exists(), "the `neode` console script is not installed: pip install -e ."
    run_dir = tmp_path / "cli_run"
    overrides = [o for o in tiny_overrides(tiny_mnist, "mlp") if o != "trainer.progress=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([neode, "train", *overrides, "trainer.limit_train_batches=2", f"hydra.run.dir={run_dir}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "epoch 1/1" in proc.stderr and "loss=" in proc.stderr and "accuracy=" in proc.stderr and "nfe=0/0" in proc.stderr
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["model"] == "mlp" and summary["params"] == 784 * 16 + 16 + 170
    assert (run_dir / ".hydra" / "config.yaml").exists()
    events = b"".join(p.read_bytes() for p in (run_dir / "tb").glob("events.out.tfevents.*"))
    for tag in (b"train/loss", b"train/nfe_forward", b"train/nfe_backward", b"epoch/epoch_time_s",
                b"epoch/peak_memory_mb", b"test/test_error", b"hparams", b"_hparams_/session_start_info"):
        assert tag in events, tag


def test_interrupted_and_resumed_equals_uninterrupted(train_run, monkeypatch, capsys):
    common = ("trainer.max_epochs=2", "trainer.limit_train_batches=2", "trainer.limit_test_batches=1",
              "data.ode_error_samples=0", "logger=none")
    code, straight = train_run(*common, name="straight")
    assert code == 0

    calls = {"n": 0}
    original = ClassificationTask.training_loss

    def interrupted(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 4:  # second batch of epoch 2: a real Ctrl-C, arriving mid-step
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "training_loss", interrupted)
    code, run_dir = train_run(*common, name="resumed")
    assert code == 130
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "trainer.resume=true" in err[0] and str(run_dir) in err[0]
    stopped = read_summary(run_dir)
    assert stopped["status"] == "interrupted" and stopped["epochs"] == 1
    monkeypatch.setattr(ClassificationTask, "training_loss", original)

    code, _ = train_run(*common, "trainer.resume=true", name="resumed")
    assert code == 0
    a, b = read_summary(straight), read_summary(run_dir)
    assert b["status"] == "completed" and b["epochs"] == 2
    for key in ("train_loss", "train_accuracy", "test_error", "test_loss", "nfe_forward", "nfe_backward", "final_lr"):
        assert a[key] == b[key], key
    timing = ("forward_time_s", "backward_time_s", "epoch_time_s", "eval_time_s", "peak_memory_mb")
    rows_a = [{k: v for k, v in json.loads(x).items() if k not in timing} for x in (straight / "metrics.jsonl").read_text().splitlines()]
    rows_b = [{k: v for k, v in json.loads(x).items() if k not in timing} for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows_a == rows_b and len(rows_b) == 2
    weights_a = torch.load(straight / "checkpoint.pt", weights_only=False)["model"]
    weights_b = torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_each_epochs_batches_depend_on_the_seed_and_epoch_not_on_randomness_the_steps_used(train_run, monkeypatch):
    """The order and crops of an epoch are drawn from (seed, epoch): a model that draws noise in its steps (a
    latent ODE's sample, a Hutchinson probe), or a DDP rank that draws it for its slice only, sees the same
    global batches as any other run with that seed."""
    original = ClassificationTask.training_loss

    def recording(extra_draws: int, seen: list):
        def loss(self, model, batch):
            seen.append(batch[0].sum().item())  # identifies the batch's images and their crops
            torch.rand(extra_draws)  # randomness of the step's own
            return original(self, model, batch)
        return loss

    common = ("trainer.max_epochs=3", "data.augmentation=true", "data.ode_error_samples=0", "logger=none",
              "trainer.limit_test_batches=1", "solver=euler", "solver.step_size=0.5")
    runs = {}
    for extra in (0, 1000):
        seen = runs[extra] = []
        monkeypatch.setattr(ClassificationTask, "training_loss", recording(extra, seen))
        assert train_run(*common, name=f"draws{extra}")[0] == 0
    assert len(runs[0]) == 9 and runs[0] == runs[1000]  # 3 epochs of 3 batches
    assert runs[0][:3] != runs[0][3:6]  # and each epoch draws afresh
    monkeypatch.setattr(ClassificationTask, "training_loss", recording(0, seen := []))
    assert train_run(*common, "seed=1", name="seed1")[0] == 0
    assert seen != runs[0]


def test_a_folder_holding_a_run_is_never_overwritten_and_resume_needs_a_checkpoint(train_run, capsys):
    args = ("model.hidden=4", "trainer.limit_train_batches=1", "trainer.limit_test_batches=1", "logger=none")
    code, run_dir = train_run(*args, model="mlp", name="once")
    assert code == 0
    before = (run_dir / "metrics.json").read_text()
    code, _ = train_run(*args, model="mlp", name="once")
    assert code == 2
    assert "already holds a run; continue it with trainer.resume=true" in capsys.readouterr().err
    assert (run_dir / "metrics.json").read_text() == before
    code, _ = train_run(*args, "trainer.resume=true", model="mlp", name="never_ran")
    assert code == 2
    assert "holds no checkpoint.pt" in capsys.readouterr().err


def test_a_solver_failure_mid_training_records_failed_and_keeps_the_checkpoint(train_run, monkeypatch, capsys):
    calls = {"n": 0}
    original = ClassificationTask.training_loss

    def underflow(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 2:  # first batch of epoch 2
            raise StepSizeUnderflowError("step size 1e-16 underflowed at t=0.43 after 812 evaluations; loosen solver.rtol")
        return original(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "training_loss", underflow)
    code, run_dir = train_run("trainer.max_epochs=2", "trainer.limit_train_batches=1", "trainer.limit_test_batches=1",
                              "data.ode_error_samples=0", "logger=none")
    assert code == 1
    err = error_lines(capsys.readouterr().err)
    assert err == ["neode: error: at epoch 2: step size 1e-16 underflowed at t=0.43 after 812 evaluations; "
                   "loosen solver.rtol (last checkpoint kept)"]
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and "underflowed at t=0.43" in summary["error"] and summary["epochs"] == 1
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert (run_dir / "error.log").read_text().count("StepSizeUnderflowError") >= 1


def test_a_real_solver_failure_is_one_line_and_recorded(train_run, capsys):
    code, run_dir = train_run("solver.max_num_steps=1", "trainer.limit_train_batches=1", "logger=none")
    assert code == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("neode: error: at epoch 1: ")
    assert read_summary(run_dir)["status"] == "failed"


def test_missing_data_offline_is_one_line(train_run, tmp_path, capsys):
    code, run_dir = train_run(f"data.root={tmp_path / 'empty'}", name="nodata")
    assert code == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and err[0].startswith("neode: error: ") and str(tmp_path / "empty") in err[0]
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and str(tmp_path / "empty") in summary["error"]


def test_a_failing_job_of_a_sweep_is_recorded_and_the_sweep_goes_on(tiny_mnist, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    args = ["train", "-m", *tiny_overrides(tiny_mnist, "mlp"), "model.hidden=4", "trainer.limit_train_batches=1",
            "trainer.limit_test_batches=1", "logger=none", "solver.rtol=-1,1e-3", f"hydra.sweep.dir={sweep}"]
    assert run_neode(args) == 1
    assert "1 run(s) of the sweep failed" in capsys.readouterr().err
    records = sorted(sweep.glob("*/metrics.json"))
    assert sorted(read_summary(p.parent)["status"] for p in records) == ["completed", "failed"]
    # Rerunning the sweep with resume leaves the completed job as it is; the bad one fails again.
    before = {p: p.read_text() for p in records}
    assert run_neode([*args, "trainer.resume=true"]) == 1
    completed = [p for p in records if read_summary(p.parent)["status"] == "completed"]
    assert len(completed) == 1 and completed[0].read_text() == before[completed[0]]


def test_a_diverged_loss_stops_the_run_with_one_line(train_run, monkeypatch, capsys):
    original = ClassificationTask.training_loss

    def diverging(self, model, batch):
        loss, metrics = original(self, model, batch)
        return loss * float("nan"), metrics

    monkeypatch.setattr(ClassificationTask, "training_loss", diverging)
    code, run_dir = train_run("trainer.limit_train_batches=1", "logger=none", model="mlp")
    assert code == 1
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "training loss became nan at batch 1; lower optim.lr" in err[0]
    assert read_summary(run_dir)["status"] == "failed"
