"""Writing a report folder: ``report.md``, a self-contained ``report.html`` (figures embedded as base64), one CSV
per table (every number), one PNG per figure.

Writes are deterministic (same report, same bytes); a file whose bytes are unchanged is left untouched. Files a previous report
wrote into the same folder that this one does not write are removed (listed in ``.neode-report``); nothing else in
the folder is touched. :func:`previous_report` tells whether a folder already holds a report (and which), so that
``neode compare`` can say it replaces one; a non-empty folder that holds no report is never written into.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from pathlib import Path
from typing import Any

from .assemble import Report
from .base import Table

__all__ = ["write_report", "previous_report", "NotAReportFolder", "to_markdown", "to_html", "to_csv", "MANIFEST"]

#: File in the report folder listing what the last report wrote (so stale files can be removed).
MANIFEST = ".neode-report"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision, stable
    return value


def to_csv(table: Table) -> str:
    """``table``'s rows with every key as a column (raw values; empty for missing)."""
    buffer = io.StringIO()
    keys = table.csv_keys()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    for row in table.rows:
        writer.writerow([_csv_value(row.get(k)) for k in keys])
    return buffer.getvalue()


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> list[str]:
    if not table.rows:
        return ["None."]
    lines = ["| " + " | ".join(_md_cell(c.header) for c in table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(c.cell(row)) for c in table.columns) + " |")
    return lines


