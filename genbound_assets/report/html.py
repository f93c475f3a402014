"""One self-contained HTML file: inline CSS, figures as base64 PNG data URIs, no scripts, no
external resources (it opens offline and can be mailed as is)."""

from __future__ import annotations

import datetime as dt
from html import escape
from pathlib import Path

from sqlalchemy.engine import Engine

from genbound_assets.storage import data_dir, describe_url

from .core import Section, data_uri
from .sections import build_sections

REPORT_FILE = "report.html"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 980px; margin: 2em auto; padding: 0 1em; color: #1b1b1b; line-height: 1.45; }
h1 { margin-bottom: 0.2em; }
h2 { margin-top: 2.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.meta { color: #555; font-size: 0.92em; }
nav ol { columns: 2; font-size: 0.95em; }
figure { margin: 0.8em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption, p.caption { font-size: 0.92em; color: #333; margin-top: 0.4em; }
p.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5em 0.8em; }
p.sources { font-size: 0.8em; color: #777; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.6em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
"""


def _section_html(sec: Section) -> str:
    parts = [f'<section id="{escape(sec.key)}" class="report-section">',
             f"<h2>{escape(sec.title)}</h2>"]
    if sec.note:
        parts.append(f'<p class="note">{escape(sec.note)}</p>')
        if sec.caption:
            parts.append(f'<p class="caption">When available: {escape(sec.caption)}</p>')
    if sec.png is not None:
        parts.append(f'<figure><img src="{data_uri(sec.png)}" alt="{escape(sec.title)}">'
                     f"<figcaption>{escape(sec.caption)}</figcaption></figure>")
    if sec.table is not None:
        head = "".join(f"<th>{escape(c)}</th>" for c in sec.table.columns)
        body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>"
                       for row in sec.table.rows)
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        parts.append(f'<p class="caption">{escape(sec.caption)}</p>')
    if sec.sources:
        parts.append(f'<p class="sources">Reads: {escape(", ".join(sec.sources))}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def render_html(sections: list[Section], *, database: str = "", generated: str | None = None) -> str:
    generated = generated or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    toc = "".join(f'<li><a href="#{escape(s.key)}">{escape(s.title)}</a>'
                  + ("" if s.has_content else " <small>(no data yet)</small>") + "</li>"
                  for s in sections)
    shown = sum(s.has_content for s in sections)
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>genbound report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>genbound report</h1>",
        f'<p class="meta">Generated {escape(generated)}'
        + (f" from {escape(database)}" if database else "")
        + f". {shown} of {len(sections)} sections have data. Losses and bounds are in nats per "
        "token; a certified bound holds with probability at least 1 − δ (Finzi et al., ICLR "
        "2025). Query the same numbers with <code>genbound sql</code> (docs/sql.md).</p>",
        f"<nav><ol>{toc}</ol></nav>",
        *(_section_html(s) for s in sections),
        "</body></html>",
    ]) + "\n"


def write_report(engine: Engine, output: Path | str | None = None,
                 models: list[str] | None = None) -> Path:
    """Build every section and write the HTML (default ``<data dir>/report.html``); returns
    the path.  The file is written to a temporary name and renamed, so a reader never sees a
    half-written report."""
    path = Path(output) if output is not None else data_dir() / REPORT_FILE
    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    html = render_html(build_sections(engine, models),
                       database=describe_url(engine.url.render_as_string(hide_password=False)))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
