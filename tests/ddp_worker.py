"""Test harness for DDP runs: ``python -m torch.distributed.run ... tests/ddp_worker.py FAULTS train ...``.

Runs ``neode train`` in a torchrun worker (what ``-m neode_cli`` runs) after injecting, on chosen ranks, what
tests/test_ddp.py needs; ``FAULTS`` is ``none`` or ``+``-joined items:

- ``signal:RANK:CALL:NAME``: rank RANK sends itself signal NAME at its CALL-th training step (only that rank);
- ``raise:RANK:CALL``: rank RANK's CALL-th training step raises ``RuntimeError("injected fault")``;
- ``backward:RANK:CALL``: the same error, raised in the backward pass of that step (inside DDP's reduction);
- ``audit:FOLDER:OUT``: ranks > 0 record every write under FOLDER (file opened for writing, rename, mkdir,
  removal; Python audit events) into ``OUT.<rank>.json`` (written at once, and again at each write found, so
  the file is complete however the process ends).
"""

import json
import os
import signal
import sys

from neode_cli.cli import main
from neode_cli.tasks.classification import ClassificationTask

RANK = int(os.environ.get("RANK", "0"))
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _on_step(action):
    original = ClassificationTask.training_loss
    calls = {"n": 0}

    def step(self, model, batch):
        calls["n"] += 1
        action(calls["n"])
        return original(self, model, batch)

    ClassificationTask.training_loss = step


def _audit(folder: str, out: str) -> None:
    folder = os.path.realpath(folder)
    writes: list[str] = []
    report = f"{out}.{RANK}.json"

    def save():
        with open(report, "w") as f:
            f.write(json.dumps(writes))

    def inside(path) -> bool:
        try:
            return os.path.realpath(os.fsdecode(path)).startswith(folder)
        except (TypeError, ValueError):
            return False

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing and inside(path):
                writes.append(f"open {path}")
                save()
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "os.truncate") and args and inside(args[0]):
            writes.append(f"{event} {args[0]}")
            save()

    save()
    sys.addaudithook(hook)


def _raise(grad):
    raise RuntimeError("injected fault")


def install(spec: str) -> None:
    for item in spec.split("+"):
        kind, *args = item.split(":")
        if kind == "signal" and int(args[0]) == RANK:
            at, signum = int(args[1]), getattr(signal, args[2])
            _on_step(lambda n: os.kill(os.getpid(), signum) if n == at else None)
        elif kind == "raise" and int(args[0]) == RANK:
            at = int(args[1])

            def fail(n):
                if n == at:
                    raise RuntimeError("injected fault")
            _on_step(fail)
        elif kind == "backward" and int(args[0]) == RANK:
            at, original = int(args[1]), ClassificationTask.training_loss
            calls = {"n": 0}

            def step(self, model, batch):
                calls["n"] += 1
                loss, metrics = original(self, model, batch)
                if calls["n"] == at:
                    loss.register_hook(_raise)
                return loss, metrics
            ClassificationTask.training_loss = step
        elif kind == "audit" and RANK > 0:
            _audit(args[0], args[1])


if __name__ == "__main__":
    install(sys.argv[1])
    main(sys.argv[2:])
