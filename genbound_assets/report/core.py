"""The pieces every section uses: ``Section``, reading a view (or noting it is empty), PNG
encoding, and markdown images for Dagster metadata.

Figures are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas: no pyplot, no
global state, so sections can run inside Dagster's (threaded) run workers.
"""

from __future__ import annotations

import base64
import contextvars
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from genbound_assets.storage import read_frame

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Table:
    """A small table for the report: column headers and rows of display strings."""

    columns: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """One section of the report: a figure (PNG bytes) or a table, a caption, or a note saying
    why there is nothing to show yet."""

    key: str
    title: str
    caption: str = ""
    png: bytes | None = None
    table: Table | None = None
    note: str | None = None
    sources: list[str] = field(default_factory=list)

    @property
    def has_content(self) -> bool:
        return self.png is not None or self.table is not None


class NoData(Exception):
    """Raised inside a section when its inputs are absent; the message is the note shown."""


_MISSING_RELATION = re.compile(r'relation "([^"]+)" does not exist')


def query(engine: Engine, sql: str, params: Mapping[str, Any] | None = None, *,
          empty: str | None = None) -> pl.DataFrame:
    """Run a SELECT; a missing view/table or (with ``empty``) an empty result raises NoData."""
    try:
        df = read_frame(engine, sql, params)
    except DBAPIError as e:
        m = _MISSING_RELATION.search(str(getattr(e, "orig", e)))
        if m is None:
            raise
        name = m.group(1)
        raise NoData(f"no data yet: the view {name} does not exist; materialize sql/{name} "
                     "(or run `genbound setup-db`)") from None
    if empty is not None and df.height == 0:
        raise NoData(f"no data yet: {empty}")
    return df


def only_models(df: pl.DataFrame, models: Sequence[str] | None) -> pl.DataFrame:
    return df if models is None else df.filter(pl.col("model").is_in(list(models)))


# the resolution figures are rendered at (None: the figure's own, 110 dpi); ``figure_png`` lowers
# it for Dagster metadata, where images should stay small
PNG_DPI: contextvars.ContextVar[float | None] = contextvars.ContextVar("genbound_png_dpi", default=None)


def png_bytes(fig) -> bytes:
    """A matplotlib Figure as PNG bytes (Agg), at ``PNG_DPI`` when set."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=PNG_DPI.get() or fig.dpi)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    if not png.startswith(PNG_MAGIC):
        raise ValueError("not a PNG (bad signature)")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def md_image(png: bytes, alt: str = "figure") -> str:
    """Markdown for ``dg.MetadataValue.md``: the PNG inline as a base64 data URI (Dagster 1.13
    has no image metadata type; keep such images small, one per asset)."""
    alt = alt.replace("[", "(").replace("]", ")")
    return f"![{alt}]({data_uri(png)})"


def new_figure(width: float = 7.6, height: float = 4.3):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def human(n: float | int | None) -> str:
    """12_345 -> '12.3k', 70_426_624 -> '70.4M'."""
    if n is None:
        return "?"
    n = float(n)
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.3g}{suffix}"
    return f"{n:.3g}"


def fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "–"
    return f"{v:.{digits}f}"
