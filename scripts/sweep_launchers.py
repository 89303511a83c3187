"""Wall time of one sweep run by Hydra's basic launcher (one job after another) and by joblib (N jobs at once).

Runs ``neode train -m experiment=table1 budget=smoke`` (4 models, one epoch of two batches each) once per
launcher, each into its own temporary sweep folder, as separate ``neode`` processes, and prints both wall times
(start-up included: that is what a user waits for), the ratio basic / joblib, and how closely the two sweeps'
test losses agree. Each joblib job gets ``cores // n_jobs`` torch threads (``neode_cli.sweeps``), the basic
launcher's all cores, so the losses agree to float rounding (reductions split over other thread counts).

    PYTHONPATH=. python3 scripts/sweep_launchers.py                  # n_jobs=2
    PYTHONPATH=. python3 scripts/sweep_launchers.py --n-jobs 4 --repeats 3
    PYTHONPATH=. python3 scripts/sweep_launchers.py --repeats 3 trainer.limit_train_batches=30 data.batch_size=64

Fashion-MNIST is read from /usr/share/datasets/fashion-mnist when it is there (Debian's dataset-fashion-mnist),
else a generated MNIST-layout set stands in (tests/conftest.py), so the script never downloads anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")


def _data_args(tmp: Path) -> list[str]:
    """``data.root=...`` of a local Fashion-MNIST, or of a generated MNIST-layout set written into ``tmp``."""
    if (FASHION / "train-images-idx3-ubyte.gz").exists():
        return [f"data.root={FASHION}"]
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_tiny_idx

    return [f"data.root={make_tiny_idx(tmp / 'data', n_train=256, n_test=64)}"]


def run_sweep(sweep_dir: Path, extra: list[str], data: list[str]) -> float:
    """Run the table1 smoke sweep into ``sweep_dir`` with ``extra`` overrides; return its wall time in seconds.

    Exits with the sweep's output when it fails."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "neode_cli.cli", "train", "-m", "experiment=table1", "budget=smoke", *data,
               *extra, f"hydra.sweep.dir={sweep_dir}"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=sweep_dir.parent, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"sweep failed ({' '.join(command)}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


def test_losses(sweep_dir: Path) -> dict[str, tuple[float, int]]:
    """``folder: (test_loss, torch threads)`` of every run in ``sweep_dir``."""
    return {p.parent.name: (record["test_loss"], record["threads"])
            for p in sorted(sweep_dir.glob("*/metrics.json")) for record in [json.loads(p.read_text())]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib's hydra.launcher.n_jobs (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each launcher, interleaved (median shown)")
    parser.add_argument("overrides", nargs="*", help="more overrides for both sweeps, e.g. longer jobs: "
                        "trainer.limit_train_batches=30 data.batch_size=64")
    args = parser.parse_args()
    launchers = {"basic": [], f"joblib n_jobs={args.n_jobs}": ["hydra/launcher=joblib",
                                                                f"hydra.launcher.n_jobs={args.n_jobs}"]}
    times: dict[str, list[float]] = {name: [] for name in launchers}
    losses: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="neode-sweep-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data = _data_args(tmp) + list(args.overrides)
        for repeat in range(args.repeats):
            for index, (name, extra) in enumerate(launchers.items()):
                sweep = tmp / f"sweep{repeat}_{index}"
                times[name].append(run_sweep(sweep, extra, data))
                losses[name] = test_losses(sweep)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"neode train -m experiment=table1 budget=smoke {' '.join(args.overrides)} ({len(losses['basic'])} runs), "
          f"{cores} cores, "
          f"{'Fashion-MNIST' if data[0].endswith('fashion-mnist') else 'generated data'}; wall time per sweep "
          f"(median of {args.repeats}):")
    for name, values in times.items():
        print(f"  {name:<16} {statistics.median(values):7.2f} s   ({', '.join(f'{v:.2f}' for v in values)})")
    basic, parallel = (statistics.median(v) for v in times.values())
    print(f"  ratio basic / joblib: {basic / parallel:.2f}x")
    # The launchers give each job different thread counts (the basic one all cores, joblib cores // n_jobs), so
    # float reductions run in another order: the losses agree to rounding, not bit for bit.
    (basic_name, basic_runs), (parallel_name, parallel_runs) = losses.items()
    if basic_runs.keys() != parallel_runs.keys():
        sys.exit(f"the sweeps ran different jobs: {sorted(basic_runs)} vs {sorted(parallel_runs)}")
    worst = max(abs(parallel_runs[k][0] - v[0]) / abs(v[0]) for k, v in basic_runs.items())
    threads = {name: sorted({t for _, t in runs.values()}) for name, runs in losses.items()}
    verdict = "the same" if worst < 1e-5 else "different"
    print(f"  test losses: {verdict} (largest relative difference {worst:.1e}; torch threads per job: "
          f"{basic_name} {threads[basic_name]}, {parallel_name} {threads[parallel_name]})")
    if worst >= 1e-5 and threads[basic_name] != threads[parallel_name]:
        print("  (other thread counts sum in another order; early training amplifies that. Add trainer.threads=1 "
              "to compare the launchers bit for bit)")


if __name__ == "__main__":
    main()
