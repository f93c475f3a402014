"""`genbound report`: one self-contained HTML file, every section present, every figure an
inline PNG that decodes; notes instead of failures on an empty store or missing views; the
same figures as PNG bytes / markdown for Dagster metadata."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import dagster as dg
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

DATA_SECTIONS = ["bound_vs_n", "term_breakdown", "sigma_vs_n", "headline_vs_recipe",
                 "freedman_vs_azuma", "scaling_laws", "prequential_vs_counting",
                 "bound_over_training", "loss_curves", "hessian_spectra"]
TABLE_SECTIONS = ["frontier", "scaling_laws"]


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
    for key in TABLE_SECTIONS:
        assert p.sections[key]["tables"] == 1, key
    assert not p.sections["frontier"]["imgs"]
    # the frontier table shows every size's stored headline, Thm 3.4 and recipe bounds, and
    # says which are certified (the bracketed size is interpolated)
    for model, co in facts["compute_optimal"].items():
        rows = facts["bounds"] if co["certified"] else facts["interpolated"]
        step = co["step"] if co["certified"] else co["step_hi"]
        for method in ("headline", "freedman_decomposed", "paper_recipe"):
            (row,) = [r for r in rows if r["model"] == model and r["step"] == step
                      and r["method"] == method]
            assert fmt(row["bound"]) in p.cells, (model, method)
    assert p.cells.count("no (interpolated)") == 1 and p.cells.count("yes") == len(facts["steps"]) - 1
    # the fits table lists every stored fit, with the Σ fit readable and the record of the
    # zero subsample term
    text = " ".join(p.cells)
    assert "Σ(N) = 0.27 + 30·N^−0.5" in text and "none: a·N^c is fitted on log y" in text
    captions = " ".join(p.sections["scaling_laws"]["captions"])
    assert "Extrapolated to N = 1.33M" in captions


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
        conn.exec_driver_sql("DROP VIEW frontier, bound_breakdown, bound_vs_loss, bound_points")
    try:
        sample_store.fill_store(pg_clean)
        p = parse(write_report(pg_clean, tmp_path / "noviews.html"))
        note = " ".join(p.sections["bound_vs_n"]["notes"])
        assert "view frontier does not exist; materialize sql/frontier" in note
        note = " ".join(p.sections["term_breakdown"]["notes"])
        assert "view bound_breakdown does not exist; materialize sql/bound_breakdown" in note
        assert p.sections["loss_curves"]["imgs"]  # reads a table: unaffected
        assert p.sections["bound_over_training"]["imgs"]  # its view is still there
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
    """The term-breakdown bars stack to the stored bounds, Thm 3.4's and the headline's (read
    the figure's own artists); the right panel stacks them without each one's empirical risk."""
    storage.create_views(pg_clean)
    facts = sample_store.fill_store(pg_clean)
    from genbound_assets.report import figures

    df = storage.read_frame(pg_clean, "SELECT model, n_params, tokens_per_param, method, term, "
                                      "term_order, value, bound FROM bound_breakdown WHERE method "
                                      "IN ('freedman_decomposed', 'headline') AND at_compute_optimal "
                                      "AND additive")
    fig = figures.term_breakdown(df)

    def tops(ax):
        out: dict[float, float] = {}
        for bar in ax.patches:
            x = round(bar.get_x() + bar.get_width() / 2, 6)
            out[x] = max(out.get(x, 0.0), bar.get_y() + bar.get_height())
        return [round(out[x], 9) for x in sorted(out)]

    chosen = [r for r in [*facts["bounds"], *facts["interpolated"]]
              if r["method"] in ("freedman_decomposed", "headline")
              and r["step"] == (facts["compute_optimal"][r["model"]].get("step")
                                or facts["compute_optimal"][r["model"]]["step_hi"])
              and r["interpolated"] is not facts["compute_optimal"][r["model"]]["certified"]]
    order = {"freedman_decomposed": 0, "headline": 1}   # plain bar left, hatched right
    chosen.sort(key=lambda r: (r["n_params"], order[r["method"]]))
    assert len(chosen) == 2 * len(sample_store.SIZES)
    assert tops(fig.axes[0]) == [round(r["bound"], 9) for r in chosen]
    assert tops(fig.axes[1]) == [round(r["bound"] - r["empirical_risk"], 9) for r in chosen]
    assert fig.axes[0].get_ylabel() == "nats per token"
    assert "model size" in fig.axes[0].get_xlabel()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("smoothing" in t for t in legend) and any("hatched" in t for t in legend)


def test_fit_curves_reproduce_the_stored_fits(pg_clean):
    """The report redraws each fit from its stored points: the curve it draws is the stored
    one (same parameters), and its band contains it."""
    storage.create_views(pg_clean)
    facts = sample_store.fill_store(pg_clean)
    from genbound_assets.report.sections import _curves, _fit_rows

    fits = _fit_rows(pg_clean, None, "sigma")
    (curve,) = _curves(fits, "offset_power")
    stored = next(f for f in facts["fits"] if f.quantity == "sigma")
    assert curve["y"] == pytest.approx(stored.predict(curve["n"]), rel=1e-9)
    assert (curve["lo"] <= curve["y"]).all() and (curve["y"] <= curve["hi"]).all()
    assert _fit_rows(pg_clean, ["no-such-model"], "sigma").height == 0
