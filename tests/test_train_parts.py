"""The loop's parts on their own: measurement (saved-tensor bytes, parameters), the run record, limits, builders."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from neode_cli.measure import PeakMemory, SavedTensorMeter, count_parameters
from neode_cli.runs import RunRecord, read_jsonl, to_jsonable, write_json_atomic
from neode_cli.config import build_integrator
from neode_cli.tasks.base import batch_limit
from neode_cli.train import build_model, build_optimizer, resolve_device


def chain(x: torch.Tensor, weight: torch.Tensor, layers: int) -> torch.Tensor:
    for _ in range(layers):
        x = torch.tanh(x * weight)  # saves x*weight's inputs and tanh's output: fresh tensors each layer
    return x.sum()


@pytest.mark.parametrize("layers", [1, 4, 16])
def test_saved_tensor_meter_counts_what_backward_needs_and_releases_it(layers):
    x, w = torch.randn(1000), torch.randn(1000, requires_grad=True)
    meter = SavedTensorMeter()
    with meter.track():
        loss = chain(x, w, layers)
        held = meter.current
        loss.backward()
    # mul saves its input (for w's gradient; w itself is a leaf that requires grad: not counted), tanh saves
    # its output, which is the next layer's input (one storage, counted once): the input x plus one
    # 4000-byte tensor per layer, so O(L) for backprop through L layers.
    assert held == 4000 * (layers + 1)
    assert meter.peak == held and meter.current == 0


def test_saved_tensor_meter_counts_a_shared_storage_once():
    x, w = torch.randn(500), torch.randn(500, requires_grad=True)
    meter = SavedTensorMeter()
    with meter.track():
        y = x * w  # saves x (2000 bytes); w is a leaf that requires grad: not activation memory
        z = (x[:250] * w[:250]).sum() + y.sum()  # saves a view of x: same storage, not counted again
        assert meter.current == 2000
        z.backward()
    assert meter.current == 0


def test_saved_tensor_meter_frees_a_graph_dropped_without_backward():
    # A graph that is dropped unused (e.g. a solver's step-size bookkeeping) must be freed: a hook that
    # held the saved *output* of tanh would form a cycle through its grad_fn and leak it forever.
    w = torch.randn(1000, requires_grad=True)
    meter = SavedTensorMeter()
    with meter.track():
        unused = torch.tanh(torch.randn(1000) * w)
        assert meter.current > 0
        del unused
    assert meter.current == 0


def test_saved_tensor_meter_keeps_double_backward_exact():
    # Hooks hold detached aliases; autograd must still rebuild the graph through saved tensors.
    def second_derivative(track: bool) -> torch.Tensor:
        x = torch.linspace(-1, 1, 7, dtype=torch.float64, requires_grad=True)
        meter = SavedTensorMeter()
        with meter.track() if track else torch.enable_grad():
            y = torch.exp(torch.sin(x) ** 2)
            (g,) = torch.autograd.grad(y.sum(), x, create_graph=True)
            (h,) = torch.autograd.grad(g.sum(), x)
        return h

    assert torch.allclose(second_derivative(True), second_derivative(False))


def test_peak_memory_on_cpu_is_relative_to_the_step():
    meter = PeakMemory("cpu")
    assert meter.kind == "autograd_saved"
    w = torch.randn(100, requires_grad=True)
    with meter.step():
        torch.tanh(torch.randn(100) * w).sum().backward()
    first = meter.last_bytes
    with meter.step():
        torch.tanh(torch.randn(100) * w).sum().backward()
    assert first == meter.last_bytes > 0


def test_count_parameters_counts_trainable_scalars():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert count_parameters(model) == 3 * 4 + 4 + 4 * 2 + 2
    model[0].weight.requires_grad_(False)
    assert count_parameters(model) == 4 + 4 * 2 + 2


@pytest.mark.parametrize(("total", "limit", "expected"), [
    (10, None, 10), (10, 0.25, 2), (10, 0.01, 1), (10, 1.0, 10), (10, 3, 3), (10, 50, 10), (None, 4, 4), (None, None, None),
])
def test_batch_limit_reads_fractions_and_counts(total, limit, expected):
    assert batch_limit(total, limit) == expected


def test_run_record_files(tmp_path):
    record = RunRecord(tmp_path / "run")
    record.append_epoch({"epoch": 1, "loss": torch.tensor(0.5), "nan": float("nan")})
    record.append_epoch({"epoch": 2, "loss": 0.25})
    assert record.epochs() == [{"epoch": 1, "loss": 0.5, "nan": None}, {"epoch": 2, "loss": 0.25}]
    record.keep_epochs(record.epochs()[:1])
    assert [r["epoch"] for r in record.epochs()] == [1]
    record.write_summary({"status": "completed", "path": tmp_path})
    assert record.read_summary() == {"status": "completed", "path": str(tmp_path)}
    state = {"epoch": 3, "global_step": 6, "model": {"w": torch.ones(2)}, "optimizer": {}, "scheduler": {}, "rng": {}}
    record.save_checkpoint(state)
    assert record.load_checkpoint()["epoch"] == 3
    assert sorted(p.name for p in record.run_dir.iterdir()) == ["checkpoint.pt", "metrics.json", "metrics.jsonl"]


def test_a_torn_last_line_is_skipped(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2, "lo')
    assert read_jsonl(path) == [{"epoch": 1}]


def test_atomic_write_leaves_the_old_file_when_serialising_fails(tmp_path):
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"status": "running"})

    class Unprintable:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_json_atomic(path, {"status": Unprintable()})
    assert json.loads(path.read_text()) == {"status": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left


def test_to_jsonable_handles_numbers_of_every_kind():
    import numpy as np

    assert to_jsonable({"a": np.float32(0.5), "b": torch.tensor([1, 2]), "c": float("inf"), "d": (1, 2)}) == \
        {"a": 0.5, "b": [1, 2], "c": None, "d": [1, 2]}


def test_builders_follow_the_config():
    solver = OmegaConf.create({"method": "rk4", "rtol": 1e-3, "atol": 1e-4, "step_size": 0.25, "first_step": None,
                               "max_num_steps": None, "safety": None, "ifactor": None, "dfactor": None,
                               "backend": "neode"})
    integrator = build_integrator(solver, OmegaConf.create({"method": "adjoint_seminorm"}))
    assert (integrator.method, integrator.atol, integrator.gradient, integrator.options) == \
        ("rk4", 1e-4, "adjoint_seminorm", {"step_size": 0.25})
    mlp = build_model(OmegaConf.create({"_target_": "neode_cli.models.mlp.MLP", "hidden": 8}), integrator)
    assert count_parameters(mlp) == 784 * 8 + 8 + 8 * 10 + 10  # built without an integrator
    optim = OmegaConf.create({"name": "sgd", "lr": 0.1, "batch_reference": 128, "momentum": 0.9, "nesterov": False,
                              "betas": [0.9, 0.999], "weight_decay": 0.0, "milestones": [2, 4], "gamma": 0.1})
    optimizer, scheduler = build_optimizer(optim, mlp.parameters(), batch_size=256)
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.2, 0.2, 0.02, 0.02, 0.002])


def test_cpu_device_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
