"""The outside-check harness (scripts/torchdiffeq_suite.py) on a tiny fake torchdiffeq checkout.

Checks what the harness promises: the shim re-exports only neode's names that the checkout's __init__ exports,
internals are absent, every subTest block is one unit, a method without subtests is one, checks outside
subtests are one more, a hanging method costs one errored unit, and --reference uses the checkout's package.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "torchdiffeq_suite.py"

FAKE_INIT = """\
from ._impl import odeint
from ._impl import odeint_adjoint
from ._impl import odeint_not_in_neode
__version__ = "0.0.0"
"""

FAKE_IMPL = """\
def odeint(*args, **kwargs):
    return "reference"
odeint_adjoint = odeint
odeint_not_in_neode = odeint
"""

FAKE_TESTS = '''\
import time
import unittest

import torchdiffeq


class TestFake(unittest.TestCase):
    def test_subtests(self):
        for i in range(3):
            with self.subTest(i=i):
                self.assertLess(i, 2)
        self.assertTrue(callable(torchdiffeq.odeint))

    def test_names(self):
        self.assertTrue(callable(torchdiffeq.odeint_not_in_neode))

    def test_internals(self):
        import torchdiffeq._impl  # noqa: F401

    def test_hangs(self):
        time.sleep(600)
'''


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "torchdiffeq-fake"
    (root / "torchdiffeq").mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "torchdiffeq" / "__init__.py").write_text(FAKE_INIT)
    (root / "torchdiffeq" / "_impl.py").write_text(FAKE_IMPL)
    (root / "tests" / "fake_tests.py").write_text(FAKE_TESTS)
    (root / "tests" / "helpers.py").write_text("X = 1\n")  # no TestCase: not a test file
    return root


# Each unit runs in a fresh interpreter that imports torch: on a loaded 2-core machine that alone can take
# tens of seconds, so the per-unit limit is generous except in the one test that wants a timeout.
NOT_HANGING = [arg for name in ("test_subtests", "test_names", "test_internals")
               for arg in ("--only", f"fake_tests.py::TestFake.{name}")]


def run_suite(checkout: Path, out: Path, *extra: str, timeout: float = 240) -> dict:
    proc = subprocess.run([sys.executable, str(SCRIPT), "--torchdiffeq", str(checkout), "--json", str(out),
                           "--timeout", str(timeout), *extra], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "TOTAL passed" in proc.stdout
    return json.loads(out.read_text())


def by_method(report: dict) -> dict[str, list[dict]]:
    return {t["method"]: t["units"] for t in report["tests"]}


def test_shim_counts_subtests_and_hides_internals(checkout: Path, tmp_path: Path):
    report = run_suite(checkout, tmp_path / "neode.json", *NOT_HANGING)
    assert report["target"] == "neode"
    assert "shim" in report["imported"]["torchdiffeq"]
    # Only names torchdiffeq exports and neode has; no __version__, no _impl.
    assert report["imported"]["names"] == ["odeint", "odeint_adjoint"]

    units = by_method(report)
    assert [u["outcome"] for u in units["test_subtests"]] == ["passed", "passed", "failed", "passed"]
    assert units["test_subtests"][-1]["name"] == "(outside subtests)"
    assert [u["outcome"] for u in units["test_names"]] == ["errored"]
    assert "odeint_not_in_neode" in units["test_names"][0]["message"]
    assert [u["outcome"] for u in units["test_internals"]] == ["errored"]
    tests = {t["method"]: t for t in report["tests"]}
    assert tests["test_internals"]["reads_internals"] == ["torchdiffeq._impl"]
    assert report["totals"] == dict(passed=3, failed=1, errored=2, skipped=0, total=6, percent=50.0)


def test_a_hanging_method_costs_only_itself(checkout: Path, tmp_path: Path):
    report = run_suite(checkout, tmp_path / "hang.json", "--only", "fake_tests.py::TestFake.test_hangs", timeout=2)
    units = by_method(report)
    assert [(u["outcome"], u["reason"]) for u in units["test_hangs"]] == [("errored", "timeout")]
    assert "timed out after 2 s" in units["test_hangs"][0]["message"]


def test_reference_uses_the_checkouts_package(checkout: Path, tmp_path: Path):
    report = run_suite(checkout, tmp_path / "ref.json", "--reference", "--only", "fake_tests.py::TestFake.test_names",
                       "--only", "fake_tests.py::TestFake.test_internals")
    assert report["imported"]["torchdiffeq"] == str(checkout / "torchdiffeq" / "__init__.py")
    assert [t["method"] for t in report["tests"]] == ["test_names", "test_internals"]
    assert report["totals"]["passed"] == 2 and report["totals"]["total"] == 2


def test_fail_under(checkout: Path, tmp_path: Path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--torchdiffeq", str(checkout), "--fail-under", "90",
                           "--only", "fake_tests.py::TestFake.test_names"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert "0.0% of the units pass, under the required 90%" in proc.stderr


def test_not_a_checkout(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--torchdiffeq", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert "is not a torchdiffeq checkout" in proc.stderr
    assert "Traceback" not in proc.stderr
