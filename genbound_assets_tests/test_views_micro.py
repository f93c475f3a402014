"""The views, the scaling-fit asset, the asset figures and the report on the real graph: one
demo run on the micro suite (2 sizes, real models, real Postgres, real Dagster) for the module.

* every view exists with its columns and holds the demo's rows; ``frontier`` has one row per
  model, its headline the stored headline of the compute-optimal checkpoint;
* 2 sizes are too few for any fit: ``<family>/scaling_fits`` stores "not enough sizes" records;
* the report's figures are on ``model_bounds`` (per model) and ``scaling_fits`` (small PNGs);
* ``genbound report`` renders the demo's tables;
* the views follow a re-materialization: one checkpoint_bounds partition re-run at another δ
  (GENBOUND_DELTA) changes what they show, with no view re-created.
"""

import base64
import re
import time

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa
from test_report import assert_self_contained, parse
from test_sql_assets import EXPECTED_COLUMNS

from genbound_assets import storage
from genbound_assets.storage import read_frame
from genbound_assets_tests.micro import FAMILY, micro_env

pytestmark = pytest.mark.slow

MODELS = ["m-a", "m-b"]


@pytest.fixture(scope="module")
def demo(micro_suite_root, pg_engine, tmp_path_factory):
    """The demo on the micro suite, once for the module: (defs, instance, engine)."""
    from genbound_assets_tests.conftest import truncate_all

    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("views-micro")
    micro_env(mp, micro_suite_root, tmp)
    truncate_all(pg_engine)
    storage.create_views(pg_engine)
    from genbound_assets.definitions import build_defs
    from genbound_assets.demo import run_demo

    defs = build_defs()
    (tmp / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp / "dagster")) as instance:
        lines = []
        run_demo(pg_engine, instance, echo=lines.append, defs=defs)
        assert not [ln for ln in lines if "FAILED" in ln], "\n".join(lines)
        yield defs, instance, pg_engine, mp
    mp.undo()


def test_every_view_holds_the_demo(demo):
    _, _, engine, _ = demo
    insp = sa.inspect(engine)
    for view, columns in EXPECTED_COLUMNS.items():
        assert [c["name"] for c in insp.get_columns(view)] == columns, view
        n = read_frame(engine, f'SELECT count(*) AS n FROM "{view}"')["n"][0]
        assert n > 0, f"{view} is empty after the demo"
    front = read_frame(engine, "SELECT * FROM frontier ORDER BY model")
    assert front["model"].to_list() == MODELS                    # one row per model
    co = read_frame(engine, "SELECT model, step, certified FROM compute_optimal ORDER BY model")
    heads = read_frame(engine, "SELECT model, step, bound, empirical_risk FROM bounds "
                               "WHERE method = 'headline' AND NOT interpolated")
    for f, c in zip(front.iter_rows(named=True), co.iter_rows(named=True), strict=True):
        assert f["family"] == FAMILY and f["certified"] is c["certified"]
        if c["certified"]:
            h = heads.filter((pl.col("model") == f["model"]) & (pl.col("step") == c["step"]))
            assert f["step"] == c["step"] and f["headline"] == h["bound"][0]
            assert f["empirical_risk_sq"] == h["empirical_risk"][0]
        assert f["decomposed"] >= f["headline"] and f["azuma"] is not None
        assert f["paper_recipe"] is not None and f["gap_ratio"] is not None
    # bound_over_training: headline and loss by step, the compute-optimal step marked once
    bot = read_frame(engine, "SELECT * FROM bound_over_training")
    assert bot.select("model", "step").unique().height == bot.height
    marked = bot.filter(pl.col("at_compute_optimal"))
    assert sorted(marked["model"].to_list()) == MODELS and marked["headline"].null_count() == 0
    # the breakdown's summands add up to each certified row's bound
    bd = read_frame(engine, "SELECT model, step, method, sum(value) AS s, max(bound) AS b "
                            "FROM bound_breakdown WHERE additive GROUP BY model, step, method")
    assert bd.height > 0
    assert ((bd["s"] - bd["b"]).abs() <= 1e-9 * bd["b"].abs().clip(lower_bound=1.0)).all()


def test_two_sizes_store_not_enough_sizes_records(demo):
    defs, instance, engine, _ = demo
    fits = read_frame(engine, "SELECT * FROM power_law_fits WHERE family = :f", {"f": FAMILY})
    assert fits.height > 0 and set(fits["status"]) == {"not_enough_sizes"}
    assert fits["params"].null_count() == fits.height and not fits["certified"].any()
    assert fits["n_points"].max() <= 2 and set(fits["selection"]) == {"compute_optimal"}
    head = fits.filter((pl.col("quantity") == "headline") & (pl.col("form") == "power")).row(0, named=True)
    assert head["n_points"] == 2 and head["x"] == sorted(head["x"]) and head["models"] == MODELS
    assert "not enough sizes: 2 model size(s)" in head["note"] and head["extrapolation"] is None
    view = read_frame(engine, "SELECT * FROM scaling_fits WHERE family = :f", {"f": FAMILY})
    assert view.height == fits.height and view["formula"].null_count() == view.height
    mat = instance.get_latest_materialization_event(dg.AssetKey([FAMILY, "scaling_fits"]))
    meta = mat.asset_materialization.metadata
    assert meta["sizes"].value == 2 and meta["fits_made"].value == 0
    assert "not_enough_sizes" in meta["fits"].value


