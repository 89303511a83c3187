"""The classification task on a tiny IDX fixture: batches, augmentation, loss, evaluation, config."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import neode_cli.config  # noqa: F401  (registers the schemas)
from neode_cli.data.mnist import load_dataset
from neode_cli.integrator import Integrator
from neode_cli.models.mlp import MLP
from neode_cli.models.odenet import ODENet
from neode_cli.tasks.classification import ClassificationTask, build_task, random_crop

from conftest import CONF


@pytest.fixture()
def task(tiny_mnist) -> ClassificationTask:
    return build_task("mnist", root=str(tiny_mnist), download=False, batch_size=16, test_batch_size=10,
                      ode_error_samples=4)


def test_random_crop_is_a_padded_shift():
    images = torch.arange(2 * 5 * 5, dtype=torch.uint8).reshape(2, 5, 5) + 1
    centre = torch.tensor([[2, 2], [2, 2]])
    assert torch.equal(random_crop(images, centre, padding=2), images)
    out = random_crop(images, torch.tensor([[0, 0], [4, 3]]), padding=2)
    padded = F.pad(images, (2, 2, 2, 2))
    assert torch.equal(out[0], padded[0, 0:5, 0:5]) and torch.equal(out[1], padded[1, 4:9, 3:8])
    assert out[0, :2].eq(0).all() and out[0, 2:, 2:].equal(images[0, :3, :3])


def test_train_batches_are_deterministic_given_the_torch_rng(task):
    torch.manual_seed(3)
    first = list(task.train_batches(0))
    torch.manual_seed(3)
    again = list(task.train_batches(0))
    torch.manual_seed(4)
    other = list(task.train_batches(0))
    assert len(first) == len(task.train_batches(0)) == 3  # 48 images, batches of 16
    for (x1, y1), (x2, y2) in zip(first, again):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))
    x, y = first[0]
    assert x.shape == (16, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_randomness_is_drawn_at_the_call(task):
    torch.manual_seed(0)
    batches = task.train_batches(0)
    torch.rand(100)  # consuming the RNG after the call must not change this epoch's batches
    late = list(batches)
    torch.manual_seed(0)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(late, task.train_batches(0)))


def test_each_training_image_once_per_epoch_without_augmentation(tiny_mnist):
    data = load_dataset("mnist", tiny_mnist, download=False)
    task = ClassificationTask(data, batch_size=20, augmentation=False, drop_last=False)
    batches = list(task.train_batches(0))
    assert [len(y) for _, y in batches] == [20, 20, 8]
    seen = torch.cat([x for x, _ in batches]).flatten(1)
    expected = data.train_images.float().div(255).flatten(1)
    # Same multiset of images: sort rows by their content hash (sum with position weights).
    key = lambda t: (t * torch.arange(1, 785)).sum(1)  # noqa: E731
    torch.testing.assert_close(key(seen).sort().values, key(expected).sort().values)
    assert torch.equal(torch.cat([y for _, y in batches]).sort().values, data.train_labels.long().sort().values)


def test_incomplete_last_batch_dropped_unless_it_is_the_only_one(tiny_mnist):
    data = load_dataset("mnist", tiny_mnist, download=False)
    assert len(ClassificationTask(data, batch_size=20).train_batches(0)) == 2  # 48 = 20 + 20 + 8
    assert len(ClassificationTask(data, batch_size=128).train_batches(0)) == 1


def test_augmentation_shifts_within_the_padding(tiny_mnist):
    data = load_dataset("mnist", tiny_mnist, download=False)
    task = ClassificationTask(data, batch_size=48, augmentation=True, crop_padding=4)
    torch.manual_seed(0)
    order = torch.randperm(48)
    offsets = torch.randint(0, 9, (48, 2))
    torch.manual_seed(0)
    (x, y), = list(task.train_batches(0))
    # Offsets are drawn per sample id, so sample i is always cropped at offsets[i] this epoch.
    expected = random_crop(data.train_images[order], offsets[order], 4).float() / 255
    assert torch.equal(x[:, 0], expected) and torch.equal(y, data.train_labels[order].long())
    assert (offsets != 4).any()  # the fixture exercises real shifts


def test_loss_decreases_in_a_few_steps(task):
    torch.manual_seed(0)
    model = MLP(hidden=32)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for epoch in range(6):
        for batch in task.train_batches(epoch):
            loss, metrics = task.training_loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            assert 0.0 <= metrics["accuracy"] <= 100.0
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3])


def test_evaluate_keys_and_units(task):
    torch.manual_seed(0)
    model = MLP(hidden=16)
    metrics = task.evaluate(model)
    assert set(metrics) == {"test_error", "test_accuracy", "test_loss"}
    assert math.isclose(metrics["test_error"] + metrics["test_accuracy"], 100.0)
    with torch.no_grad():
        logits = model(task.test_images.float() / 255)
    assert math.isclose(metrics["test_loss"], F.cross_entropy(logits, task.test_labels).item(), rel_tol=1e-5)
    wrong = (logits.argmax(1) != task.test_labels).float().mean().item() * 100
    assert math.isclose(metrics["test_error"], wrong, abs_tol=1e-9)
    # limit_batches: 24 test images in batches of 10 -> 3 batches; 1 batch = the first 10 images.
    first = task.evaluate(model, limit_batches=1)
    assert math.isclose(first["test_loss"], F.cross_entropy(logits[:10], task.test_labels[:10]).item(), rel_tol=1e-5)
    assert task.evaluate(model, limit_batches=0.5) == first
    assert task.evaluate(model, limit_batches=7) == metrics  # a count beyond the test set: all of it


def test_evaluate_ode_model_reports_nfe_and_ode_error(task):
    torch.manual_seed(0)
    model = ODENet(Integrator(method="dopri5", rtol=1e-3, atol=1e-3), channels=4)
    metrics = task.evaluate(model, limit_batches=1)
    assert set(metrics) == {"test_error", "test_accuracy", "test_loss", "test_nfe_forward", "ode_error"}
    assert metrics["test_nfe_forward"] >= 8 and metrics["test_nfe_forward"] % 6 == 2  # dopri5: 2 + 6 per step
    # ode_error is the solver error of the run's integrator: it shrinks as the tolerance tightens (Fig. 3a).
    loose = task.ode_error(with_integrator(model, Integrator(method="euler", options={"step_size": 0.5})), 4)
    tight = task.ode_error(with_integrator(model, Integrator(method="dopri5", rtol=1e-5, atol=1e-5)), 4)
    assert 0.0 <= tight < 0.1 * loose
    assert 0.0 <= metrics["ode_error"] < loose


def with_integrator(model: ODENet, integrator: Integrator) -> ODENet:
    """``model`` re-pointed at another integrator (same weights)."""
    model.ode_block.integrator = integrator
    return model


def test_record_fields(task):
    assert task.record_fields() == {"data": "mnist", "n_train": 48, "n_test": 24, "augmentation": True}


@pytest.mark.parametrize("data", ["mnist", "fashion_mnist"])
def test_data_configs_build_the_task(tiny_mnist, data):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}", f"data.root={tiny_mnist}", "data.download=false"])
    assert cfg.data.batch_size == 128 and cfg.data.test_batch_size == 1000 and cfg.data.augmentation
    assert cfg.data.name == data
    built = instantiate(cfg.data, device="cpu")
    assert isinstance(built, ClassificationTask) and built.record_fields()["data"] == data
