"""DistributedDataParallel under torchrun, on the CPU with gloo and 2 processes (``neode_cli.distributed``).

A 2-process run trains on the same global batches as a 1-process run (each rank a contiguous slice, the
augmentation drawn once from the same generator state), so with a fixed-step solver its losses equal the
1-process run's up to floating-point reduction order, uneven last batch included. Only rank 0 writes the run
folder; a stop signal on one rank stops both at the same batch and the resumed run equals the uninterrupted
one; an error on one rank ends both with one line. NCCL, GPUs and several nodes are not tested here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neode_cli.cli import resume_command
from neode_cli.distributed import Processes
from neode_cli.interrupts import Interrupted, StopSignals
from neode_cli.runs import RunRecord
from neode_cli.tasks.classification import ClassificationTask
from neode_cli.tasks.latent import SpiralBatch

from conftest import REPO, read_summary, run_neode

TIMING = ("forward_time_s", "backward_time_s", "epoch_time_s", "eval_time_s", "train_time_s", "started_at",
          "finished_at", "run_dir", "threads", "resumed", "checkpoint", "config", "peak_memory_mb",
          "peak_memory_mb_per_rank", "status", "error", "interrupted_at")
#: ODE-Net with a fixed-step solver and the adjoint; 48 images in global batches of 15 (15, 15, 15, 3: the
#: ranks get 8 + 7 and 2 + 1 samples), random-crop augmentation on.
ARGS = ["model=odenet", "model.channels=4", "solver=rk4", "solver.step_size=0.5", "grad=adjoint",
        "data.download=false", "data.batch_size=15", "data.drop_last=false", "data.test_batch_size=12",
        "data.augmentation=true", "data.ode_error_samples=0", "trainer.max_epochs=2", "trainer.progress=false",
        "trainer.device=cpu", "trainer.threads=1", "logger=none"]


def torchrun(*args: str, worker: str | None = None) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node=2`` on ``-m neode_cli`` (or on
    tests/ddp_worker.py with ``worker`` faults), from the repository."""
    target = ["-m", "neode_cli"] if worker is None else [str(REPO / "tests" / "ddp_worker.py"), worker]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "--monitor-interval=0.1", *target, "train", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)


def neode_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("neode:")]


def rows(folder: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING}
            for line in (folder / "metrics.jsonl").read_text().splitlines()]


def weights(folder: Path) -> dict:
    return torch.load(folder / "checkpoint.pt", weights_only=False)["model"]


@pytest.fixture(scope="module")
def runs(tiny_mnist, tmp_path_factory):
    """The same training as one process (in-process) and as two (torchrun -m neode_cli)."""
    root = tmp_path_factory.mktemp("ddp")
    args = [*ARGS, f"data.root={tiny_mnist}"]
    assert run_neode(["train", *args, f"hydra.run.dir={root / 'one'}"]) == 0
    done = torchrun(*args, f"hydra.run.dir={root / 'two'}")
    assert done.returncode == 0, done.stderr[-3000:]
    return args, root


def test_two_processes_train_the_same_as_one(runs):
    _, root = runs
    one, two = rows(root / "one"), rows(root / "two")
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert a["batches"] == b["batches"] == 4
        for key in ("train_loss", "train_accuracy", "test_loss", "test_error"):
            assert b[key] == pytest.approx(a[key], rel=1e-5), key
        assert a["nfe_forward"] == b["nfe_forward"] and b["nfe_forward_per_rank"] == [a["nfe_forward"]] * 2
    for raw in map(json.loads, (root / "two" / "metrics.jsonl").read_text().splitlines()):
        assert len(raw["peak_memory_mb_per_rank"]) == 2 and raw["peak_memory_mb"] == max(raw["peak_memory_mb_per_rank"])
    wa, wb = weights(root / "one"), weights(root / "two")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)
    summary = read_summary(root / "two")
    assert summary["status"] == "completed" and summary["world_size"] == 2
    assert read_summary(root / "one")["world_size"] == 1


