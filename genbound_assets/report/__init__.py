"""The HTML report and the figures behind it (``genbound report``; docs/sql.md).

Shell-level: reads the store through SQL (storage) and draws with matplotlib (Agg); nothing in
the core imports it.  Public API::

    from genbound_assets.report import write_report, run_section, figure_png, md_image

    path = write_report(engine)                       # <data dir>/report.html
    png = figure_png("loss_curves", engine, ["neox-12k"])   # bytes or None (no data)
    dg.MetadataValue.md(md_image(png, "loss curve"))  # inline image in Dagster metadata
"""

from .core import NoData, Section, Table, md_image, png_bytes
from .html import render_html, write_report
from .sections import SECTIONS, build_sections, figure_png, run_section, section_keys

__all__ = [
    "SECTIONS",
    "NoData",
    "Section",
    "Table",
    "build_sections",
    "figure_png",
    "md_image",
    "png_bytes",
    "render_html",
    "run_section",
    "section_keys",
    "write_report",
]