def _png_sizes(md: str) -> list[int]:
    return [len(base64.b64decode(b)) for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", md)]


def test_assets_carry_the_report_figures(demo):
    defs, instance, engine, _ = demo
    for model in MODELS:
        ev = instance.get_latest_materialization_event(dg.AssetKey([FAMILY, "model_bounds"]))
        recs = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey([FAMILY, "model_bounds"]),
                                  asset_partitions=[model]), limit=1).records
        assert recs, model
        meta = recs[0].asset_materialization.metadata
        for key in ("figure/bound_over_training", "figure/term_breakdown"):
            sizes = _png_sizes(meta[key].value)
            assert len(sizes) == 1 and 5_000 < sizes[0] < 80_000, (model, key, sizes)
    assert ev is not None
    mat = instance.get_latest_materialization_event(dg.AssetKey([FAMILY, "scaling_fits"]))
    meta = mat.asset_materialization.metadata
    drawn = [k for k in meta if k.startswith("figure/")]
    assert {"figure/headline_vs_recipe", "figure/sigma_vs_n"} <= set(drawn)
    assert sum(s for k in drawn for s in _png_sizes(meta[k].value)) < 250_000


def test_report_renders_the_demo(demo, tmp_path):
    _, _, engine, _ = demo
    from genbound_assets.report import write_report

    t0 = time.perf_counter()
    path = write_report(engine, tmp_path / "report.html")
    print(f"report on the micro demo: {time.perf_counter() - t0:.1f} s")
    p = parse(path)
    assert_self_contained(p)
    for key in ("bound_vs_n", "term_breakdown", "sigma_vs_n", "headline_vs_recipe",
                "freedman_vs_azuma", "scaling_laws", "bound_over_training", "loss_curves"):
        assert p.sections[key]["imgs"], (key, p.sections[key]["notes"])
    assert p.sections["frontier"]["tables"] == 1
    assert all(m in p.cells for m in MODELS)
    assert any("not enough sizes" in c for c in p.cells)       # the fits table says why


def test_views_follow_a_rematerialization_at_another_delta(demo):
    defs, instance, engine, mp = demo
    from genbound_assets.defs.families import resources
    from genbound_assets.demo import _execute

    co = read_frame(engine, "SELECT model, step FROM compute_optimal WHERE certified ORDER BY model")
    model, step = co.row(0)
    before = read_frame(engine, "SELECT * FROM frontier WHERE model = :m", {"m": model}).row(0, named=True)
    bot_before = read_frame(engine, "SELECT headline FROM bound_over_training WHERE model = :m "
                            "AND step = :s", {"m": model, "s": step})["headline"][0]
    other = read_frame(engine, "SELECT headline FROM frontier WHERE model <> :m", {"m": model})
    views_before = read_frame(engine, "SELECT c.relname, c.oid::bigint AS oid FROM pg_class c "
                              "WHERE c.relkind = 'v' ORDER BY c.relname")
    mp.setenv("GENBOUND_DELTA", "0.05")
    resources._open.cache_clear()
    try:
        res = _execute(defs, instance, [dg.AssetKey([FAMILY, "checkpoint_bounds"])],
                       partition_key=dg.MultiPartitionKey({"model": model, "step": str(step)}))
        assert res.success
    finally:
        mp.delenv("GENBOUND_DELTA")
        resources._open.cache_clear()
    after = read_frame(engine, "SELECT * FROM frontier WHERE model = :m", {"m": model}).row(0, named=True)
    assert before["delta"] == 0.01 and after["delta"] == 0.05
    assert after["headline"] < before["headline"]          # a larger δ, a smaller bound
    assert after["decomposed"] < before["decomposed"] and after["azuma"] < before["azuma"]
    assert after["empirical_risk_h"] == before["empirical_risk_h"]    # same data, same risk
    bot_after = read_frame(engine, "SELECT headline, delta FROM bound_over_training WHERE model = :m "
                           "AND step = :s", {"m": model, "s": step}).row(0, named=True)
    assert bot_after["headline"] == after["headline"] < bot_before and bot_after["delta"] == 0.05
    latest = read_frame(engine, "SELECT delta FROM latest_bounds WHERE model = :m AND step = :s "
                        "AND method = 'headline'", {"m": model, "s": step})
    assert latest["delta"].to_list() == [0.05]
    # the other model is untouched, and no view was re-created (same oids): live views
    assert read_frame(engine, "SELECT headline FROM frontier WHERE model <> :m", {"m": model}).equals(other)
    assert read_frame(engine, "SELECT c.relname, c.oid::bigint AS oid FROM pg_class c "
                      "WHERE c.relkind = 'v' ORDER BY c.relname").equals(views_before)