def test_a_signal_on_one_rank_stops_both_at_one_batch_and_the_resume_equals_the_uninterrupted_run(runs, tmp_path):
    args, root = runs
    folder, audit = tmp_path / "stopped", tmp_path / "writes"
    # Rank 1 alone gets SIGUSR1 in its 6th step (epoch 2, batch 2); rank 1's writes into the folder are logged.
    done = torchrun(*args, f"hydra.run.dir={folder}", worker=f"signal:1:6:SIGUSR1+audit:{folder}:{audit}")
    assert done.returncode != 0
    lines = neode_lines(done.stderr)
    assert len(lines) == 1 and "SIGUSR1" in lines[0], done.stderr[-3000:]
    assert (f"continue with: torchrun --standalone --nproc_per_node=2 -m neode_cli train" in lines[0]
            and f"trainer.resume=true hydra.run.dir={folder}" in lines[0])
    record = read_summary(folder)
    assert record["status"] == "interrupted" and record["interrupted_at"] == {"epoch": 2, "batch": 2,
                                                                             "signal": "SIGUSR1"}
    state = torch.load(folder / "checkpoint.pt", weights_only=False)
    assert (state["epoch"], state["batch"], state["world_size"], len(state["rng_ranks"])) == (1, 2, 2, 2)
    assert json.loads(Path(f"{audit}.1.json").read_text()) == []  # rank 1 wrote nothing into the run folder

    resumed = torchrun(*args, "trainer.resume=true", f"hydra.run.dir={folder}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_summary(folder)["status"] == "completed"
    assert rows(folder) == rows(root / "two")
    wa, wb = weights(root / "two"), weights(folder)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_run_resumes_on_another_number_of_processes(runs, tmp_path, monkeypatch):
    """Stopped mid-epoch under 2 processes and resumed by 1, or the other way round: the global batches are the
    same, so the run ends as the uninterrupted one with the new number of processes (fixed-step solver: up to
    reduction order). Per-rank lists are reported only for epochs that ran on one number of processes."""
    args, root = runs
    shrunk = tmp_path / "two_then_one"
    done = torchrun(*args, f"hydra.run.dir={shrunk}", worker="signal:1:6:SIGUSR1")
    assert done.returncode != 0 and read_summary(shrunk)["status"] == "interrupted"
    assert run_neode(["train", *args, "trainer.resume=true", f"hydra.run.dir={shrunk}"]) == 0

    grown = tmp_path / "one_then_two"
    calls = {"n": 0}
    original = ClassificationTask.training_loss

    def interrupted(self, model, batch):
        calls["n"] += 1
        if calls["n"] == 6:  # epoch 2, batch 2, as above
            os.kill(os.getpid(), signal.SIGUSR1)
        return original(self, model, batch)

    monkeypatch.setattr(ClassificationTask, "training_loss", interrupted)
    assert run_neode(["train", *args, f"hydra.run.dir={grown}"]) != 0
    monkeypatch.setattr(ClassificationTask, "training_loss", original)
    assert read_summary(grown)["status"] == "interrupted"
    resumed = torchrun(*args, "trainer.resume=true", f"hydra.run.dir={grown}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    for folder, world in ((shrunk, 1), (grown, 2)):
        record = read_summary(folder)
        assert record["status"] == "completed" and record["world_size"] == world
        ran, reference = rows(folder), rows(root / "one")
        assert len(ran) == 2
        for a, b in zip(reference, ran):
            for key in ("train_loss", "train_accuracy", "test_loss", "test_error", "nfe_forward"):
                assert b[key] == pytest.approx(a[key], rel=1e-5), (folder.name, key)
        # epoch 1 ran on the first number of processes only, epoch 2 on both: its per-rank lists would mix
        assert ("nfe_forward_per_rank" in ran[0]) == (folder == shrunk)
        assert "nfe_forward_per_rank" not in ran[1] and "peak_memory_mb_per_rank" not in ran[1]


def test_only_rank_0_writes_the_run_folder(runs):
    _, root = runs
    names = {p.relative_to(root / "two").as_posix() for p in (root / "two").rglob("*")}
    assert names == {p.relative_to(root / "one").as_posix() for p in (root / "one").rglob("*")}


def test_an_error_on_one_rank_ends_both_with_one_line(runs, tmp_path):
    args, _ = runs
    folder = tmp_path / "failed"
    done = torchrun(*args, f"hydra.run.dir={folder}", worker="raise:1:2")
    assert done.returncode != 0
    assert neode_lines(done.stderr) == ["neode: error: at epoch 1, batch 1: rank 1: RuntimeError: injected fault"]
    assert "neode_cli" not in "".join(line for line in done.stderr.splitlines() if line.startswith("  File"))
    record = read_summary(folder)
    assert record["status"] == "failed" and record["error"] == "rank 1: RuntimeError: injected fault"


# ------------------------------------------------------------------------------------ in one process


def test_every_writer_of_a_read_only_record_leaves_the_folder_untouched(tmp_path):
    writer = RunRecord(tmp_path)
    writer.write_summary({"status": "running"})
    writer.append_epoch({"epoch": 1})
    (tmp_path / ".metrics.json.x.tmp").write_text("")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    reader = writer.read_only()
    assert not reader.writes and reader.read_summary() == {"status": "running"} and reader.epochs() == [{"epoch": 1}]
    reader.write_summary({"status": "x"})
    reader.append_epoch({"epoch": 2})
    reader.keep_epochs([])
    reader.write_hydra_files({"config.yaml": "x"})
    reader.save_checkpoint({"epoch": 1})
    reader.write_error_log("x")
    assert reader.repair_epochs() == 0 and reader.remove_stray_temporaries() == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    writing = {name for name, value in vars(RunRecord).items() if callable(value) and name.startswith(
        ("write", "append", "keep", "repair", "remove", "save"))}
    assert writing <= set(vars(type(reader)))  # every writing method is overridden


def test_each_rank_gets_its_contiguous_slice_and_the_weights_make_the_global_mean():
    x, y = torch.arange(7.0), torch.arange(7)
    shards = [Processes(rank=r, world_size=3).shard((x, y)) for r in range(3)]
    assert [s.batch[0].tolist() for s in shards] == [[0, 1, 2], [3, 4], [5, 6]]
    assert all(torch.equal(s.batch[0].long(), s.batch[1]) for s in shards)
    # DDP averages the ranks' gradients: sum_r weight_r * mean_r / world = the global mean.
    assert sum(s.weight * s.batch[0].mean() for s in shards) / 3 == pytest.approx(float(x.mean()))
    spirals = Processes(rank=1, world_size=2).shard(SpiralBatch(torch.zeros(3, 5), torch.zeros(3, 5, 2)))
    assert isinstance(spirals.batch, SpiralBatch) and spirals.batch.obs_x.shape == (1, 5, 2)
    empty = Processes(rank=1, world_size=2).shard(torch.ones(1, 2))  # fewer samples than ranks
    assert empty.batch.shape == (1, 2) and empty.count == 0 and empty.weight == 0
    assert Processes(rank=0, world_size=2).shard(5).batch == 3  # a sample count (the model draws samples)


def test_the_environment_names_the_processes_and_the_resume_command_is_a_torchrun_command():
    assert not Processes.from_environment({}).distributed
    two = Processes.from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (two.rank, two.world_size, two.local_rank, two.nodes, two.is_main) == (1, 2, 1, 1, False)
    command = resume_command(["model=mlp", "trainer.resume=false"], False, "out/r", launch=two.launch_words())
    assert command == ("torchrun --standalone --nproc_per_node=2 -m neode_cli train model=mlp "
                       "trainer.resume=true hydra.run.dir=out/r")
    nodes = Processes.from_environment({"RANK": "0", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4"})
    assert nodes.launch_words()[:3] == ["torchrun", "--nnodes=2", "--nproc_per_node=4"]


def test_a_sweep_under_torchrun_is_refused_with_one_line(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_neode(["train", "-m", "seed=0,1"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "sweep (-m) cannot run under torchrun" in err[0]


def test_repeated_signals_under_torchrun_do_not_stop_at_once():
    with StopSignals(repeat_stops_at_once=False) as stop, stop.deferred():
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)  # torchrun forwards the Ctrl-C the worker also got
        assert stop.signum == signal.SIGUSR1
    with pytest.raises(Interrupted), StopSignals() as stop, stop.deferred():
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)


@pytest.mark.slow
def test_an_error_inside_ddp_s_backward_on_one_rank_ends_both_with_one_line(runs, tmp_path):
    """Not at an agreement point: the failing rank leaves its message in torchrun's store, rank 0 finds its
    collective broken, reads it, prints it and records it."""
    args, _ = runs
    folder = tmp_path / "failed"
    done = torchrun(*args, f"hydra.run.dir={folder}", worker="backward:1:2")
    assert done.returncode != 0
    assert neode_lines(done.stderr) == ["neode: error: at epoch 1, batch 1: rank 1: RuntimeError: injected fault"]
    record = read_summary(folder)
    assert record["status"] == "failed" and record["error"] == "rank 1: RuntimeError: injected fault"


def test_a_rank_killed_mid_run_is_one_line_from_rank_0_and_the_run_resumes(runs, tmp_path):
    """SIGKILL (the out-of-memory killer's) on rank 1 in epoch 2: it can say nothing, so rank 0 says it was
    killed, records that, and prints the command that continues from the checkpoint of epoch 1."""
    args, root = runs
    folder = tmp_path / "killed"
    done = torchrun(*args, f"hydra.run.dir={folder}", worker="signal:1:6:SIGKILL")
    assert done.returncode != 0
    lines = neode_lines(done.stderr)
    assert len(lines) == 1, done.stderr[-3000:]
    assert "another process of the run ended without a word: killed" in lines[0]
    assert "the checkpoint after epoch 1 is kept; continue with: torchrun --standalone --nproc_per_node=2" in lines[0]
    record = read_summary(folder)
    assert record["status"] == "failed" and record["error"].startswith("another process of the run ended without")
    resumed = torchrun(*args, "trainer.resume=true", f"hydra.run.dir={folder}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_summary(folder)["status"] == "completed" and rows(folder) == rows(root / "two")