def to_markdown(report: Report) -> str:
    """The report as Markdown; figures are referenced as the PNG files next to it."""
    out = [f"# {report.title}", ""]
    out += [f"- {line}" for line in report.overview] + [""]
    for part in report.parts:
        out += [f"## {part.title}", ""]
        if part.error:
            out += [f"**This section could not be built:** {part.error}", ""]
        for paragraph in part.result.text:
            out += [paragraph, ""]
        for table in part.result.tables:
            out += [f"### {table.title}", ""] + _md_table(table) + [""]
            if table.caption:
                out += [f"*{table.caption}* (`{table.name}.csv`)", ""]
        for figure in part.result.figures:
            out += [f"### {figure.title}", "", f"![{figure.title}]({figure.name}.png)", "", f"*{figure.caption}*", ""]
        if part.result.notes:
            out += ["**Notes and deviations from the paper's protocol**", ""]
            out += [f"- {note}" for note in part.result.notes] + [""]
    out += ["## Runs", "", f"### {report.unfinished.title}", ""] + _md_table(report.unfinished) + [""]
    if report.unfinished.rows:
        out += [f"*{report.unfinished.caption}*", ""]
    out += [f"### {report.run_list.title}", ""] + _md_table(report.run_list) + ["", f"*{report.run_list.caption}*", ""]
    out += ["## Problems with run records", ""]
    out += [f"- {p}" for p in report.problems] if report.problems else ["None."]
    out += ["", "## Files", ""]
    out += [f"- `{t.name}.csv`: {t.title}" for t in report.tables()]
    return "\n".join(out) + "\n"


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*([^*]+)\*\*")

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;
padding:.25em .5em;text-align:left}th{background:#f2f2f2}td{font-variant-numeric:tabular-nums}figure{margin:1em 0}
img{max-width:100%;border:1px solid #eee}figcaption,.caption{color:#555;font-size:.9em}code{background:#f4f4f4;
padding:0 .2em}.error{color:#a00}"""


def _inline(text: str) -> str:
    """Escape ``text`` and render its inline Markdown (``code`` and **bold**) as HTML."""
    escaped = html.escape(text, quote=False)
    return _BOLD.sub(r"<strong>\1</strong>", _CODE.sub(r"<code>\1</code>", escaped))


def _html_table(table: Table) -> str:
    if not table.rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c.cell(row))}</td>" for c in table.columns) + "</tr>"
                   for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(report: Report) -> str:
    """The report as one HTML page with inline CSS and the figures embedded (no external resources)."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(report.title)}</title><style>{CSS}</style></head><body>",
           f"<h1>{html.escape(report.title)}</h1>", '<section id="overview"><ul>']
    out += [f"<li>{_inline(line)}</li>" for line in report.overview] + ["</ul></section>"]
    for part in report.parts:
        out.append(f'<section id="{html.escape(part.name)}"><h2>{html.escape(part.title)}</h2>')
        if part.error:
            out.append(f'<p class="error"><strong>This section could not be built:</strong> {html.escape(part.error)}</p>')
        out += [f"<p>{_inline(p)}</p>" for p in part.result.text]
        for table in part.result.tables:
            out += [f"<h3>{html.escape(table.title)}</h3>", _html_table(table),
                    f'<p class="caption">{_inline(table.caption)} (<code>{html.escape(table.name)}.csv</code>)</p>']
        for figure in part.result.figures:
            data = base64.b64encode(figure.png).decode("ascii")
            out += [f"<h3>{html.escape(figure.title)}</h3>",
                    f'<figure><img alt="{html.escape(figure.title)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_inline(figure.caption)}</figcaption></figure>"]
        if part.result.notes:
            out += ["<p><strong>Notes and deviations from the paper's protocol</strong></p>", "<ul>"]
            out += [f"<li>{_inline(n)}</li>" for n in part.result.notes] + ["</ul>"]
        out.append("</section>")
    out += ['<section id="runs"><h2>Runs</h2>', f"<h3>{html.escape(report.unfinished.title)}</h3>",
            _html_table(report.unfinished)]
    if report.unfinished.rows:
        out.append(f'<p class="caption">{_inline(report.unfinished.caption)}</p>')
    out += [f"<h3>{html.escape(report.run_list.title)}</h3>", _html_table(report.run_list),
            f'<p class="caption">{_inline(report.run_list.caption)}</p>', "</section>",
            '<section id="problems"><h2>Problems with run records</h2>']
    out += (["<ul>"] + [f"<li>{_inline(p)}</li>" for p in report.problems] + ["</ul>"]) if report.problems else ["<p>None.</p>"]
    out.append("</section>")
    out += ["</body></html>"]
    return "\n".join(out) + "\n"


class NotAReportFolder(ValueError):
    """The output folder exists, is not empty and holds no report: writing there could mix or clobber files."""


def _manifest_names(manifest: Path) -> list[str]:
    return [line for line in manifest.read_text().splitlines() if line and not line.startswith("#")]


def previous_report(out: str | Path) -> str | None:
    """The title of the report folder ``out`` already holds (``""`` when its manifest names none), or None when it
    holds no report. Raises :class:`NotAReportFolder` for an existing non-empty folder without a report."""
    out = Path(out)
    manifest = out / MANIFEST
    if manifest.is_file():
        titles = [line[len("# title: "):] for line in manifest.read_text().splitlines() if line.startswith("# title: ")]
        return titles[0] if titles else ""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise NotAReportFolder(f"{out} exists and holds no neode report (no {MANIFEST}); pass out=<a new or empty "
                               f"folder>, or delete {out} first")
    return None


def _write(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return  # unchanged: keep the file (and its modification time) as it is
    path.write_bytes(data)


def write_report(report: Report, out: str | Path) -> list[Path]:
    """Write ``report`` into folder ``out`` (created if needed); return the files written, in a stable order."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {"report.md": to_markdown(report).encode(), "report.html": to_html(report).encode()}
    for table in report.tables():
        files[f"{table.name}.csv"] = to_csv(table).encode()
    for part in report.parts:
        for figure in part.result.figures:
            files[f"{figure.name}.png"] = figure.png
    manifest = out / MANIFEST
    if manifest.exists():
        for name in _manifest_names(manifest):
            stale = out / name
            if name not in files and "/" not in name and stale.is_file():
                stale.unlink()
    for name, data in files.items():
        _write(out / name, data)
    title = " ".join(report.title.split())
    _write(manifest, (f"# title: {title}\n" + "\n".join(sorted(files)) + "\n").encode())
    return [out / name for name in files]
