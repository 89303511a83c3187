"""Run torchdiffeq's own test suite against neode (the outside check of "torchdiffeq-compatible").

Given a checkout of torchdiffeq (https://github.com/rtqichen/torchdiffeq; version 0.2.5 is commit a88aac5), this
script builds, in a temporary folder, a package named ``torchdiffeq`` that only re-exports the public names of
``neode_cli.ode`` that torchdiffeq's ``__init__`` also exports (odeint, odeint_adjoint, odeint_event, ...;
a name neode lacks is simply absent, and no ``_impl`` internals exist), puts it first on ``sys.path`` of a
child process and runs the checkout's ``tests/`` folder, unmodified, with unittest. ``--reference`` runs the
same tests against the checkout's own ``torchdiffeq`` package instead (the suite's pass rate on this machine:
the ceiling).

Counting: every execution of a ``self.subTest(...)`` block is one unit; a test method that runs no subtest is
one unit (its own outcome); a method that also asserts or calls torchdiffeq outside its subtests has one more
unit "(outside subtests)" (as has any method whose body fails outside its subtests); a method that times out or
crashes its process adds one errored unit (its subtests that ran are kept). Each test method runs in its own
process (one torch thread) under ``--timeout`` seconds, so a slow or hanging method costs only itself.

Usage:
  python scripts/torchdiffeq_suite.py --torchdiffeq PATH [--reference] [--json OUT] [--timeout S]
                                      [--only FILE[::Class[.method]]] ... [--failures] [--fail-under PERCENT]

Output: passed / failed / errored per test file and method, the reason groups of the units that did not pass,
and the overall percentage. ``--json OUT`` writes every unit (parameters, outcome, message, reason).
Needs no network: the checkout is a path on disk.
"""

from __future__ import annotations

import argparse
import ast
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Source patterns that reach into torchdiffeq's implementation rather than its public names.
INTERNAL_PATTERNS = {
    "torchdiffeq._impl": r"torchdiffeq\._impl",
    "grad_fn.adjoint_options": r"grad_fn\b.*\badjoint_options\b",
    "grad_fn.next_functions": r"\.next_functions\b",
}


# --- discovery (static: no import of the tests before the child runs them) ------------------------------------
def torchdiffeq_exports(checkout: Path) -> list[str]:
    """The public names the checkout's ``torchdiffeq/__init__.py`` defines (imports and assignments)."""
    tree = ast.parse((checkout / "torchdiffeq" / "__init__.py").read_text())
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            names += [a.asname or a.name for a in node.names]
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return [n for n in dict.fromkeys(names) if n != "*"]


