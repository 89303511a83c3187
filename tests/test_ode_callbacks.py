"""Step callbacks on ``func`` (``callback_step``/``_accept_``/``_reject_`` and their ``_adjoint`` variants): the
call sequences, arguments and warnings against the installed torchdiffeq 0.2.5."""

import warnings

import pytest
import torch

from neode_cli.ode import collect_stats, odeint, odeint_adjoint, odeint_checkpoint, odeint_event
from neode_cli.ode.callbacks import CALLBACK_NAMES, step_callbacks

torchdiffeq = pytest.importorskip("torchdiffeq")

DT = torch.float64


class Field(torch.nn.Module):
    """A small fixed network (tensor or tuple state) that records its step callbacks as (name, t0, dt, y0)."""

    def __init__(self, names=CALLBACK_NAMES, adjoint_names=()):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
        self.log = []
        for name in tuple(names) + tuple(adjoint_names):
            setattr(self, name, self._recorder(name))

    def _recorder(self, name):
        def record(t0, y0, dt):
            state = tuple(v.detach().clone() for v in y0) if isinstance(y0, tuple) else y0.detach().clone()
            self.log.append((name, t0.detach().clone(), dt.detach().clone(), state))
        return record

    def forward(self, t, y):
        if isinstance(y, tuple):
            return self.net(y[0]), y[1] * 0.5 + y[0].sum()
        return self.net(y)


def _trace(log, t_end=None, tol=1e-9, backward=False):
    """(name, t0, dt) with floats; with t_end: only the attempts that end before it (the last step differs:
    neode shortens it to land on the end, torchdiffeq steps past and interpolates); ``backward``: before 0."""
    out = []
    for name, t0, dt, _ in log:
        if t_end is not None and not backward and abs(float(t0)) + float(dt) >= abs(t_end) - tol:
            continue
        if backward and abs(float(t0)) - float(dt) <= tol:
            continue
        out.append((name, float(t0), float(dt)))
    return out


def _same_trace(a, b, rel=1e-7):
    assert [n for n, *_ in a] == [n for n, *_ in b]
    for (_, t0a, dta), (_, t0b, dtb) in zip(a, b):
        # (rounding of the error ratios differs: float64 host arithmetic vs tensors)
        assert t0a == pytest.approx(t0b, rel=rel, abs=1e-12) and dta == pytest.approx(dtb, rel=rel)


