"""`genbound report`: one self-contained HTML file, every section present, every figure an
inline PNG that decodes; notes instead of failures on an empty store or missing views; the
same figures as PNG bytes / markdown for Dagster metadata."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sample_store
from click.testing import CliRunner
from PIL import Image

from genbound_assets import storage
from genbound_assets.cli import main
from genbound_assets.report import (
    figure_png,
    md_image,
    run_section,
    section_keys,
    write_report,
)
from genbound_assets.report.core import PNG_MAGIC, fmt

DATA_SECTIONS = ["bound_vs_n", "term_breakdown", "sigma_vs_n", "freedman_vs_azuma",
                 "bound_over_training", "loss_curves", "hessian_spectra"]
HOOKS = ["prequential_vs_counting", "headline_vs_recipe"]


class ReportParser(HTMLParser):
    """Sections (id -> title, images, notes, tables) and every URL the page would load."""

    def __init__(self):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.urls: list[str] = []
        self.tags: list[str] = []
        self._text_into: str | None = None
        self.cells: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        for attr in ("src", "href", "srcset", "data"):
            if attr in a:
                self.urls.append(a[attr])
        if tag == "section":
            self.current = a["id"]
            self.sections[self.current] = {"title": "", "imgs": [], "notes": [], "tables": 0,
                                           "captions": []}
        elif self.current is not None:
            sec = self.sections[self.current]
            if tag == "img":
                sec["imgs"].append(a["src"])
            elif tag == "table":
                sec["tables"] += 1
            elif tag == "h2":
                self._text_into = "title"
            elif tag == "p" and a.get("class") == "note":
                self._text_into = "notes"
            elif tag in ("figcaption",) or (tag == "p" and a.get("class") == "caption"):
                self._text_into = "captions"
            elif tag == "td":
                self._text_into = "cell"

    def handle_endtag(self, tag):
        if tag == "section":
            self.current = None
        if tag in ("h2", "p", "figcaption", "td"):
            self._text_into = None

    def handle_data(self, data):
        if self.current is None or self._text_into is None:
            return
        sec = self.sections[self.current]
        if self._text_into == "title":
            sec["title"] += data
        elif self._text_into == "cell":
            self.cells.append(data)
        else:
            sec[self._text_into].append(data)


def parse(path: Path) -> ReportParser:
    p = ReportParser()
    p.feed(path.read_text(encoding="utf-8"))
    p.close()
    return p


def decode_png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    raw = base64.b64decode(src[len(prefix):], validate=True)
    assert raw.startswith(PNG_MAGIC)
    img = Image.open(io.BytesIO(raw))
    img.load()
    assert img.format == "PNG"
    return img


def assert_self_contained(p: ReportParser) -> None:
    assert "script" not in p.tags and "link" not in p.tags and "iframe" not in p.tags
    for url in p.urls:
        assert url.startswith(("data:image/png;base64,", "#")), url[:80]


def test_report_renders_every_section_on_sample_rows(pg_clean, tmp_path):
    storage.create_views(pg_clean)
    facts = sample_store.fill_store(pg_clean)
    path = write_report(pg_clean, tmp_path / "out" / "report.html")
    assert path == (tmp_path / "out" / "report.html").resolve() and path.is_file()
    p = parse(path)
    assert_self_contained(p)
    assert list(p.sections) == section_keys()
    for key in DATA_SECTIONS:
        sec = p.sections[key]
        assert len(sec["imgs"]) == 1 and not sec["notes"], (key, sec["notes"])
        img = decode_png(sec["imgs"][0])
        assert img.width >= 600 and img.height >= 300
        assert len(" ".join(sec["captions"])) > 100, key  # a caption a reader can follow
    frontier = p.sections["frontier"]
    assert frontier["tables"] == 1 and not frontier["imgs"]
    for key in HOOKS:
        assert p.sections[key]["notes"] and not p.sections[key]["imgs"]
    # the frontier table shows the stored certified Thm 3.4 bound of every size
    for model, steps in facts["steps"].items():
        (row,) = [r for r in facts["bounds"] if r["model"] == model and r["step"] == steps["optimal"]
                  and r["method"] == "freedman_decomposed" and r["certified"]]
        assert fmt(row["bound"]) in p.cells and model in p.cells


def test_report_on_an_empty_store_is_all_notes(pg_clean, tmp_path):
    storage.create_views(pg_clean)
    p = parse(write_report(pg_clean, tmp_path / "empty.html"))
    assert_self_contained(p)
    assert list(p.sections) == section_keys()
    for key, sec in p.sections.items():
        assert not sec["imgs"] and sec["tables"] == 0, key
        assert len(sec["notes"]) == 1, key
    assert "materialize" in " ".join(p.sections["loss_curves"]["notes"])


def test_report_without_the_views_names_the_assets_to_materialize(pg_clean, tmp_path):
    with pg_clean.begin() as conn:
        conn.exec_driver_sql("DROP VIEW bound_breakdown, bound_vs_loss, bound_points")
    try:
        sample_store.fill_store(pg_clean)
        p = parse(write_report(pg_clean, tmp_path / "noviews.html"))
        note = " ".join(p.sections["bound_vs_n"]["notes"])
        assert "view bound_vs_loss does not exist; materialize sql/bound_vs_loss" in note
        assert p.sections["loss_curves"]["imgs"]  # reads a table: unaffected
    finally:
        storage.create_views(pg_clean)


def test_cli_report_writes_to_the_data_dir(pg_clean):
    storage.create_views(pg_clean)
    sample_store.fill_store(pg_clean)
    res = CliRunner().invoke(main, ["report"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    path = Path(res.stdout.strip())
    assert path == storage.data_dir() / "report.html" and path.is_file()
    assert len(parse(path).sections) == len(section_keys())


def test_figures_for_dagster_metadata(pg_clean):
    storage.create_views(pg_clean)
    sample_store.fill_store(pg_clean)
    one = figure_png("loss_curves", pg_clean, ["neox-12k"])
    all_models = figure_png("loss_curves", pg_clean)
    assert one.startswith(PNG_MAGIC) and all_models.startswith(PNG_MAGIC) and one != all_models
    md = md_image(one, "loss curve of neox-12k")
    assert md.startswith("![loss curve of neox-12k](data:image/png;base64,") and md.endswith(")")
    decode_png(md[md.index("(") + 1:-1])
    assert isinstance(dg.MetadataValue.md(md), dg.MarkdownMetadataValue)
    # a model without data: no figure, a note
    sec = run_section("hessian_spectra", pg_clean, ["no-such-model"])
    assert sec.png is None and sec.note.startswith("no data yet")
    assert figure_png("frontier", pg_clean) is None  # a table, not a figure
    with pytest.raises(KeyError, match="unknown report section"):
        run_section("nope", pg_clean)
    with pytest.raises(ValueError, match="not a PNG"):
        md_image(b"GIF89a")


def test_figures_draw_the_stored_numbers(pg_clean):
    """The term-breakdown bars stack to the stored bound: read the figure's own artists."""
    storage.create_views(pg_clean)
    facts = sample_store.fill_store(pg_clean)
    from genbound_assets.report import figures

    df = storage.read_frame(pg_clean, "SELECT model, n_params, tokens_per_param, term, term_order, "
                                      "value, bound FROM bound_breakdown WHERE method = "
                                      "'freedman_decomposed' AND certified AND nearest_compute_optimal "
                                      "AND additive")
    fig = figures.term_breakdown(df)
    ax = fig.axes[0]
    tops: dict[float, float] = {}
    for bar in ax.patches:
        x = round(bar.get_x() + bar.get_width() / 2, 6)
        tops[x] = max(tops.get(x, 0.0), bar.get_y() + bar.get_height())
    expected = sorted(
        (r["n_params"], r["bound"]) for r in facts["bounds"]
        if r["method"] == "freedman_decomposed" and r["certified"]
        and r["step"] == facts["steps"][r["model"]]["optimal"])
    assert [round(tops[x], 9) for x in sorted(tops)] == [round(b, 9) for _, b in expected]
    assert ax.get_ylabel() == "nats per token"
    # the right panel stacks the same terms without R̂_h: its bars top out at bound - R̂_h
    gap_tops: dict[float, float] = {}
    for bar in fig.axes[1].patches:
        x = round(bar.get_x() + bar.get_width() / 2, 6)
        gap_tops[x] = max(gap_tops.get(x, 0.0), bar.get_y() + bar.get_height())
    risks = sorted((r["n_params"], r["empirical_risk"]) for r in facts["bounds"]
                   if r["method"] == "freedman_decomposed" and r["certified"]
                   and r["step"] == facts["steps"][r["model"]]["optimal"])
    assert [round(gap_tops[x], 9) for x in sorted(gap_tops)] == [
        round(b - r, 9) for (_, b), (_, r) in zip(expected, risks, strict=True)]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert pl.Series(legend).str.contains("smoothing").any() and len(legend) == 6
