"""Benchmark the solver core against torchdiffeq (and torchode when installed): forward + backward time.

Cases (issue 2):
  1. mlp:    MLP vector field 2 -> 64 -> 64 -> 2 (tanh, time concatenated), batch 512, dopri5, rtol=atol=1e-5
  2. conv:   ODE-Net block (GroupNorm-ReLU-ConcatConv 3x3, twice, 64 channels, 6x6 maps), batch 128,
             dopri5, rtol=atol=1e-3
  3. latent: latent-ODE-sized field 4 -> 20 -> 4 (ELU), batch 1000, 100 output times, dopri5, rtol=atol=1e-5
each with backprop and adjoint gradients. Implementations are interleaved (one repetition of each in turn)
so load changes on a shared machine hit all of them alike; the table shows medians of CPU time (process
time: with one intra-op thread it equals the wall time of an idle machine and is far less sensitive to other
processes than the wall clock, whose median is shown too), the ratio to torchdiffeq (>1 means neode is
faster), forward/backward NFE per iteration and the bytes autograd saves during the forward pass
(saved_tensors_hooks). The "floor" row is the same field evaluated NFE-forward times in an Euler chain and
differentiated: the cost of the function evaluations alone, which no solver at that NFE can beat.

torchode solves each batch element with its own step size, so its NFE is per element and not comparable
one-to-one; it runs with backprop only (its BacksolveAdjoint needs functorch-friendly fields).

Usage: python scripts/bench_solvers.py [--quick] [--reps N] [--cases mlp,conv,latent] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from neode_cli.ode import collect_stats, odeint, odeint_adjoint  # noqa: E402


# --- vector fields ------------------------------------------------------------------------------------------
class MLPField(nn.Module):
    """Case 1: 2 -> 64 -> 64 -> 2, tanh, time concatenated to the input. y: (batch, 2)."""

    def __init__(self):
        super().__init__()
        self.l1, self.l2, self.l3 = nn.Linear(3, 64), nn.Linear(64, 64), nn.Linear(64, 2)

    def forward(self, t, y):
        t_col = t.to(y.dtype).expand(y.shape[0], 1) if t.dim() == 0 else t.to(y.dtype).reshape(-1, 1)
        h = torch.tanh(self.l1(torch.cat([y, t_col], dim=1)))
        return self.l3(torch.tanh(self.l2(h)))


class ConcatConv(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Conv2d(channels + 1, channels, 3, padding=1)

    def forward(self, t, x):
        t_map = t.to(x.dtype).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        return self.conv(torch.cat([t_map, x], dim=1))


class ConvField(nn.Module):
    """Case 2: the ODE-Net block of Chen et al. (2018): norm-relu-conv, norm-relu-conv, norm. y: (B, 64, 6, 6)."""

    def __init__(self, channels=64):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.GroupNorm(32, channels) for _ in range(3))
        self.conv1, self.conv2 = ConcatConv(channels), ConcatConv(channels)

    def forward(self, t, x):
        if x.dim() == 2:  # torchode passes (batch, features)
            return self.forward(t, x.view(x.shape[0], 64, 6, 6)).flatten(1)
        out = self.conv1(t, torch.relu(self.norm1(x)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class LatentField(nn.Module):
    """Case 3: latent-ODE-sized dynamics 4 -> 20 -> 4 (ELU). y: (batch, 4)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 20), nn.ELU(), nn.Linear(20, 4))

    def forward(self, t, y):
        return self.net(y)


def make_case(name: str):
    """(field, y0, t, rtol, atol) for a case; seeded so every implementation sees the same problem."""
    torch.manual_seed(0)
    if name == "mlp":
        return MLPField(), torch.randn(512, 2), torch.tensor([0.0, 1.0]), 1e-5, 1e-5
    if name == "conv":
        return ConvField(), torch.randn(128, 64, 6, 6), torch.tensor([0.0, 1.0]), 1e-3, 1e-3
    if name == "latent":
        return LatentField(), torch.randn(1000, 4), torch.linspace(0.0, 5.0, 100), 1e-5, 1e-5
    raise ValueError(f"unknown case {name!r}; valid: mlp, conv, latent")


# --- implementations ----------------------------------------------------------------------------------------
class Clock:
    """CPU (process) time and wall time together."""

    def __init__(self):
        self.marks = [(time.process_time(), time.perf_counter())]

    def mark(self):
        self.marks.append((time.process_time(), time.perf_counter()))

    def spans(self):
        (c0, w0), (c1, w1), (c2, w2) = self.marks
        return c1 - c0, c2 - c1, (w2 - w0)


def run_neode(field, y0, t, rtol, atol, grad, backend="neode"):
    """One forward + backward; returns (forward cpu s, backward cpu s, wall s, nfe_f, nfe_b, saved bytes)."""
    saved = 0

    def pack(tensor):
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    y0 = y0.clone().requires_grad_(True)
    with collect_stats() as stats:
        clock = Clock()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            if grad == "backprop":
                ys = odeint(field, y0, t, rtol=rtol, atol=atol, method="dopri5", backend=backend)
            else:
                ys = odeint_adjoint(field, y0, t, rtol=rtol, atol=atol, method="dopri5", backend=backend,
                                    adjoint_params=tuple(field.parameters()))
            loss = ys[1:].square().mean()
        clock.mark()
        loss.backward()
        clock.mark()
    return (*clock.spans(), stats.nfe_forward, stats.nfe_backward, saved)


