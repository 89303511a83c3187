"""Interrupt a run in the middle of an epoch by a real signal, resume it, and get exactly the uninterrupted run.

The signal is sent to this process from inside a training step (a deterministic point); the loop finishes that
batch, saves the mid-epoch state and exits with 128 + the signal number. Resuming must end with the same
``metrics.json`` numbers (wall times aside), the same ``metrics.jsonl`` rows and bitwise the same weights.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from neode_cli.tasks.classification import ClassificationTask
from neode_cli.tasks.density import ToyDensityTask
from neode_cli.tasks.latent import LatentTask

from conftest import read_summary, run_neode, tiny_overrides

TIMING = ("forward_time_s", "backward_time_s", "epoch_time_s", "eval_time_s", "peak_memory_mb", "train_time_s",
          "started_at", "finished_at", "run_dir", "threads", "resumed", "checkpoint", "config")

LATENT = ["model=latent_ode", "model.latent_dim=2", "model.rec_hidden=6", "model.dyn_hidden=6", "model.dec_hidden=6",
          "data.n_spirals=20", "data.n_train=12", "data.n_window=10", "data.n_extrap=4", "data.n_obs=5",
          "data.n_grid=80", "data.batch_size=4", "data.figure_spirals=1", "solver.rtol=1e-3", "solver.atol=1e-4"]
CNF = ["model=cnf", "model.units=2", "model.trace=hutchinson", "data.batch_size=4", "data.batches_per_epoch=3",
       "data.n_test=8", "data.grid_size=4", "data.figure_samples=8", "solver.rtol=1e-3", "solver.atol=1e-3"]
COMMON = ["trainer.progress=false", "logger=none", "trainer.device=cpu", "trainer.max_epochs=2"]


def _strip(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMING and k != "status" and k != "error"}


@pytest.mark.parametrize(("case", "task_class", "signum", "at_call"), [
    # classification with random-crop augmentation (ODE-Net): SIGUSR1 in the second batch of epoch 2
    ("classification", ClassificationTask, signal.SIGUSR1, 5),
    # latent ODE on spirals: SIGTERM in the second of three batches of epoch 2
    ("latent", LatentTask, signal.SIGTERM, 5),
    # CNF on a toy density, Hutchinson probes drawn from the global RNG in every step: SIGINT mid-epoch 2
    ("cnf", ToyDensityTask, signal.SIGINT, 5),
])
def test_a_run_stopped_mid_epoch_resumes_to_exactly_the_uninterrupted_run(tiny_mnist, tmp_path, monkeypatch, capsys,
                                                                         case, task_class, signum, at_call):
    if case == "classification":
        args = [*tiny_overrides(tiny_mnist, "odenet"), "data.augmentation=true", "data.ode_error_samples=0",
                "trainer.limit_test_batches=1"]
    else:
        args = LATENT if case == "latent" else CNF
    args = [*args, *COMMON]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run_neode(["train", *args, f"hydra.run.dir={straight}"]) == 0

    original = task_class.training_loss
    calls = {"n": 0}

    def signalled(self, model, batch):
        calls["n"] += 1
        if calls["n"] == at_call:
            os.kill(os.getpid(), signum)  # a real signal, arriving in the middle of a step
        return original(self, model, batch)

    monkeypatch.setattr(task_class, "training_loss", signalled)
    capsys.readouterr()
    assert run_neode(["train", *args, f"hydra.run.dir={stopped}"]) == 128 + signum
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and signal.Signals(signum).name in err[0]
    assert f"trainer.resume=true hydra.run.dir={stopped}" in err[0]
    record = read_summary(stopped)
    assert record["status"] == "interrupted" and record["interrupted_at"]["batch"] >= 1
    state = torch.load(stopped / "checkpoint.pt", weights_only=False)
    assert state["batch"] == record["interrupted_at"]["batch"] and state["epoch"] == record["epochs"]
    monkeypatch.setattr(task_class, "training_loss", original)

    assert run_neode(["train", *args, "trainer.resume=true", f"hydra.run.dir={stopped}"]) == 0
    a, b = read_summary(straight), read_summary(stopped)
    assert b["status"] == "completed" and _strip(a) == _strip(b)
    assert b["resumed"][0]["epoch"] == state["epoch"] + 1 and b["resumed"][0]["batch"] == state["batch"]
    rows = [[{k: v for k, v in json.loads(line).items() if k not in TIMING}
             for line in (folder / "metrics.jsonl").read_text().splitlines()] for folder in (straight, stopped)]
    assert rows[0] == rows[1] and len(rows[1]) == 2
    weights = [torch.load(folder / "checkpoint.pt", weights_only=False)["model"] for folder in (straight, stopped)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_periodic_checkpoints_resume_exactly_after_a_crash(train_run, monkeypatch):
    """A crash (here: an error mid-epoch) after a periodic checkpoint loses only the batches since it."""
    args = ("trainer.max_epochs=1", "trainer.checkpoint_every_n_batches=1", "trainer.checkpoint_every_minutes=null",
            "data.ode_error_samples=0", "trainer.limit_test_batches=1", "logger=none")
    code, straight = train_run(*args, model="mlp", name="straight")
    assert code == 0
    original = ClassificationTask.training_loss
    calls = {"n": 0}

    def crash(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("node lost")
        return original(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "training_loss", crash)
    code, run_dir = train_run(*args, model="mlp", name="crashed")
    assert code == 1
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["batch"] == 2  # saved after batch 2
    monkeypatch.setattr(ClassificationTask, "training_loss", original)
    code, _ = train_run(*args, "trainer.resume=true", model="mlp", name="crashed")
    assert code == 0
    a, b = read_summary(straight), read_summary(run_dir)
    assert _strip(a) == _strip(b)
    wa = torch.load(straight / "checkpoint.pt", weights_only=False)["model"]
    wb = torch.load(run_dir / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
