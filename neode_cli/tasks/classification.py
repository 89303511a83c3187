"""Image classification on MNIST-like data (Table 1 and Figure 3 of the paper).

Units: every accuracy and error this task reports is in percent (``test_error`` as in the paper's
Table 1, ``test_accuracy = 100 - test_error``, and the per-batch training ``accuracy``).
"""

from __future__ import annotations

import logging
import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ..data.mnist import DATASETS, MnistData, load_dataset
from ..integrator import Integrator
from ..models.regularization import collect_regularization
from ..ode import SolverError, collect_stats
from .base import Task, batch_limit, present, require_at_least, require_choice, require_positive

__all__ = ["ClassificationTask", "build_task", "check_options", "random_crop"]

log = logging.getLogger(__name__)

#: Tolerance of the reference solve against which ``ode_error`` is measured (paper Figure 3a).
REFERENCE_TOLERANCE = 1e-7


def random_crop(images: torch.Tensor, offsets: torch.Tensor, padding: int) -> torch.Tensor:
    """Zero-pad ``images`` ``(B, H, W)`` by ``padding`` on each side and cut ``(B, H, W)`` windows.

    ``offsets`` ``(B, 2)`` holds each window's top-left corner (row, column) in the padded image, integers
    in ``[0, 2 * padding]``; offset ``(padding, padding)`` returns the image unchanged. This is
    torchvision's ``RandomCrop(size, padding)`` with the randomness passed in.
    """
    b, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, H + 2p, W + 2p), zero fill
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


class _Batches:
    """Batches of ``(x, y)`` over a fixed sample order, built lazily; ``len()`` is the number of batches."""

    def __init__(self, task: "ClassificationTask", order: torch.Tensor, offsets: torch.Tensor | None,
                 batch_size: int, drop_last: bool):
        self.task, self.order, self.offsets, self.batch_size = task, order, offsets, batch_size
        full, rest = divmod(len(order), batch_size)
        # An incomplete last batch is dropped (as in the authors' example) unless it is the only one.
        self.count = full if (drop_last and full > 0) else full + (rest > 0)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(self.count):
            index = self.order[i * self.batch_size:(i + 1) * self.batch_size]
            offsets = None if self.offsets is None else self.offsets[index]
            yield self.task.make_batch(self.task.train_images, self.task.train_labels, index, offsets)