def run_floor(field, y0, t, rtol, atol, grad, nfe=None):
    """The function evaluations alone: ``nfe`` evaluations in a differentiated Euler chain (backprop)."""
    if grad != "backprop" or nfe is None:
        return None
    saved = 0

    def pack(tensor):
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    y = y0.clone().requires_grad_(True)
    clock = Clock()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        z = y
        for i in range(nfe):
            z = z + 0.01 * field(torch.full((), i / nfe), z)
        # a loss over as many outputs as the solvers return
        loss = z.expand(len(t) - 1, *z.shape).square().mean()
    clock.mark()
    loss.backward()
    clock.mark()
    return (*clock.spans(), nfe, nfe, saved)


def run_torchode(field, y0, t, rtol, atol, grad):
    import torchode as to

    if grad != "backprop":
        return None
    saved = 0
    calls = 0

    def pack(tensor):
        nonlocal saved
        saved += tensor.numel() * tensor.element_size()
        return tensor

    def f(tt, y):
        nonlocal calls
        calls += 1
        return field(tt, y)

    batch = y0.shape[0]
    y = y0.reshape(batch, -1).clone().requires_grad_(True)
    term = to.ODETerm(f)
    solver = to.AutoDiffAdjoint(to.Dopri5(term=term), to.IntegralController(atol=atol, rtol=rtol, term=term))
    clock = Clock()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        sol = solver.solve(to.InitialValueProblem(y0=y, t_eval=t.expand(batch, -1)))
        loss = sol.ys[:, 1:].square().mean()
    clock.mark()
    forward_calls = calls
    loss.backward()
    clock.mark()
    return (*clock.spans(), forward_calls, 0, saved)


IMPLEMENTATIONS = {
    "neode": lambda *a: run_neode(*a, backend="neode"),
    "torchdiffeq": lambda *a: run_neode(*a, backend="torchdiffeq"),
    "torchode": run_torchode,
}


def bench(case: str, grad: str, impls: list[str], reps: int):
    field, y0, t, rtol, atol = make_case(case)
    rows = {impl: [] for impl in impls}
    floor_nfe = None
    for rep in range(reps + 1):  # the first round warms up and is discarded
        for impl in impls:
            if impl == "floor":
                result = run_floor(field, y0, t, rtol, atol, grad, floor_nfe)
            else:
                result = IMPLEMENTATIONS[impl](field, y0, t, rtol, atol, grad)
            if impl == "neode" and result is not None:
                floor_nfe = result[3]
            if result is None:
                rows.pop(impl, None)
                continue
            if rep:
                rows[impl].append(result)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions, for a smoke run")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per cell (default 7, quick 2)")
    parser.add_argument("--cases", default="mlp,conv,latent")
    parser.add_argument("--grads", default="backprop,adjoint")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reps = args.reps or (2 if args.quick else 7)
    impls = ["neode", "torchdiffeq", "floor"]
    try:
        import torchode  # noqa: F401
        impls.append("torchode")
    except ImportError:
        pass

    print(f"torch {torch.__version__}, {args.threads} thread(s), {reps} interleaved repetitions, medians")
    header = (f"{'case':7} {'grad':9} {'impl':12} {'fwd ms':>9} {'bwd ms':>9} {'total ms':>9} {'wall ms':>9} "
              f"{'speedup':>8} {'NFE f':>6} {'NFE b':>6} {'saved MB':>9}")
    print(header)
    print("-" * len(header))
    for case in args.cases.split(","):
        for grad in args.grads.split(","):
            rows = bench(case, grad, impls, reps)
            rows = {impl: res for impl, res in rows.items() if res}
            totals = {impl: statistics.median(f + b for f, b, *_ in res) for impl, res in rows.items()}
            for impl, res in rows.items():
                fwd = statistics.median(r[0] for r in res) * 1e3
                bwd = statistics.median(r[1] for r in res) * 1e3
                wall = statistics.median(r[2] for r in res) * 1e3
                speedup = totals["torchdiffeq"] / totals[impl] if "torchdiffeq" in totals else float("nan")
                nfe_f, nfe_b, saved = res[-1][3], res[-1][4], res[-1][5]
                print(f"{case:7} {grad:9} {impl:12} {fwd:9.1f} {bwd:9.1f} {totals[impl] * 1e3:9.1f} {wall:9.1f} "
                      f"{speedup:7.2f}x {nfe_f:6d} {nfe_b:6d} {saved / 2**20:9.2f}", flush=True)
    print("fwd/bwd/total: median CPU ms; wall: median wall ms; speedup = torchdiffeq total / this total; NFE per "
          "iteration (torchode: counted calls, its elements step independently); saved MB = bytes autograd saved "
          "in the forward pass; floor = the NFE evaluations alone (Euler chain, backprop)")


if __name__ == "__main__":
    main()