def discover(tests_dir: Path) -> list[dict]:
    """Every ``unittest.TestCase`` method defined in ``tests_dir/*.py``, with the internals its source reads."""
    found = []
    for path in sorted(tests_dir.glob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {ast.unparse(b) for b in node.bases}
            if not bases & {"unittest.TestCase", "TestCase"}:
                continue
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name.startswith("test"):
                    segment = ast.get_source_segment(source, item) or ""
                    internals = [name for name, pat in INTERNAL_PATTERNS.items() if re.search(pat, segment)]
                    found.append(dict(file=path.name, cls=node.name, method=item.name, reads_internals=internals,
                                      checks_outside_subtests=_checks_outside_subtests(item)))
    return found


def _checks_outside_subtests(method: ast.FunctionDef) -> bool:
    """Whether the method asserts or calls torchdiffeq outside every ``with self.subTest(...)`` block.

    Such a method gets one unit "(outside subtests)" besides its subtests, passing or not, so that the count
    is the same whichever package runs the tests.
    """
    def is_subtest(node: ast.AST) -> bool:
        return isinstance(node, ast.With) and any(
            isinstance(i.context_expr, ast.Call) and ast.unparse(i.context_expr.func) == "self.subTest"
            for i in node.items)

    def checks(node: ast.AST) -> bool:
        if is_subtest(node):
            return False
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name.startswith("self.assert") or name.startswith("torchdiffeq."):
                return True
        return any(checks(child) for child in ast.iter_child_nodes(node))

    return any(checks(stmt) for stmt in method.body)


def selected(test: dict, only: list[str]) -> bool:
    if not only:
        return True
    ident = f"{test['file']}::{test['cls']}.{test['method']}"
    return any(ident == o or ident.startswith(o + "::") or ident.startswith(o + ".") for o in only)


# --- the shim -----------------------------------------------------------------------------------------------
SHIM_TEMPLATE = '''\
"""A stand-in for torchdiffeq: only neode's public names (neode_cli.ode) under torchdiffeq's public names.

Generated by neode's scripts/torchdiffeq_suite.py. No torchdiffeq internals: a test reading them fails.
"""
import neode_cli.ode as _neode

_EXPORTS = EXPORTS_LIST
__all__ = [name for name in _EXPORTS if hasattr(_neode, name)]
globals().update({name: getattr(_neode, name) for name in __all__})
del _neode, _EXPORTS
'''


def write_shim(folder: Path, exports: list[str]) -> Path:
    """Create ``folder/torchdiffeq/__init__.py`` re-exporting neode's names; returns ``folder``."""
    package = folder / "torchdiffeq"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(SHIM_TEMPLATE.replace("EXPORTS_LIST", repr(list(exports))))
    return folder


# --- the child: run one test method, stream one JSON line per outcome -----------------------------------------
def _describe(exc_info) -> dict:
    etype, value, tb = exc_info
    message = str(value).strip()
    frames = traceback.extract_tb(tb)
    test_frames = [f for f in frames if "/tests/" in f.filename.replace(os.sep, "/")]
    where = test_frames[-1] if test_frames else (frames[-1] if frames else None)
    return dict(exc=etype.__name__, message=message[:2000],
                where=f"{Path(where.filename).name}:{where.lineno}" if where else "",
                traceback="".join(traceback.format_exception(etype, value, tb))[-6000:])


def child_main(tests_dir: str, file: str, cls: str, method: str, out_path: str, prefix: str) -> int:
    """Import the test file with ``prefix`` first on sys.path and run ``cls.method``, one torch thread."""
    import unittest

    import torch

    torch.set_num_threads(1)
    sys.path[:0] = [prefix, tests_dir]
    os.chdir(tests_dir)
    out = open(out_path, "a", buffering=1)

    def emit(**event):
        out.write(json.dumps(event, default=str) + "\n")

    class StreamingResult(unittest.TestResult):
        def __init__(self):
            super().__init__()
            self.t_last = time.perf_counter()

        def _elapsed(self):
            now = time.perf_counter()
            dt, self.t_last = now - self.t_last, now
            return round(dt, 3)

        def addSubTest(self, test, subtest, err):
            params = {k: str(v) for k, v in subtest.params.items()}
            if err is None:
                emit(kind="subtest", params=params, outcome="passed", seconds=self._elapsed())
            else:
                failed = issubclass(err[0], test.failureException)
                emit(kind="subtest", params=params, outcome="failed" if failed else "errored",
                     seconds=self._elapsed(), **_describe(err))
            super().addSubTest(test, subtest, err)

        def addSuccess(self, test):
            emit(kind="method", outcome="passed", seconds=self._elapsed())

        def addFailure(self, test, err):
            emit(kind="method", outcome="failed", seconds=self._elapsed(), **_describe(err))

        def addError(self, test, err):
            emit(kind="method", outcome="errored", seconds=self._elapsed(), **_describe(err))

        def addSkip(self, test, reason):
            emit(kind="method", outcome="skipped", seconds=self._elapsed(), message=reason)

        def addExpectedFailure(self, test, err):
            emit(kind="method", outcome="passed", seconds=self._elapsed(), message="expected failure")

        def addUnexpectedSuccess(self, test):
            emit(kind="method", outcome="failed", seconds=self._elapsed(), message="unexpected success")

    try:
        import torchdiffeq
        emit(kind="import", torchdiffeq=getattr(torchdiffeq, "__file__", "?"),
             names=sorted(n for n in dir(torchdiffeq) if not n.startswith("__")))
        module = __import__(Path(file).stem)
        case = getattr(module, cls)(method)
    except Exception:
        emit(kind="method", outcome="errored", seconds=0.0, **_describe(sys.exc_info()))
        return 0
    case.run(StreamingResult())
    emit(kind="end")  # unittest reports nothing for a method whose subtests failed; this marks completion
    return 0


# --- reasons: one short label per unit that did not pass -------------------------------------------------------
def reason_of(unit: dict) -> str:
    """Group a failure by what it needs (a heuristic on the message; the gap analysis reads the details)."""
    if unit["outcome"] == "passed":
        return ""
    msg = unit.get("message", "")
    exc = unit.get("exc", "")
    if unit.get("timeout"):
        return "timeout"
    m = re.search(r"unexpected keyword argument '(\w+)'", msg)
    if m:
        return f"keyword argument {m.group(1)}"
    m = re.search(r"unknown (?:ODE )?method '?(\w+)'?|Invalid method \"(\w+)\"", msg)
    if m:
        return f"method {m.group(1) or m.group(2)}"
    m = re.search(r"unknown option\(s\) ((?:'\w+'(?:, )?)+)", msg)
    if m:
        return "option " + "+".join(re.findall(r"'(\w+)'", m.group(1)))
    if "adjoint_options" in msg or "next_functions" in msg:
        return "reads torchdiffeq internals (grad_fn.adjoint_options)"
    m = re.search(r"has no attribute '(\w+)'", msg)
    if m and exc == "AttributeError" and "module 'torchdiffeq'" in msg:
        return f"torchdiffeq.{m.group(1)} missing"
    m = re.search(r"Jacobian mismatch for output (\d+) with respect to input (\d+)", msg)
    if m:
        return f"gradcheck: wrong gradient w.r.t. input {m.group(2)}"
    if "does not require grad" in msg or "One of the differentiated Tensors" in msg:
        return "gradient missing (no graph to an input)"
    if "warning not triggered" in msg.lower():
        return "expected warning not raised"
    first = msg.splitlines()[0] if msg else exc
    first = re.sub(r"tensor\([^)]*\)", "tensor(...)", first)
    first = re.sub(r"[-+]?\d+\.\d+(e[-+]?\d+)?", "N", first)
    return f"{exc} at {unit.get('where', '?')}: {first[:100]}"


# --- the parent ---------------------------------------------------------------------------------------------
def run_method(test: dict, tests_dir: Path, prefix: Path, timeout: float, workdir: Path) -> tuple[list[dict], dict]:
    """Run one test method in a child process; returns its units and what the child imported."""
    out_path = workdir / f"{test['file']}.{test['cls']}.{test['method']}.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(
                   os.pathsep) if p]))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(tests_dir), test["file"], test["cls"],
           test["method"], str(out_path), str(prefix)]
    start = time.perf_counter()
    timed_out, rc, stderr = False, None, ""
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, stderr = proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as e:
        timed_out = True
        stderr = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
    seconds = time.perf_counter() - start
    events = [json.loads(line) for line in out_path.read_text().splitlines()] if out_path.exists() else []
    imported = next((e for e in events if e["kind"] == "import"), {})
    units = []
    for e in events:
        if e["kind"] == "subtest":
            units.append(dict(e, name=", ".join(f"{k}={v}" for k, v in e["params"].items())))
    verdicts = [e for e in events if e["kind"] == "method"]  # the method's own outcome, when unittest gives one
    finished = bool(verdicts) or any(e["kind"] == "end" for e in events)
    if finished:
        # unittest gives a method whose subtests failed no verdict of its own: then its body did not fail.
        verdict = verdicts[-1] if verdicts else dict(outcome="passed")
        if not units:
            units.append(dict(verdict, name="(no subtests)"))
        elif test["checks_outside_subtests"] or verdict["outcome"] != "passed":
            units.append(dict(verdict, name="(outside subtests)"))
    else:
        why = f"timed out after {timeout:.0f} s" if timed_out else f"child exited {rc} without a result"
        units.append(dict(kind="incomplete", name="(incomplete)", outcome="errored", exc="Timeout" if timed_out
                          else "Crash", message=why + ("\n" + stderr[-2000:] if stderr else ""), timeout=timed_out))
    for u in units:
        u.pop("kind", None)
        u["reason"] = reason_of(u)
    test["seconds"] = round(seconds, 1)
    return units, imported


