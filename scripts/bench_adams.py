"""DETEST-style accuracy and work of neode's adaptive ``adams`` against SciPy's LSODA (and dopri5).

Problems from Hull, Enright, Fellen & Sedgwick 1972 ("Comparing numerical methods for ordinary differential
equations", SIAM J. Numer. Anal. 9(4)), non-stiff classes A (scalar), B (small systems) and D (orbit equations),
all on [0, 20]: A1 y'=-y; A2 y'=-y^3/2; A3 y'=y cos t; A4 y'=y/4 (1 - y/20); A5 y'=(y-t)/(y+t), y(0)=4;
B1 (Lotka-Volterra) y1'=2(y1-y1 y2), y2'=-(y2-y1 y2), y(0)=(1,3); D1/D3/D5 the two-body problem with
eccentricity 0.1/0.5/0.9. Error: max-norm at t=20 against dopri8 at rtol=atol=1e-13 (float64). NFE: neode's
own counter for both (for LSODA every call SciPy makes, Jacobian difference quotients included).

Usage: python scripts/bench_adams.py [--tols 1e-3,1e-6,1e-9]
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from neode_cli.ode import collect_stats, odeint  # noqa: E402


def _orbit(e: float):
    y0 = torch.tensor([1 - e, 0.0, 0.0, math.sqrt((1 + e) / (1 - e))], dtype=torch.float64)

    def f(t, y):
        r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
        return torch.stack([y[2], y[3], -y[0] / r3, -y[1] / r3])

    return f, y0


PROBLEMS = {
    "A1": (lambda t, y: -y, torch.tensor([1.0], dtype=torch.float64)),
    "A2": (lambda t, y: -0.5 * y ** 3, torch.tensor([1.0], dtype=torch.float64)),
    "A3": (lambda t, y: y * torch.cos(t), torch.tensor([1.0], dtype=torch.float64)),
    "A4": (lambda t, y: 0.25 * y * (1 - y / 20), torch.tensor([1.0], dtype=torch.float64)),
    "A5": (lambda t, y: (y - t) / (y + t), torch.tensor([4.0], dtype=torch.float64)),
    "B1": (lambda t, y: torch.stack([2 * (y[0] - y[0] * y[1]), -(y[1] - y[0] * y[1])]),
           torch.tensor([1.0, 3.0], dtype=torch.float64)),
    "D1": _orbit(0.1), "D3": _orbit(0.5), "D5": _orbit(0.9),
}
SOLVERS = {"adams": ("adams", None), "LSODA": ("scipy_solver", {"solver": "LSODA"}), "dopri5": ("dopri5", None)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tols", default="1e-3,1e-6,1e-9")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tols = [float(v) for v in args.tols.split(",")]
    t = torch.tensor([0.0, 20.0], dtype=torch.float64)
    print("| problem | tol | " + " | ".join(f"{s} error | {s} NFE" for s in SOLVERS) + " |")
    print("|---|---|" + "---|---|" * len(SOLVERS))
    totals = {s: [0, 0] for s in SOLVERS}
    for name, (f, y0) in PROBLEMS.items():
        ref = odeint(f, y0, t, rtol=1e-13, atol=1e-13, method="dopri8")[-1]
        for tol in tols:
            cells = []
            for solver, (method, options) in SOLVERS.items():
                with collect_stats() as s, warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    y = odeint(f, y0, t, rtol=tol, atol=tol, method=method, options=options)[-1]
                err = (y - ref).abs().max().item()
                totals[solver][0] += s.nfe_forward
                totals[solver][1] += err <= 10 * tol
                cells.append(f"{err:.1e} | {s.nfe_forward}")
            print(f"| {name} | {tol:.0e} | " + " | ".join(cells) + " |")
    n = len(PROBLEMS) * len(tols)
    print("\nTotal NFE over all problems and tolerances, and cases with error <= 10 x tol:")
    for solver, (nfe, ok) in totals.items():
        print(f"  {solver}: NFE {nfe}, within 10 x tol {ok}/{n}")


if __name__ == "__main__":
    main()
