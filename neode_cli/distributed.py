"""The processes of one run: one (``neode train``) or those torchrun started (DistributedDataParallel).

Contract:

- :meth:`Processes.from_environment` reads torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``) once, at the entry point; without them it is the single process (``world_size`` 1),
  for which every method below is the identity or a no-op, so a 1-process run is exactly what it was.
- :meth:`Processes.start` joins the process group: gloo for CPU tensors, and NCCL for CUDA tensors where CUDA
  is available (``cpu:gloo,cuda:nccl``), so the backend follows the device the tensors are on.
  :meth:`Processes.close` leaves it (after a barrier when every rank knows how the run ended).
- :meth:`Processes.shard` cuts a global batch of ``N`` into ``W`` contiguous slices in rank order, of
  ``N // W`` rows each and one more for the first ``N % W`` ranks (``torch.tensor_split``'s rule). A rank
  whose slice is empty (``N < W``) gets the first row as a stand-in with weight 0, so it still runs the step
  DDP needs from every rank and adds nothing to the gradient.
- :meth:`Processes.wrap` wraps a module in DistributedDataParallel (``world_size`` 1: the module itself).
- The collectives (:meth:`broadcast`, :meth:`gather`, :meth:`exchange`) are called by every rank at the same
  points of the loop; they are how ranks agree on stops, failures and checkpoints (see ``neode_cli.train``).
- A failure the ranks cannot agree on (inside DDP's backward, or a rank killed) breaks the process group.
  :meth:`Processes.tell_failure` leaves the failing rank's message in torchrun's key-value store, which
  outlives the group, and :meth:`Processes.told_failure` lets rank 0 read it (or learn that the rank that ended
  left none: it was killed), so that rank 0 says in one line what happened and records it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import time
from typing import Any, Mapping, Sequence

import torch

__all__ = ["Processes", "Shard", "is_peer_loss"]


@dataclasses.dataclass(frozen=True)
class Shard:
    """This rank's part of a global batch: ``batch`` (its slice), ``count`` of ``total`` samples, and the
    factor that makes DDP's gradient average equal the gradient of the global batch's mean loss."""

    batch: Any
    count: int
    total: int
    world_size: int

    @property
    def weight(self) -> float:
        """``count * world_size / total``: DDP averages the ranks' gradients, each the gradient of a mean over
        ``count`` samples, so scaling by this gives ``(1 / total) * sum over all samples``."""
        return self.count * self.world_size / self.total


def _bounds(total: int, rank: int, world_size: int) -> tuple[int, int]:
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return len(batch)
    if isinstance(batch, int) and not isinstance(batch, bool):
        return batch  # a task whose batch is a sample count (the model draws its own samples)
    if isinstance(batch, (tuple, list)):
        for item in batch:
            if isinstance(item, torch.Tensor) or (isinstance(item, (tuple, list)) and item):
                return _batch_size(item)
    if isinstance(batch, Mapping):
        return _batch_size(list(batch.values()))
    raise TypeError(f"cannot split a training batch of type {type(batch).__name__} across processes")


def _slice(batch: Any, start: int, stop: int) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch[start:stop]
    if isinstance(batch, int) and not isinstance(batch, bool):
        return stop - start
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # a NamedTuple
        return type(batch)(*(_slice(item, start, stop) for item in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_slice(item, start, stop) for item in batch)
    if isinstance(batch, Mapping):
        return {key: _slice(value, start, stop) for key, value in batch.items()}
    return batch


class _LossOf(torch.nn.Module):
    """``forward(batch)`` is ``task.training_loss(model, batch)``: DDP hooks ``forward``, while tasks call any
    method of the model (``loss``, ``log_prob``, ``sample``), so the whole loss runs inside this forward."""

    def __init__(self, task: Any, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self._task = task

    def forward(self, batch):
        return self._task.training_loss(self.model, batch)


def is_peer_loss(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective that failed because another process of the run is gone (it reported
    its own failure), rather than a failure of this process."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        mark in text for mark in ("Connection closed by peer", "Connection reset by peer", "Broken pipe",
                                  "gloo/transport"))


@dataclasses.dataclass(frozen=True)
class Processes:
    """Rank ``rank`` of ``world_size`` processes (``local_rank`` of ``local_world_size`` on this node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "Processes":
        """The processes torchrun describes in ``environ`` (default ``os.environ``); one process without it."""
        env = os.environ if environ is None else environ
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return cls()
        world = int(env["WORLD_SIZE"])
        return cls(rank=int(env["RANK"]), world_size=world, local_rank=int(env.get("LOCAL_RANK", 0)),
                   local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)))

    @property
    def distributed(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run folder and prints."""
        return self.rank == 0

    @property
    def nodes(self) -> int:
        """Number of nodes (torchrun's ``--nnodes``)."""
        return max(1, self.world_size // max(1, self.local_world_size))

    def launch_words(self) -> list[str]:
        """The words that start ``neode`` in this layout: ``neode``, or the torchrun command for it."""
        if not self.distributed:
            return ["neode"]
        if self.nodes == 1:
            return ["torchrun", "--standalone", f"--nproc_per_node={self.local_world_size}", "-m", "neode_cli"]
        return ["torchrun", f"--nnodes={self.nodes}", f"--nproc_per_node={self.local_world_size}",
                "--rdzv-backend=c10d", "--rdzv-endpoint=HOST:PORT", "-m", "neode_cli"]

    # -------------------------------------------------------------------------------------- group

    def start(self) -> None:
        """Join the process group (a no-op for one process)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            return
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)

    def close(self, agreed: bool) -> None:
        """Leave the process group; with ``agreed`` (every rank knows how the run ended) wait for all first,
        so that rank 0 has written the record before any rank exits (torchrun stops the others then)."""
        if not self.distributed:
            return
        import torch.distributed as dist

        if not dist.is_initialized():
            return
        if agreed:
            try:
                dist.barrier()
            except Exception:  # noqa: BLE001 - a rank already gone: nothing to wait for
                pass
        dist.destroy_process_group()

    def _store(self):
        """A new client of torchrun's key-value store (``MASTER_ADDR:MASTER_PORT``, the store every rank joined
        the group through), so it works after the group broke."""
        import torch.distributed as dist

        return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                             timeout=datetime.timedelta(seconds=5))

    def _failure_key(self, rank: int) -> str:
        return f"neode/failure/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/rank{rank}"

    def tell_failure(self, message: str) -> bool:
        """Leave this rank's failure ``message`` for rank 0 (see the module docstring); whether that worked."""
        if not self.distributed:
            return False
        try:
            self._store().set(self._failure_key(self.rank), message)
        except Exception:  # noqa: BLE001 - no store (not under torchrun, or it is gone): the caller prints
            return False
        return True

    def told_failure(self, wait_s: float = 5.0) -> tuple[int, str] | None:
        """``(rank, message)`` of the first other rank that left a failure, waiting up to ``wait_s`` for one;
        None when none did (a rank that was killed leaves nothing)."""
        if not self.distributed:
            return None
        with contextlib.suppress(Exception):
            store = self._store()
            keys = {r: self._failure_key(r) for r in range(self.world_size) if r != self.rank}
            deadline = time.monotonic() + wait_s
            while True:
                for rank, key in keys.items():
                    if store.check([key]):
                        return rank, store.get(key).decode("utf-8", "replace")
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
        return None

    def place(self, device: torch.device) -> torch.device:
        """The device of this rank: ``cuda`` becomes ``cuda:<local_rank>`` under torchrun."""
        if self.distributed and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    # -------------------------------------------------------------------------------- collectives

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (pickled)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        boxes: list[Any] = [None] * self.world_size
        dist.all_gather_object(boxes, obj)
        return boxes

    def exchange(self, values: Sequence[float]) -> torch.Tensor:
        """Every rank's ``values`` (the same length on all) as a ``(world_size, len)`` float64 tensor."""
        mine = torch.tensor([float(v) for v in values], dtype=torch.float64)
        if not self.distributed:
            return mine[None]
        import torch.distributed as dist

        rows = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(rows, mine)
        return torch.stack(rows)

    # ------------------------------------------------------------------------------------ batches

    def shard(self, batch: Any) -> Shard:
        """This rank's slice of the global ``batch`` (module docstring)."""
        if not self.distributed:
            return Shard(batch, 1, 1, 1)  # the whole batch; count and total are not used
        total = _batch_size(batch)
        start, stop = _bounds(total, self.rank, self.world_size)
        if stop > start:
            return Shard(_slice(batch, start, stop), stop - start, total, self.world_size)
        return Shard(_slice(batch, 0, 1), 0, total, self.world_size)

    def wrap(self, task: Any, model: torch.nn.Module, device: torch.device):
        """The callable ``step(batch) -> (loss, metrics)`` of a training step: ``task.training_loss`` on
        ``model``, inside DistributedDataParallel when there are several processes."""
        if not self.distributed:
            return lambda batch: task.training_loss(model, batch)
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        # static_graph: every step uses the same parameters, and DDP then finds any a model leaves out of its
        # loss (e.g. a fixed end time) once, instead of tracing the graph at every step.
        return DistributedDataParallel(_LossOf(task, model), device_ids=ids, static_graph=True)
