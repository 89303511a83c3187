"""Overhead of the run folder lock and periodic (mid-epoch) checkpoints per epoch of ODE-Net training.

Runs the same short ODE-Net epoch (Fashion-MNIST if it is on this machine, else a generated MNIST-layout set)
in three variants, interleaved so that machine load hits all alike, and prints the median times and their
ratios to the plain variant:

- ``plain``: no lock, no checkpoint at all (``trainer.checkpoint=false``, the lock replaced by a no-op);
- ``default``: what ``neode train`` does by default: the lock, ``checkpoint_every_minutes=10`` (never due in a
  short epoch) and the end-of-epoch checkpoint;
- ``every N``: the lock and a checkpoint every N batches (``trainer.checkpoint_every_n_batches=N``).

Times: ``epoch`` is the epoch's training time from ``metrics.jsonl`` (periodic saves happen inside it); ``run``
is the wall time of the whole ``neode train`` call (start-up, evaluation and the end-of-epoch save included).

    PYTHONPATH=. python3 scripts/bench_checkpoint_overhead.py --batches 100 --repeats 3 --every 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _data_args(tmp: Path) -> list[str]:
    if (FASHION / "train-images-idx3-ubyte.gz").exists():
        return ["data=fashion_mnist", f"data.root={FASHION}", "data.download=false"]
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_tiny_idx  # generated MNIST-layout data

    root = make_tiny_idx(tmp / "data", n_train=4096, n_test=256)
    return [f"data.root={root}", "data.download=false"]


class _NoLock:
    """Stands in for :class:`neode_cli.run_lock.RunLock` in the plain variant."""

    def __init__(self, run_dir) -> None:
        pass

    def acquire(self):
        return self

    def release(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100, help="training batches per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, default=10, help="N of the checkpoint-every-N-batches variant")
    parser.add_argument("--channels", type=int, default=16, help="ODE-Net channels (64 in the paper)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import neode_cli.train as train
    from neode_cli.cli import main as neode

    tmp = Path(tempfile.mkdtemp(prefix="bench_ckpt_"))
    common = ["train", "model=odenet", f"model.channels={args.channels}", *_data_args(tmp),
              f"trainer.limit_train_batches={args.batches}", "trainer.limit_test_batches=1", "trainer.max_epochs=1",
              "data.ode_error_samples=0", "trainer.progress=false", "logger=none", "trainer.device=cpu",
              "trainer.threads=1", "hydra.job_logging.root.level=WARNING"]
    variants = {
        "plain": ["trainer.checkpoint=false", "trainer.checkpoint_every_minutes=null"],
        "default": [],
        f"every {args.every}": [f"trainer.checkpoint_every_n_batches={args.every}"],
    }
    times: dict[str, dict[str, list[float]]] = {name: {"epoch": [], "run": []} for name in variants}
    real_lock = train.RunLock
    for repeat in range(args.repeats):
        for name, extra in variants.items():
            folder = tmp / f"{name.replace(' ', '_')}_{repeat}"
            train.RunLock = _NoLock if name == "plain" else real_lock
            start = time.perf_counter()
            try:
                neode([*common, *extra, f"hydra.run.dir={folder}"])
            finally:
                train.RunLock = real_lock
            times[name]["run"].append(time.perf_counter() - start)
            row = json.loads((folder / "metrics.jsonl").read_text().splitlines()[0])
            times[name]["epoch"].append(row["epoch_time_s"])
            print(f"repeat {repeat + 1} {name:>10}: epoch {row['epoch_time_s']:.2f} s, run {times[name]['run'][-1]:.2f} s",
                  flush=True)
    base = {kind: statistics.median(times["plain"][kind]) for kind in ("epoch", "run")}
    print(f"\nODE-Net ({args.channels} channels), {args.batches} batches of 128, median of {args.repeats} interleaved repeats")
    for name in variants:
        epoch, run = (statistics.median(times[name][kind]) for kind in ("epoch", "run"))
        print(f"{name:>10}: epoch {epoch:.2f} s ({epoch / base['epoch']:.3f}x plain), "
              f"run {run:.2f} s ({run / base['run']:.3f}x plain)")


if __name__ == "__main__":
    main()
