"""The HTML report as a browser shows it: scripts/check_report_html.py renders it in headless Chromium (skipped where
no Chromium is installed; `apt-get install chromium` on Debian)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_report import write_fig3_sweep, write_table1_sweep

from neode_cli.report.compare import CompareOptions, run

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "check_report_html.py"
sys.path.insert(0, str(SCRIPT.parent))
from check_report_html import find_browser  # noqa: E402

pytestmark = pytest.mark.skipif(find_browser() is None, reason="no Chromium on PATH")


def check(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, env=env)


def test_a_report_renders_with_every_image_and_section(tmp_path):
    write_table1_sweep(tmp_path / "outputs")
    write_fig3_sweep(tmp_path / "outputs")
    _, out, _ = run(CompareOptions(runs=(str(tmp_path / "outputs"),), out=str(tmp_path / "report")))
    page = out / "report.html"
    done = check(str(page), "--screenshot", str(tmp_path / "shot.png"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok (4 images loaded, 5 sections with content)" in done.stdout
    assert (tmp_path / "shot.png").read_bytes()[:4] == b"\x89PNG"

    broken = tmp_path / "broken.html"
    html = page.read_text()
    start = html.index('<section id="problems"><h2>Problems with run records</h2>')
    html = html[:start] + '<section id="problems"><h2>Problems with run records</h2>' + html[html.index("</section>", start):]
    broken.write_text(html.replace("data:image/png;base64,iVBOR", "data:image/png;base64,AAAA", 1))
    done = check(str(broken))
    assert done.returncode == 1
    assert "image does not load: Figure 3a: numerical error and forward NFE vs tolerance" in done.stdout
    assert "empty section: Problems with run records" in done.stdout
    assert done.stdout.count("image does not load") == 1


def test_missing_page_is_exit_2(tmp_path):
    done = check(str(tmp_path / "nothing.html"))
    assert done.returncode == 2 and "no file" in done.stderr