def summarise(results: list[dict], show_failures: bool) -> dict:
    """Print the per-file / per-method table and the reason groups; return the totals."""
    totals = collections.Counter()
    by_file: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    reasons: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    print(f"{'test':70s} {'pass':>5s} {'fail':>5s} {'err':>5s} {'total':>5s} {'sec':>7s}")
    for test in results:
        c = collections.Counter(u["outcome"] for u in test["units"])
        c["total"] = len(test["units"])
        for k, v in c.items():
            totals[k] += v
            by_file[test["file"]][k] += v
        flag = "  [reads internals: " + ", ".join(test["reads_internals"]) + "]" if test["reads_internals"] else ""
        ident = f"{test['file']}::{test['cls']}.{test['method']}"
        print(f"{ident:70s} {c['passed']:5d} {c['failed']:5d} {c['errored']:5d} {c['total']:5d} "
              f"{test['seconds']:7.1f}{flag}")
        for u in test["units"]:
            if u["outcome"] != "passed":
                reasons[u["reason"]][ident] += 1
                if show_failures:
                    print(f"    {u['outcome']:7s} [{u['name']}] {u['reason']}")
    print()
    for file, c in by_file.items():
        print(f"{file:30s} passed {c['passed']:4d} / {c['total']:4d}   failed {c['failed']:4d}   errored "
              f"{c['errored']:4d}")
    if reasons:
        print("\nunits that did not pass, by reason:")
        for reason, per_test in sorted(reasons.items(), key=lambda kv: -sum(kv[1].values())):
            print(f"  {sum(per_test.values()):4d}  {reason}")
            for ident, n in per_test.most_common():
                print(f"          {n:4d}  {ident}")
    pct = 100.0 * totals["passed"] / totals["total"] if totals["total"] else 0.0
    print(f"\nTOTAL passed {totals['passed']} / {totals['total']} units = {pct:.1f}%   (failed {totals['failed']}, "
          f"errored {totals['errored']}, skipped {totals['skipped']})")
    return dict(passed=totals["passed"], failed=totals["failed"], errored=totals["errored"],
                skipped=totals["skipped"], total=totals["total"], percent=round(pct, 2))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child_main(*argv[1:7])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torchdiffeq", required=True, type=Path, help="a torchdiffeq checkout (tests/ is used)")
    parser.add_argument("--reference", action="store_true", help="run against the checkout's own torchdiffeq")
    parser.add_argument("--json", type=Path, help="write every unit's details here")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per test method (default 1800)")
    parser.add_argument("--only", action="append", default=[],
                        help="FILE, FILE::Class or FILE::Class.method (repeatable)")
    parser.add_argument("--failures", action="store_true", help="list every unit that did not pass")
    parser.add_argument("--fail-under", type=float, metavar="PERCENT",
                        help="exit with status 1 when fewer than PERCENT %% of the units pass")
    args = parser.parse_args(argv)

    checkout = args.torchdiffeq.resolve()
    tests_dir = checkout / "tests"
    if not (checkout / "torchdiffeq" / "__init__.py").is_file() or not tests_dir.is_dir():
        print(f"error: {checkout} is not a torchdiffeq checkout (needs torchdiffeq/__init__.py and tests/)",
              file=sys.stderr)
        return 2
    exports = torchdiffeq_exports(checkout)
    tests = [t for t in discover(tests_dir) if selected(t, args.only)]
    if not tests:
        print("error: no test methods selected", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="torchdiffeq_suite_") as tmp:
        tmp = Path(tmp)
        prefix = checkout if args.reference else write_shim(tmp / "shim", exports)
        target = "the checkout's torchdiffeq (reference)" if args.reference else "neode through a names-only shim"
        print(f"torchdiffeq tests from {tests_dir}\nagainst {target}; exports {', '.join(exports)}\n")
        imported = {}
        for test in tests:
            print(f"running {test['file']}::{test['cls']}.{test['method']} ...", file=sys.stderr, flush=True)
            test["units"], got = run_method(test, tests_dir, prefix, args.timeout, tmp)
            imported = imported or got
        if imported:
            print(f"torchdiffeq imported from {imported.get('torchdiffeq')}; "
                  f"names: {', '.join(n for n in imported.get('names', []) if not n.startswith('_'))}\n")
        totals = summarise(tests, args.failures)

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(
            target="reference" if args.reference else "neode", checkout=str(checkout), exports=exports,
            imported=imported, totals=totals, tests=tests, counting=textwrap.dedent("""\
                one unit per executed self.subTest block; a method without subtests is one unit; a method that
                asserts or calls torchdiffeq outside its subtests has one unit more for that part; a timeout or
                crash adds one errored unit""")), indent=1))
        print(f"details written to {args.json}")
    if args.fail_under is not None and totals["percent"] < args.fail_under:
        print(f"error: {totals['percent']:.1f}% of the units pass, under the required {args.fail_under:g}%",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
