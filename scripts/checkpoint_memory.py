"""Saved memory of backprop, adjoint and checkpoint gradients at a growing number of solver steps.

Peak bytes autograd holds over one forward + backward pass (neode_cli.measure.SavedTensorMeter, the CPU meter
``neode train`` records as peak_memory_mb), parameters excluded. Field: a 2-64-64-2 tanh MLP with time input on
a batch of 256 states (float32), rk4 on [0, 1] at step sizes giving 10 ... 320 steps. Prints a Markdown table.

    python scripts/checkpoint_memory.py
"""

from __future__ import annotations

import torch

from neode_cli.measure import SavedTensorMeter
from neode_cli.ode import collect_stats, odeint, odeint_adjoint, odeint_checkpoint


class MLPField(torch.nn.Module):
    def __init__(self, dim: int = 2, hidden: int = 64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim + 1, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, dim))

    def forward(self, t, y):
        return self.net(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))


def peak(solve, field, y0, t, step):
    meter = SavedTensorMeter()
    with meter.track():
        with collect_stats() as stats:
            ys = solve(field, y0, t, method="rk4", options=dict(step_size=step))
        ys[-1].square().sum().backward()
        backward_nfe = stats.nfe_backward
    return meter.peak, stats.steps_accepted, backward_nfe


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    field = MLPField()
    y0 = torch.randn(256, 2)
    t = torch.tensor([0.0, 1.0])
    state_kb = y0.numel() * y0.element_size() / 1024
    print(f"state: {tuple(y0.shape)} float32 = {state_kb:.0f} KiB\n")
    print("| steps | backprop MiB | adjoint MiB | checkpoint MiB | checkpoint - steps x state MiB | NFE bwd bp / adj / ckpt |")
    print("|---|---|---|---|---|---|")
    for steps in (10, 20, 40, 80, 160, 320):
        results = {name: peak(solve, field, y0, t, 1.0 / steps)
                   for name, solve in (("bp", odeint), ("adj", odeint_adjoint), ("ck", odeint_checkpoint))}
        mib = {k: v[0] / 2**20 for k, v in results.items()}
        extra = mib["ck"] - results["ck"][1] * state_kb / 1024
        print(f"| {results['ck'][1]} | {mib['bp']:.2f} | {mib['adj']:.3f} | {mib['ck']:.3f} | {extra:.3f} | "
              f"{results['bp'][2]} / {results['adj'][2]} / {results['ck'][2]} |")


if __name__ == "__main__":
    main()