class ClassificationTask(Task):
    """Cross-entropy classification of ``uint8`` images with random-crop augmentation.

    Inputs are scaled to [0, 1], then standardised with ``mean``/``std`` (defaults 0 and 1 keep the
    authors' plain [0, 1] scaling). Training batches: a fresh permutation and, with ``augmentation``,
    ``RandomCrop(28, padding=crop_padding)`` offsets for every sample, all drawn from the global torch CPU
    generator when :meth:`train_batches` is called, so an epoch's batches depend only on that RNG state.
    Test batches are in file order, unaugmented.

    :meth:`evaluate` returns ``test_error`` and ``test_accuracy`` (percent), ``test_loss`` (mean cross
    entropy), and for models with an ODE block (a ``ode_block_output(x, integrator=None)`` method):
    ``test_nfe_forward`` (mean forward NFE per test batch) and ``ode_error``, the mean absolute difference
    between the ODE block's output with the model's integrator and with a dopri5 reference solve at
    rtol = atol = 1e-7, on the first ``ode_error_samples`` test images (0 disables it).
    """

    name = "classification"
    progress_keys = ("accuracy",)

    # These defaults are the config's too (``data=mnist``): the schema is generated from this signature.
    def __init__(self, data: MnistData, device: torch.device | str = "cpu",
                 batch_size: int = 128,  # paper protocol
                 test_batch_size: int = 1000,
                 augmentation: bool = True,  # RandomCrop(28, padding=crop_padding), as in the authors' example
                 crop_padding: int = 4,
                 mean: float = 0.0,  # inputs are pixel/255, then (x - mean) / std: 0 and 1 keep plain [0, 1]
                 std: float = 1.0,
                 drop_last: bool = True,  # drop an incomplete last training batch, unless it is the only one
                 ode_error_samples: int = 128):  # test images for ode_error (every epoch); 0 turns it off
        check_options(batch_size=batch_size, test_batch_size=test_batch_size, crop_padding=crop_padding,
                      std=std, ode_error_samples=ode_error_samples)
        self.data_name = data.name
        self.device = torch.device(device)
        # uint8 on the device: 47 MB for MNIST's training set, 4x less than float.
        self.train_images = data.train_images.to(self.device)
        self.train_labels = data.train_labels.to(self.device, torch.long)
        self.test_images = data.test_images.to(self.device)
        self.test_labels = data.test_labels.to(self.device, torch.long)
        self.batch_size, self.test_batch_size = batch_size, test_batch_size
        self.augmentation, self.crop_padding = augmentation, crop_padding
        self.mean, self.std = mean, std
        self.drop_last = drop_last
        self.ode_error_samples = ode_error_samples

    # ------------------------------------------------------------------------------------------ batches

    def make_batch(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                   offsets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs ``(B, 1, H, W)`` float32 and labels ``(B,)`` int64 for samples ``index``, cropped at
        ``offsets`` when given."""
        index = index.to(self.device)
        x = images[index]  # (B, H, W) uint8
        if offsets is not None:
            x = random_crop(x, offsets.to(self.device), self.crop_padding)
        x = (x.float().div_(255.0).sub_(self.mean).div_(self.std)).unsqueeze(1)
        return x, labels[index]

    def train_batches(self, epoch: int) -> _Batches:
        """This epoch's shuffled (and augmented) training batches; draws all randomness now (CPU RNG)."""
        n = len(self.train_labels)
        order = torch.randperm(n)
        offsets = torch.randint(0, 2 * self.crop_padding + 1, (n, 2)) if self.augmentation else None
        return _Batches(self, order, offsets, self.batch_size, self.drop_last)

    def test_batches(self) -> _TestBatches:
        """The test set in file order, unaugmented, in batches of ``test_batch_size``."""
        return _TestBatches(self)

    # ----------------------------------------------------------------------------------- loss and eval

    def training_loss(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Mean cross entropy of the batch (plus the model's RNODE penalty, if any), its accuracy in percent
        and the regulariser values (``reg_kinetic``, ``reg_jacobian``)."""
        x, y = batch
        with collect_regularization() as reg:
            logits = model(x)
        loss = reg.add_to(F.cross_entropy(logits, y))
        accuracy = 100.0 * (logits.argmax(dim=1) == y).float().mean().item()
        return loss, {"accuracy": accuracy, **reg.metrics()}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, limit_batches: float | int | None = None) -> dict[str, float]:
        """Test metrics over the first ``limit_batches`` test batches (see the class docstring for keys)."""
        batches = self.test_batches()
        count = batch_limit(len(batches), limit_batches)
        loss_sum, correct, seen = 0.0, 0, 0
        with collect_stats() as stats:
            for i, (x, y) in enumerate(batches):
                if i == count:
                    break
                logits = model(x)
                loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
                correct += int((logits.argmax(dim=1) == y).sum())
                seen += len(y)
        accuracy = 100.0 * correct / max(seen, 1)
        metrics = {"test_error": 100.0 - accuracy, "test_accuracy": accuracy, "test_loss": loss_sum / max(seen, 1)}
        if hasattr(model, "ode_block_output"):
            metrics["test_nfe_forward"] = stats.nfe_forward / max(count, 1)
            if self.ode_error_samples > 0:
                metrics["ode_error"] = self.ode_error(model, self.ode_error_samples)
        return metrics

    @torch.no_grad()
    def ode_error(self, model: torch.nn.Module, samples: int) -> float:
        """Mean |h(1) with the model's integrator - h(1) from a dopri5 solve at rtol = atol = 1e-7| over the
        first ``samples`` test images; NaN (with a logged warning) if the reference solve fails."""
        index = torch.arange(min(samples, len(self.test_labels)))
        x, _ = self.make_batch(self.test_images, self.test_labels, index)
        reference = Integrator(method="dopri5", rtol=REFERENCE_TOLERANCE, atol=REFERENCE_TOLERANCE,
                               gradient="backprop", backend=model.integrator.backend)
        try:
            approx = model.ode_block_output(x)
            exact = model.ode_block_output(x, reference)
        except SolverError as exc:
            log.warning("ode_error not measured: %s", exc)
            return math.nan
        return (approx - exact).abs().mean().item()

    def record_fields(self) -> dict[str, object]:
        """Dataset name, split sizes and whether random-crop augmentation was on."""
        return {"data": self.data_name, "n_train": len(self.train_labels), "n_test": len(self.test_labels),
                "augmentation": self.augmentation}


class _TestBatches:
    """The test set in order; ``len()`` is the number of batches (last one may be smaller)."""

    def __init__(self, task: ClassificationTask):
        self.task = task
        self.count = math.ceil(len(task.test_labels) / task.test_batch_size)

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        size, n = self.task.test_batch_size, len(self.task.test_labels)
        for start in range(0, n, size):
            index = torch.arange(start, min(start + size, n))
            yield self.task.make_batch(self.task.test_images, self.task.test_labels, index)


def check_options(**options) -> None:
    """Raise :class:`~neode_cli.tasks.base.OptionError` naming the first of ``options`` (keyword arguments of
    :func:`build_task` / :class:`ClassificationTask`; absent ones are not checked) that cannot work."""
    if "name" in options:
        require_choice("name", options["name"], DATASETS)
    require_at_least(1, **present(options, "batch_size", "test_batch_size"))
    require_at_least(0, **present(options, "crop_padding", "ode_error_samples"))
    require_positive(**present(options, "std"))


def build_task(name: str,  # mnist | fashion_mnist
               root: str | None = None,  # folder of the four IDX files; None: data/<name> (relative to the cwd)
               mirrors: Sequence[str] | None = None,  # base URLs to download from; None: the public mirrors
               download: bool = True,  # False: never touch the network; missing files are an error
               *, device: torch.device | str = "cpu", **options) -> ClassificationTask:
    """Load dataset ``name`` from ``root`` (downloading into it if needed and ``download``) and wrap it in a
    :class:`ClassificationTask` built with ``options`` (its keyword arguments: ``batch_size``, ...); the
    ``_target_`` of ``conf/data/mnist.yaml`` and ``fashion_mnist.yaml``.

    Raises :class:`neode_cli.data.mnist.DataError` (one line) when the files are missing or corrupt.
    """
    check_options(name=name, **options)
    root = f"data/{name}" if root is None else root
    data = load_dataset(name, root, mirrors=list(mirrors) if mirrors else None, download=download)
    return ClassificationTask(data, device=device, **options)
