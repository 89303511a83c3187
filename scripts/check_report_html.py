#!/usr/bin/env python3
"""Render `neode compare`'s report.html in headless Chromium and fail on a broken image or an empty section.

    python3 scripts/check_report_html.py outputs/reports/table1-cpu/report.html [more.html ...]
    python3 scripts/check_report_html.py --example          # builds a small report from generated records first
    python3 scripts/check_report_html.py REPORT --screenshot shot.png

How: a copy of the page gets a short script that runs after the load event and writes what it found into the DOM;
Chromium prints the DOM (`--dump-dom`) and this script reads the verdict back. No DevTools client, no Python
dependency beyond the standard library (and neode itself for --example). The page is checked as a browser shows it:

- every <img> has loaded (`complete` and `naturalWidth > 0`) and is drawn with a non-zero size;
- every <section> has content besides its heading (text, a table with rows, or a figure);
- every <table> has a header row and at least one body row, or the section says "None.".

Prints one line per problem and exits 1 if any; 0 when every page passes; 2 when Chromium or a page is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
MARK = "neode-report-check"

# Runs in the page after `load`: collects problems into <pre id="neode-report-check"> as JSON.
CHECK_JS = """
<script>
window.addEventListener("load", function () {
  var problems = [], imgs = Array.prototype.slice.call(document.images);
  imgs.forEach(function (img, i) {
    var name = img.alt || ("image " + (i + 1));
    if (!img.complete || img.naturalWidth === 0) problems.push("image does not load: " + name);
    else {
      var box = img.getBoundingClientRect();
      if (box.width < 1 || box.height < 1) problems.push("image drawn with no size: " + name);
    }
  });
  var sections = Array.prototype.slice.call(document.querySelectorAll("section"));
  if (!sections.length) problems.push("no <section> in the page");
  sections.forEach(function (sec) {
    var heading = sec.querySelector("h2"), title = heading ? heading.textContent.trim() : ("#" + sec.id);
    var text = sec.textContent.replace(heading ? heading.textContent : "", "").trim();
    var media = sec.querySelectorAll("img, table").length;
    if (!text && !media) problems.push("empty section: " + title);
  });
  Array.prototype.slice.call(document.querySelectorAll("table")).forEach(function (table, i) {
    if (!table.querySelector("thead th")) problems.push("table " + (i + 1) + " has no header row");
    if (!table.querySelector("tbody tr")) problems.push("table " + (i + 1) + " has no rows");
  });
  var out = document.createElement("pre");
  out.id = "MARK";
  out.textContent = JSON.stringify({images: imgs.length, sections: sections.length, problems: problems});
  document.body.appendChild(out);
});
</script>
""".replace("MARK", MARK)


def find_browser(explicit: str | None = None) -> str | None:
    """The Chromium executable: ``explicit``, ``$CHROMIUM``, or the first of :data:`BROWSERS` on PATH."""
    for name in ((explicit,) if explicit else (os.environ.get("CHROMIUM"), *BROWSERS)):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _chromium(browser: str, url: str, *extra: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="neode-chromium-") as profile:
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}",
                   "--virtual-time-budget=15000", "--window-size=1280,2000", *extra, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def check_page(page: Path, browser: str, screenshot: Path | None = None) -> tuple[list[str], dict]:
    """Problems found when Chromium renders ``page`` (empty when it passes) and the counts it saw."""
    html = page.read_text(encoding="utf-8")
    probe = html.replace("</body>", CHECK_JS + "</body>") if "</body>" in html else html + CHECK_JS
    with tempfile.TemporaryDirectory(prefix="neode-check-") as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(probe, encoding="utf-8")
        done = _chromium(browser, copy.as_uri(), "--dump-dom")
        if screenshot is not None:
            _chromium(browser, page.resolve().as_uri(), f"--screenshot={screenshot.resolve()}")
    start = done.stdout.find(f'<pre id="{MARK}">')
    if start < 0:
        tail = " ".join((done.stderr or "").split())[-300:]
        return [f"Chromium did not finish rendering the page (exit {done.returncode}): {tail}"], {}
    import html as html_module

    body = done.stdout[start + len(f'<pre id="{MARK}">'):done.stdout.index("</pre>", start)]
    found = json.loads(html_module.unescape(body))
    return found["problems"], found


def build_example(folder: Path) -> Path:
    """A report (Table 1 and Figure 3 sections) from run records written here: what ``--example`` checks."""
    from neode_cli.report.compare import CompareOptions, run

    records = folder / "runs"
    for model, nfe in (("mlp", 0.0), ("odenet", 26.0)):
        for rtol in ((1e-3,) if model == "mlp" else (1e-1, 1e-2, 1e-3)):
            for seed in (0, 1, 2):
                experiment = "fig3" if model == "odenet" and rtol != 1e-3 else "table1"
                run_dir = records / f"{model}_tol{rtol:g}_seed{seed}"
                run_dir.mkdir(parents=True)
                fwd = nfe * (1 + 2 * (1e-3 / rtol) ** 0.1) if nfe else 0.0
                rows = [{"epoch": e, "nfe_forward": fwd + e, "batches": 10, "forward_time_s": 0.01 * (fwd + 1)}
                        for e in (1, 2)]
                (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
                summary = {"status": "completed", "task": "classification", "model": model, "data": "fashion_mnist",
                           "solver": "dopri5", "grad": "adjoint", "rtol": rtol, "atol": rtol, "seed": seed,
                           "experiment": experiment, "budget": "smoke", "epochs": 2, "batch_size": 16,
                           "test_error": 10.0 + seed, "params": 1000, "nfe_forward": fwd + 2, "nfe_backward": fwd,
                           "forward_time_s": 0.01 * (fwd + 1), "ode_error": rtol / 10 if nfe else None,
                           "config": {"data": {"ode_error_samples": 8}}}
                (run_dir / "metrics.json").write_text(json.dumps(summary))
    _, out, _ = run(CompareOptions(runs=(str(records),), out=str(folder / "report")))
    return out / "report.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", type=Path, help="report.html files to check")
    parser.add_argument("--example", action="store_true", help="build a small report from generated records and check it")
    parser.add_argument("--chromium", help="the browser executable (default: $CHROMIUM or chromium on PATH)")
    parser.add_argument("--screenshot", type=Path, help="also save a screenshot of the (last) page")
    args = parser.parse_args(argv)
    browser = find_browser(args.chromium)
    if browser is None:
        print("check_report_html: no Chromium found (install it, e.g. `apt-get install chromium`, or pass "
              "--chromium PATH)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="neode-example-") as tmp:
        pages = list(args.pages) + ([build_example(Path(tmp))] if args.example else [])
        if not pages:
            parser.error("pass report.html files or --example")
        failed = False
        for page in pages:
            if not page.is_file():
                print(f"check_report_html: no file {page}", file=sys.stderr)
                return 2
            problems, found = check_page(page, browser, args.screenshot if page == pages[-1] else None)
            for problem in problems:
                print(f"{page}: {problem}")
            failed |= bool(problems)
            if not problems:
                print(f"{page}: ok ({found['images']} images loaded, {found['sections']} sections with content)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
