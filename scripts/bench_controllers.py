"""I vs PI step-size controller on non-stiff problems: NFE, accepted/rejected steps, final error.

Problems (in the spirit of the DETEST set, Hull, Enright, Fellen & Sedgwick 1972), all float64:
  decay       y' = -y, y(0) = 1, t in [0, 10]                                exact: exp(-t)
  vdp         Van der Pol, mu = 1, y(0) = (2, 0), t in [0, 20]                reference: scipy DOP853 at 1e-13
  lotka       Lotka-Volterra (1.5, 1, 3, 1), y(0) = (1, 1), t in [0, 15]     reference: scipy DOP853 at 1e-13
  kepler      two-body orbit, eccentricity 0.5, one period (2 pi)            exact: back at the start
  brusselator A = 1, B = 3, y(0) = (1.5, 3), t in [0, 20]                    reference: scipy DOP853 at 1e-13
  arenstorf   restricted three-body periodic orbit, one period (17.065...)  exact: back at the start
at rtol = atol in {1e-3, 1e-6, 1e-9} with dopri5 and bosh3. Error: max abs error of the final state.

Usage: python scripts/bench_controllers.py [--methods dopri5,bosh3] [--tols 1e-3,1e-6,1e-9]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from neode_cli.ode import collect_stats, odeint  # noqa: E402

MU_ARENSTORF = 0.012277471
ARENSTORF_PERIOD = 17.0652165601579625588917206249


def _vdp(t, y):
    return torch.stack([y[1], (1 - y[0] ** 2) * y[1] - y[0]])


def _lotka(t, y):
    return torch.stack([1.5 * y[0] - y[0] * y[1], -3.0 * y[1] + y[0] * y[1]])


def _kepler(t, y):
    r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
    return torch.stack([y[2], y[3], -y[0] / r3, -y[1] / r3])


def _brusselator(t, y):
    return torch.stack([1 + y[0] ** 2 * y[1] - 4 * y[0], 3 * y[0] - y[0] ** 2 * y[1]])


def _arenstorf(t, y):
    mu, nu = MU_ARENSTORF, 1 - MU_ARENSTORF
    d1 = ((y[0] + mu) ** 2 + y[1] ** 2) ** 1.5
    d2 = ((y[0] - nu) ** 2 + y[1] ** 2) ** 1.5
    return torch.stack([y[2], y[3], y[0] + 2 * y[3] - nu * (y[0] + mu) / d1 - mu * (y[0] - nu) / d2,
                        y[1] - 2 * y[2] - nu * y[1] / d1 - mu * y[1] / d2])


E = 0.5
PROBLEMS = {  # name: (field, y0, t_end, exact final state or None for a scipy reference)
    "decay": (lambda t, y: -y, [1.0], 10.0, [math.exp(-10.0)]),
    "vdp": (_vdp, [2.0, 0.0], 20.0, None),
    "lotka": (_lotka, [1.0, 1.0], 15.0, None),
    "kepler": (_kepler, [1 - E, 0.0, 0.0, math.sqrt((1 + E) / (1 - E))], 2 * math.pi,
               [1 - E, 0.0, 0.0, math.sqrt((1 + E) / (1 - E))]),
    "brusselator": (_brusselator, [1.5, 3.0], 20.0, None),
    "arenstorf": (_arenstorf, [0.994, 0.0, 0.0, -2.00158510637908252240537862224], ARENSTORF_PERIOD,
                  [0.994, 0.0, 0.0, -2.00158510637908252240537862224]),
}


def _reference(field, y0, t_end):
    from scipy.integrate import solve_ivp

    def f(t, y):
        return field(torch.tensor(t, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)).numpy()

    return solve_ivp(f, (0.0, t_end), y0, method="DOP853", rtol=1e-13, atol=1e-13).y[:, -1].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="dopri5,bosh3")
    parser.add_argument("--tols", default="1e-3,1e-6,1e-9")
    args = parser.parse_args()
    torch.set_num_threads(1)
    methods, tols = args.methods.split(","), [float(x) for x in args.tols.split(",")]
    print("| problem | method | tol | NFE I / PI | accepted I / PI | rejected I / PI | error I / PI | NFE PI/I |")
    print("|---|---|---|---|---|---|---|---|")
    totals: dict[str, list[int]] = {}
    for name, (field, y0, t_end, exact) in PROBLEMS.items():
        exact = torch.tensor(exact if exact is not None else _reference(field, y0, t_end), dtype=torch.float64)
        for method in methods:
            for tol in tols:
                row = {}
                for controller in ("i", "pi"):
                    with collect_stats() as s:
                        ys = odeint(field, torch.tensor(y0, dtype=torch.float64),
                                    torch.tensor([0.0, t_end], dtype=torch.float64), rtol=tol, atol=tol,
                                    method=method, options=dict(controller=controller, max_num_steps=10**6))
                    row[controller] = (s.nfe_forward, s.steps_accepted, s.steps_rejected,
                                       (ys[-1] - exact).abs().max().item())
                    acc = totals.setdefault(f"{method} {tol:g} {controller}", [0, 0, 0])
                    for k in range(3):
                        acc[k] += row[controller][k]
                i, p = row["i"], row["pi"]
                print(f"| {name} | {method} | {tol:g} | {i[0]} / {p[0]} | {i[1]} / {p[1]} | {i[2]} / {p[2]} | "
                      f"{i[3]:.1e} / {p[3]:.1e} | {p[0] / i[0]:.2f} |")
    print()
    print("| method | tol | total NFE I / PI | accepted I / PI | rejected I / PI | NFE PI/I | rejected PI/I |")
    print("|---|---|---|---|---|---|---|")
    for method in methods:
        for tol in tols:
            i, p = totals[f"{method} {tol:g} i"], totals[f"{method} {tol:g} pi"]
            print(f"| {method} | {tol:g} | {i[0]} / {p[0]} | {i[1]} / {p[1]} | {i[2]} / {p[2]} | "
                  f"{p[0] / i[0]:.2f} | {p[2] / max(i[2], 1):.2f} |")


if __name__ == "__main__":
    main()
