"""Measurements of a training step: parameter count, wall time, peak memory.

NFE is not measured here: the solver counts its own work (``neode_cli.ode.collect_stats``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator

import torch

__all__ = ["count_parameters", "Stopwatch", "SavedTensorMeter", "PeakMemory"]


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable scalars in ``model`` (parameters with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Stopwatch:
    """Wall-clock time of a block; on CUDA it synchronises before reading the clock so queued kernels count.

    Usage: ``with watch: ...`` then ``watch.seconds`` (the duration of the last block).
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self._cuda = torch.device(device).type == "cuda"
        self.seconds = 0.0

    def _sync(self) -> None:
        if self._cuda:
            torch.cuda.synchronize()

    def __enter__(self) -> "Stopwatch":
        self._sync()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self._sync()
        self.seconds = time.perf_counter() - self._start


class _Saved:
    """A tensor autograd saved for backward, counted while it is alive (freed with the graph)."""

    __slots__ = ("tensor", "key", "meter", "__weakref__")

    def __init__(self, tensor: torch.Tensor, key: int, meter: "SavedTensorMeter") -> None:
        self.tensor = tensor
        self.key = key
        self.meter = meter

    def __del__(self) -> None:
        self.meter._release(self.key)


class SavedTensorMeter:
    """Live and peak bytes of the tensors autograd holds for the backward pass (any device).

    Inside ``with meter.track():`` every tensor saved for backward is counted once per storage (views and
    repeated saves of one tensor share it) until the graph that holds it is freed. Parameters are not
    counted: they are the model, not activation memory. Run both the forward and the backward pass inside
    the block so that memory the backward pass itself saves (e.g. the adjoint's recomputation) counts too.
    This is what makes the paper's O(1) (adjoint) vs O(L) (backprop) memory claim measurable on a CPU.
    """

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self._live: dict[int, list[int]] = {}  # storage pointer -> [references, bytes]

    def reset_peak(self) -> None:
        """Start a new peak from the bytes held now."""
        self.peak = self.current

    def _pack(self, tensor: torch.Tensor):
        if isinstance(tensor, torch.nn.Parameter) or (tensor.is_leaf and tensor.requires_grad):
            return tensor
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        entry = self._live.get(key)
        if entry is None:
            nbytes = storage.nbytes()
            self._live[key] = [1, nbytes]
            self.current += nbytes
            self.peak = max(self.peak, self.current)
        else:
            entry[0] += 1
        # Hold a detached alias, never the tensor itself: an op's saved *output* holds its grad_fn, which
        # holds this wrapper, a reference cycle through C++ that Python cannot collect (a leak of every
        # graph that is dropped without backward). Autograd restores grad_fn on unpack, so double
        # backward still works (tests/test_train_parts.py checks both).
        return _Saved(tensor.detach(), key, self)

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.current -= entry[1]
            del self._live[key]

    @staticmethod
    def _unpack(saved):
        return saved.tensor if isinstance(saved, _Saved) else saved

    @contextlib.contextmanager
    def track(self) -> Iterator["SavedTensorMeter"]:
        """Count tensors saved for backward inside the block."""
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            yield self


class PeakMemory:
    """Peak memory of one training step in bytes, by the best measure the device offers.

    CUDA: ``torch.cuda.max_memory_allocated`` (everything allocated: activations, parameters, optimizer
    state). Elsewhere: the peak bytes autograd holds for backward (:class:`SavedTensorMeter`). ``kind``
    names which one, and is recorded next to the number.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.kind = "cuda_max_allocated" if self.device.type == "cuda" else "autograd_saved"
        self._meter = SavedTensorMeter()

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Measure the block (forward and backward of one batch); read :attr:`last_bytes` afterwards."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            yield
            self.last_bytes = int(torch.cuda.max_memory_allocated(self.device))
        else:
            # Relative to what is held at the start, so a graph some earlier step left alive is not counted.
            self._meter.reset_peak()
            baseline = self._meter.current
            with self._meter.track():
                yield
            self.last_bytes = int(self._meter.peak - baseline)

    last_bytes: int = 0