Y0 = torch.tensor([1.0, -0.5], dtype=DT)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("tuple_state", [False, True])
def test_adaptive_sequence_and_arguments_match_torchdiffeq(reverse, tuple_state):
    t = torch.tensor([0.0, 1.7], dtype=DT)
    t = -t if reverse else t
    y0 = (Y0, torch.tensor([0.3], dtype=DT)) if tuple_state else Y0
    ours, theirs = Field(), Field()
    with torch.no_grad(), collect_stats() as stats:
        # (a first step far too long: the first attempts are rejected)
        odeint(ours, y0, t, rtol=1e-7, atol=1e-9, method="bosh3", options=dict(first_step=0.5))
        torchdiffeq.odeint(theirs, y0, t, rtol=1e-7, atol=1e-9, method="bosh3", options=dict(first_step=0.5))
    _same_trace(_trace(ours.log, 1.7), _trace(theirs.log, 1.7))
    assert len(_trace(ours.log, 1.7)) > 20
    # every attempt: callback_step, then exactly one of accept/reject with the same arguments
    names = [n for n, *_ in ours.log]
    assert set(names[0::2]) == {"callback_step"} and len(names) == 2 * (stats.steps_accepted + stats.steps_rejected)
    assert names[1::2].count("callback_accept_step") == stats.steps_accepted
    assert names[1::2].count("callback_reject_step") == stats.steps_rejected > 0
    for (_, t0, dt, y), (_, t0b, dtb, yb) in zip(ours.log[0::2], ours.log[1::2]):
        assert torch.equal(t0, t0b) and torch.equal(dt, dtb)
    # the arguments: user time (negative when t decreases), positive dt, float64 0-dim, the state structure
    for (_, t0, dt, y), (_, t0_ref, dt_ref, y_ref) in zip(ours.log[:10], theirs.log[:10]):
        assert t0.dtype == dt.dtype == torch.float64 and t0.shape == dt.shape == ()
        assert t0.dtype == t0_ref.dtype and dt > 0 and (t0 <= 0 if reverse else t0 >= 0)
        if tuple_state:
            assert isinstance(y, tuple) and [v.shape for v in y] == [v.shape for v in y_ref]
            assert all(torch.allclose(a, b, rtol=1e-7, atol=1e-10) for a, b in zip(y, y_ref))
        else:
            assert y.shape == y_ref.shape and torch.allclose(y, y_ref, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("method", ["euler", "rk4", "explicit_adams", "implicit_adams"])
def test_fixed_grid_calls_callback_step_once_per_grid_step_as_torchdiffeq(method):
    t = torch.tensor([0.0, 0.35, 1.0], dtype=DT)
    ours, theirs = Field(names=("callback_step",)), Field(names=("callback_step",))
    with torch.no_grad():
        odeint(ours, Y0, t, method=method, options=dict(step_size=0.1))
        torchdiffeq.odeint(theirs, Y0, t, method=method, options=dict(step_size=0.1))
    _same_trace(_trace(ours.log), _trace(theirs.log))
    assert len(ours.log) == 10
    for (_, _, _, y), (_, _, _, y_ref) in zip(ours.log, theirs.log):
        assert torch.allclose(y, y_ref, rtol=1e-7, atol=1e-10)


def _warned(call):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if "callback" in str(w.message)]


@pytest.mark.parametrize("method,names", [
    ("euler", ("callback_accept_step",)), ("rk4", ("callback_reject_step",)), ("euler", ("callback_step",)),
    ("explicit_adams", ("callback_step", "callback_accept_step")), ("dopri5", CALLBACK_NAMES),
    ("scipy_solver", ("callback_step",)), ("scipy_solver", ("callback_accept_step",)),
])
def test_unsupported_callbacks_warn_as_torchdiffeq(method, names):
    t = torch.tensor([0.0, 1.0], dtype=DT)
    options = dict(step_size=0.25) if method in ("euler", "rk4", "explicit_adams") else None
    ours = _warned(lambda: odeint(Field(names), Y0, t, method=method, options=options))
    theirs = _warned(lambda: torchdiffeq.odeint(Field(names), Y0, t, method=method, options=options))
    assert bool(ours) == bool(theirs)
    if theirs:
        assert ours[0].startswith(f"Solver '{method}' does not support callbacks")
        assert all(name in ours[0] for name in names if name not in ("callback_step",) or method == "scipy_solver")


