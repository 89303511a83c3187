"""Shared fixtures: a tiny MNIST-layout IDX dataset and a helper that runs ``neode train`` in-process.

Training tests use tiny sizes (a few 28x28 images, 4 channels, 1-2 epochs, a few batches) so the whole
suite stays fast on 2 CPU cores; they check files and values, never timings.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


def make_tiny_idx(root: Path, n_train: int = 48, n_test: int = 24, seed: int = 0) -> Path:
    """Write a learnable tiny MNIST-layout dataset (gzipped IDX) into ``root``: class k is a bright
    horizontal bar at row 2 + 2k plus noise; returns ``root``."""
    from neode_cli.data.mnist import write_dataset

    g = torch.Generator().manual_seed(seed)

    def split(n: int):
        labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.int64)
        images = torch.randint(0, 60, (n, 28, 28), generator=g, dtype=torch.int64)
        for i, k in enumerate(labels.tolist()):
            images[i, 2 + 2 * k: 4 + 2 * k, 4:24] = 255
        return images.to(torch.uint8), labels.to(torch.uint8)

    train_images, train_labels = split(n_train)
    test_images, test_labels = split(n_test)
    return write_dataset(root, train_images, train_labels, test_images, test_labels)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """Folder holding a tiny MNIST-layout dataset (48 train, 24 test images)."""
    return make_tiny_idx(tmp_path_factory.mktemp("tiny_mnist"))


#: Overrides that make any classification run tiny: 4 channels, batches of 16, 1 epoch, no progress bar.
def tiny_overrides(data_root: Path, model: str = "odenet") -> list[str]:
    """Overrides for a few-batch run of ``model`` on the tiny dataset at ``data_root``."""
    overrides = [f"model={model}", f"data.root={data_root}", "data.download=false", "data.batch_size=16",
                 "data.test_batch_size=12", "data.ode_error_samples=4", "trainer.max_epochs=1",
                 "trainer.progress=false", "trainer.device=cpu"]
    if model in ("odenet", "rknet", "resnet"):
        overrides.append("model.channels=4")
    if model == "resnet":
        overrides.append("model.num_blocks=2")
    if model == "mlp":
        overrides.append("model.hidden=16")
    return overrides


def run_neode(args: list[str]) -> int:
    """Run ``neode <args>`` in this process; return its exit status (0 when it returned normally)."""
    from neode_cli.cli import main

    try:
        main(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def read_summary(run_dir: Path) -> dict:
    """``metrics.json`` of a run folder."""
    return json.loads((Path(run_dir) / "metrics.json").read_text())


@pytest.fixture()
def train_run(tiny_mnist, tmp_path):
    """``train_run(*overrides, model=..., name=...)`` runs ``neode train`` in-process on the tiny dataset in a
    fresh run folder; returns ``(exit status, run folder)``."""

    def run(*overrides: str, model: str = "odenet", name: str = "run") -> tuple[int, Path]:
        run_dir = tmp_path / name
        args = ["train", *tiny_overrides(tiny_mnist, model), f"hydra.run.dir={run_dir}", *overrides]
        return run_neode(args), run_dir

    return run


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests share 2 cores with other work: keep torch to one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