def test_no_callbacks_means_no_hook():
    time, state = (lambda s: s), (lambda y: y)
    for func in (lambda t, y: -y, torch.nn.Linear(2, 2), Field(names=())):
        assert step_callbacks(func, CALLBACK_NAMES, method="dopri5", adaptive=True, time=time, state=state,
                              t_dtype=DT, device=torch.device("cpu")) is None


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("tuple_state", [False, True])
def test_adjoint_callbacks_match_torchdiffeq(reverse, tuple_state):
    t = torch.tensor([0.0, 1.2], dtype=DT)
    t = -t if reverse else t
    adjoint_names = tuple(name + "_adjoint" for name in CALLBACK_NAMES)
    logs = []
    for impl in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        field = Field(names=(), adjoint_names=adjoint_names)
        y0 = Y0.clone().requires_grad_(True)
        state = (y0, torch.tensor([0.3], dtype=DT)) if tuple_state else y0
        # a forward fixed grid, so both backward solves start from the same y(t_1)
        out = impl(field, state, t, rtol=1e-7, atol=1e-9, method="euler", options=dict(step_size=0.1),
                   adjoint_method="bosh3", adjoint_options={})
        assert field.log == []  # the forward solve calls only the forward hooks
        (out[0] if tuple_state else out)[-1].square().sum().backward()
        logs.append(field.log)
    ours, theirs = logs
    # hooks receive the forward solver time (t, or -t when t decreases), from the last output back to the first
    _same_trace(_trace(ours, backward=True), _trace(theirs, backward=True))
    assert len(_trace(ours, backward=True)) > 10
    assert ours[0][1].item() == pytest.approx(1.2) and theirs[0][1].item() == pytest.approx(1.2)
    for (_, _, _, z), (_, _, _, z_ref) in zip(ours[:6], theirs[:6]):
        assert isinstance(z, tuple) and [v.shape for v in z] == [v.shape for v in z_ref]
        assert all(torch.allclose(a, b, rtol=1e-7, atol=1e-10) for a, b in zip(z, z_ref))
    accepted = [n for n, *_ in ours].count("callback_accept_step_adjoint")
    assert accepted == [n for n, *_ in theirs].count("callback_accept_step_adjoint")


def test_fixed_grid_adjoint_calls_callback_step_adjoint_per_backward_step():
    t = torch.tensor([0.0, 1.0], dtype=DT)
    counts = []
    for impl in (odeint_adjoint, torchdiffeq.odeint_adjoint):
        field = Field(names=("callback_step",), adjoint_names=("callback_step_adjoint",))
        out = impl(field, Y0.clone().requires_grad_(True), t, method="rk4", options=dict(step_size=0.1))
        out.sum().backward()
        counts.append([n for n, *_ in field.log])
    assert counts[0] == counts[1] == ["callback_step"] * 10 + ["callback_step_adjoint"] * 10


class Decay(Field):
    def forward(self, t, y):
        return -y


@pytest.mark.filterwarnings("ignore:Solver 'rk4' does not support callbacks")
def test_events_fixed_grid_calls_no_callbacks_adaptive_does_as_torchdiffeq():
    def event_fn(t, y):
        return y[0] - 0.5

    y0 = torch.tensor([1.0, 0.0], dtype=DT)
    for method, options in (("rk4", dict(step_size=0.05)), ("bosh3", None)):
        counts = []
        for impl in (odeint_event, torchdiffeq.odeint_event):
            field = Decay()
            with torch.no_grad():
                impl(field, y0, torch.tensor(0.0, dtype=DT), event_fn=event_fn, method=method, options=options)
            counts.append(len(field.log))
        assert (counts[0] == 0) == (counts[1] == 0) == (method == "rk4")


def test_checkpoint_calls_forward_callbacks():
    field = Field()
    t = torch.tensor([0.0, 1.0], dtype=DT)
    with collect_stats() as stats:
        odeint_checkpoint(field, Y0.clone().requires_grad_(True), t, method="dopri5").sum().backward()
    names = [n for n, *_ in field.log]
    assert names.count("callback_step") == stats.steps_accepted + stats.steps_rejected
    assert names.count("callback_accept_step") == stats.steps_accepted


def test_adaptive_adams_and_the_torchdiffeq_backend_call_them_too():
    t = torch.tensor([0.0, 1.0], dtype=DT)
    field = Field()
    with torch.no_grad(), collect_stats() as stats:
        odeint(field, Y0, t, method="adams", rtol=1e-6, atol=1e-8)
    names = [n for n, *_ in field.log]
    assert names.count("callback_step") == stats.steps_accepted + stats.steps_rejected > 0
    assert names.count("callback_accept_step") == stats.steps_accepted
    via_backend, reference = Field(), Field()
    with torch.no_grad():
        odeint(via_backend, Y0, t, method="bosh3", backend="torchdiffeq")
        torchdiffeq.odeint(reference, Y0, t, method="bosh3")
    _same_trace(_trace(via_backend.log), _trace(reference.log))
