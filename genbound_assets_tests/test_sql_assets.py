"""SQL view files as Dagster assets (defs/sql/) and the views themselves (dbt_like_sql/).

* lineage: each view asset's upstream assets equal what PostgreSQL's own dependency catalog
  (pg_depend on the view's rewrite rule) says the created view reads, mapped through the
  ``genbound/writes`` convention; nothing is listed by hand;
* a file that does not parse, or that PostgreSQL refuses, fails only its own asset, with a
  one-line message naming the file and line; the code location still loads;
* re-materializing after editing a file changes the view, including a column removal that
  PostgreSQL cannot apply in place (the views reading it are recreated);
* every view exists with its columns, and its values follow from rows inserted here.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sample_store
import sqlalchemy as sa

from genbound_assets import storage
from genbound_assets.defs.families.resources import GenboundResource
from genbound_assets.defs.sql.assets import build_sql_assets
from genbound_assets.defs.sql.lineage import (
    SQL_VIEW_KEY,
    link_table_lineage,
    sql_key,
    table_key,
    writes,
)
from genbound_assets.defs.store.resources import PostgresResource

REPO = Path(__file__).resolve().parents[1]

PG_READS = """
    SELECT DISTINCT t.relname, t.relkind
    FROM pg_rewrite r
    JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass
                    AND d.refclassid = 'pg_class'::regclass
    JOIN pg_class t ON t.oid = d.refobjid
    WHERE r.ev_class = to_regclass(:view) AND t.oid <> r.ev_class
"""


def _assets(defs: dg.Definitions) -> list[dg.AssetsDefinition]:
    return [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]


def _materialize(defs: dg.Definitions, pg_url: str, selection=None, raise_on_error=True):
    with dg.instance_for_test() as instance:
        return dg.materialize(
            _assets(defs), selection=selection or dg.AssetSelection.groups("sql"),
            resources={"postgres": PostgresResource(database_url=pg_url),
                       "genbound": GenboundResource()},
            instance=instance, raise_on_error=raise_on_error)


def _failures(result) -> dict[str, str]:
    out = {}
    for ev in result.get_step_failure_events():
        data = ev.step_failure_data
        desc = data.user_failure_data.description if data.user_failure_data else None
        out[ev.step_key] = desc or data.error.message
    return out


@dg.asset(key=["suite", "checkpoint_bounds"], metadata={**writes("bounds")})
def _bounds_writer() -> None:
    """A stand-in for the lead's per-family asset that writes `bounds`."""


def test_view_assets_depend_on_what_postgres_says_they_read(pg_engine, pg_url):
    defs = link_table_lineage(dg.Definitions(
        assets=[*build_sql_assets(), _bounds_writer],
        resources={"postgres": PostgresResource(database_url=pg_url)}))
    dg.Definitions.validate_loadable(defs)
    result = _materialize(defs, pg_url)
    assert result.success
    graph = defs.resolve_asset_graph()
    files = sorted(p.stem for p in (REPO / "dbt_like_sql").glob("*.sql"))
    assert {"latest_bounds", "checkpoint_health", "bound_breakdown", "bound_vs_loss",
            "bound_over_training", "scaling_fits"} <= set(files)
    with pg_engine.connect() as conn:
        for name in files:
            reads = conn.execute(sa.text(PG_READS), {"view": f'"{name}"'}).all()
            assert reads, f"{name}: PostgreSQL records no dependency"
            expected = set()
            for rel, kind in reads:
                if kind == "v":
                    expected.add(sql_key(rel))
                elif rel == "bounds":  # claimed by the writer asset: no table stand-in
                    expected.add(dg.AssetKey(["suite", "checkpoint_bounds"]))
                else:
                    assert rel in storage.TABLES
                    expected.add(table_key(rel))
            assert graph.get(sql_key(name)).parent_keys == expected, name
    # the stand-ins exist for unclaimed tables only
    keys = graph.get_all_asset_keys()
    assert table_key("checkpoints") in keys and table_key("bounds") not in keys


def test_the_code_location_has_one_asset_per_sql_file():
    from genbound_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    for f in (REPO / "dbt_like_sql").glob("*.sql"):
        node = graph.get(sql_key(f.stem))
        assert node.group_name == "sql"
        assert node.metadata[SQL_VIEW_KEY] == f.stem
    assert graph.get(sql_key("bound_breakdown")).parent_keys == {sql_key("bound_points")}


def test_writes_metadata_names_real_tables():
    assert writes("bounds", "models") == {"genbound/writes": ["bounds", "models"]}
    with pytest.raises(ValueError, match="unknown table"):
        writes("bound")

    @dg.asset(metadata={"genbound/writes": ["no_such_table"]})
    def typo() -> None: ...

    with pytest.raises(ValueError, match="typo.*no_such_table"):
        link_table_lineage(dg.Definitions(assets=[typo, *build_sql_assets()]))


@pytest.fixture
def sql_folder(tmp_path, monkeypatch):
    """A temp copy of dbt_like_sql/ that GENBOUND_SQL_DIR points at."""
    folder = tmp_path / "sql"
    shutil.copytree(REPO / "dbt_like_sql", folder)
    monkeypatch.setenv(storage.SQL_DIR_ENV, str(folder))
    return folder


def test_a_broken_file_fails_only_its_own_asset(pg_engine, pg_url, sql_folder):
    (sql_folder / "broken.sql").write_text(
        "-- a view with a syntax error on line 3\nSELECT model,\n       count(* AS n\nFROM models\n")
    (sql_folder / "refused.sql").write_text(  # parses, but PostgreSQL refuses it
        "SELECT model,\n       no_such_column\nFROM models\n")
    (sql_folder / "cycle_a.sql").write_text("SELECT * FROM cycle_b")
    (sql_folder / "cycle_b.sql").write_text("SELECT * FROM cycle_a")
    # the code location as definitions.py builds it, with GENBOUND_SQL_DIR read now
    defs = link_table_lineage(dg.load_from_defs_folder(path_within_project=REPO / "genbound_assets"))
    dg.Definitions.validate_loadable(defs)  # the code location still loads
    graph = defs.resolve_asset_graph()
    assert graph.get(sql_key("broken")).parent_keys == set()
    assert graph.get(sql_key("broken")).description.startswith("BROKEN: ")
    result = _materialize(defs, pg_url, raise_on_error=False)
    failed = _failures(result)
    assert set(failed) == {"sql__broken", "sql__refused", "sql__cycle_a", "sql__cycle_b"}
    msg = failed["sql__broken"]
    assert "broken.sql line 3, col" in msg and "\n" not in msg
    assert "refused.sql line 2: column \"no_such_column\" does not exist" in failed["sql__refused"]
    assert "cycle (cycle_a -> cycle_b -> cycle_a)" in failed["sql__cycle_a"]
    ok = {e.asset_key for e in result.get_asset_materialization_events()}
    assert {sql_key(p.stem) for p in (REPO / "dbt_like_sql").glob("*.sql")} <= ok
    # setup-db's path skips the same files and reports them
    report = storage.create_views_report(pg_engine, sql_folder)
    assert set(report.failed) == {"broken", "refused", "cycle_a", "cycle_b"}
    assert "latest_bounds" in report.created
    storage.create_views(pg_engine)  # back to the repo's views for the other tests


def test_rematerializing_an_edited_file_changes_the_view(pg_clean, pg_url, tmp_path, monkeypatch):
    folder = tmp_path / "views"
    folder.mkdir()
    monkeypatch.setenv(storage.SQL_DIR_ENV, str(folder))
    (folder / "v_models.sql").write_text("SELECT model, family FROM models")
    (folder / "v_reader.sql").write_text("SELECT model FROM v_models")
    with pg_clean.begin() as conn:
        conn.exec_driver_sql("INSERT INTO models (model, family, source_kind, n_params) "
                             "VALUES ('m1', 'f', 'local', 10), ('m2', 'g', 'local', 20)")

    def cols(view: str) -> list[str]:
        return [c["name"] for c in sa.inspect(pg_clean).get_columns(view)]

    def build():
        return link_table_lineage(dg.Definitions(assets=build_sql_assets()))

    assert _materialize(build(), pg_url).success
    assert cols("v_models") == ["model", "family"]
    # a column added at the end: replaced in place
    (folder / "v_models.sql").write_text("SELECT model, family, n_params FROM models")
    res = _materialize(build(), pg_url, selection=[sql_key("v_models")])
    assert res.success and cols("v_models") == ["model", "family", "n_params"]
    # a column removed: dropped and recreated, with the view that reads it
    (folder / "v_models.sql").write_text("SELECT model, n_params FROM models WHERE n_params > 15")
    res = _materialize(build(), pg_url, selection=[sql_key("v_models")])
    assert res.success
    (mat,) = res.asset_materializations_for_node("sql__v_models")
    assert mat.metadata["recreated_dependents"].value == ["v_reader"]
    assert mat.metadata["dagster/row_count"].value == 1
    assert cols("v_models") == ["model", "n_params"]
    assert storage.read_frame(pg_clean, "SELECT * FROM v_reader")["model"].to_list() == ["m2"]
    # an edit that breaks a reading view fails and leaves the old definition in place
    (folder / "v_models.sql").write_text("SELECT n_params FROM models")
    res = _materialize(build(), pg_url, selection=[sql_key("v_models")], raise_on_error=False)
    assert not res.success
    assert "recreating v_reader" in _failures(res)["sql__v_models"]
    assert cols("v_models") == ["model", "n_params"]
    with pg_clean.begin() as conn:
        conn.exec_driver_sql("DROP VIEW v_reader, v_models")


# ----------------------------------------------------------------------------- the views

EXPECTED_COLUMNS = {
    "checkpoint_health": [
        "model", "family", "n_checkpoints", "n_ok", "n_quarantined", "first_step", "last_step",
        "last_checked_at", "quarantined_steps", "quarantine_reasons"],
    "bound_breakdown": [
        "model", "n_params", "step", "tokens_seen", "n_train_tokens", "tokens_per_param",
        "nearest_compute_optimal", "method", "quantizer", "bits", "group_size",
        "code_length_method", "alpha", "loss_range_method", "delta", "sample", "n_sample",
        "subsample_method", "grid_size", "interpolated", "certified", "term_order", "term", "unit",
        "additive", "value", "share", "bound"],
    "bound_vs_loss": [
        "model", "family", "n_params", "step", "tokens_seen", "n_train_tokens",
        "tokens_per_param", "nearest_compute_optimal", "method", "quantizer", "bits",
        "group_size", "code_length_method", "alpha", "loss_range_method", "delta", "sample",
        "n_sample", "subsample_method", "grid_size", "certified", "empirical_risk", "bound", "gap",
        "gap_share", "random_guess_loss", "next_tokens_loss", "held_sample_loss"],
    "bound_over_training": [
        "model", "step", "tokens_seen", "method", "quantizer", "bits", "group_size",
        "code_length_method", "alpha", "loss_range_method", "delta", "sample", "n_sample",
        "subsample_method", "grid_size", "interpolated", "certified", "empirical_risk", "bound",
        "next_tokens_loss", "held_sample_loss"],
    "scaling_fits": [
        "quantity", "form", "selection", "form_text", "formula", "params_95ci", "a", "a_low",
        "a_high", "b", "b_low", "b_high", "c", "c_low", "c_high", "r2", "n_points", "certified",
        "computed_at"],
}


@pytest.fixture
def filled(pg_clean):
    storage.create_views(pg_clean)
    return sample_store.fill_store(pg_clean)


def test_views_exist_with_their_columns(pg_clean):
    storage.create_views(pg_clean)
    for view, columns in EXPECTED_COLUMNS.items():
        assert [c["name"] for c in sa.inspect(pg_clean).get_columns(view)] == columns, view


def test_checkpoint_health_counts_and_reasons(pg_clean, filled):
    df = storage.read_frame(pg_clean, "SELECT * FROM checkpoint_health ORDER BY model")
    assert df.height == len(sample_store.SIZES)
    model, step, reason = sample_store.QUARANTINED
    bad = df.filter(pl.col("model") == model).row(0, named=True)
    assert bad["n_quarantined"] == 1 and bad["n_ok"] == bad["n_checkpoints"] - 1
    assert bad["quarantined_steps"] == [step]
    assert bad["quarantine_reasons"] == f"step {step}: {reason}"
    good = df.filter(pl.col("model") != model)
    assert good["n_quarantined"].to_list() == [0] * 3 and good["quarantine_reasons"].null_count() == 3
    # a checkpoint of an unregistered model is listed too
    with pg_clean.begin() as conn:
        conn.exec_driver_sql("INSERT INTO checkpoints (model, step, status, quarantine_reason) "
                             "VALUES ('orphan', 5, 'quarantined', NULL)")
    row = storage.read_frame(pg_clean, "SELECT * FROM checkpoint_health WHERE model = 'orphan'")
    assert row.row(0, named=True)["quarantine_reasons"] == "step 5: (no reason recorded)"


def test_bound_breakdown_terms_add_up_to_the_bound(pg_clean, filled):
    df = storage.read_frame(pg_clean, "SELECT * FROM bound_breakdown")
    rows = {(r["model"], r["step"], r["method"], r["code_length_method"]): r for r in filled["bounds"]}
    assert df.select("model", "step", "method", "code_length_method").unique().height == len(rows)
    for (model, step, method, clm), g in df.group_by(["model", "step", "method", "code_length_method"]):
        src = rows[(model, step, method, clm)]
        additive = g.filter(pl.col("additive"))
        assert math.isclose(additive["value"].sum(), src["bound"], rel_tol=1e-12), (method, clm)
        assert math.isclose(additive["share"].sum(), 1.0, rel_tol=1e-12)
        terms = dict(zip(g["term"], g["value"], strict=True))
        assert terms["choice_cost_nats"] == src["choice_cost_nats"]
        assert g.filter(pl.col("term") == "choice_cost_nats")["share"].to_list() == [None]
        if method == "freedman_decomposed":
            assert "remainder" not in terms and set(additive["term"]) == {
                "empirical_risk", "random_guess_term", "loss_variation_term", "smoothing_term",
                "quantization_gap", "subsample_term"}
        else:  # the gap is stored but is not a summand of these bounds
            gap = g.filter(pl.col("term") == "quantization_gap").row(0, named=True)
            assert gap["additive"] is False and gap["share"] is None
            expected = src["bound"] - src["empirical_risk"] - src["loss_variation_term"] - src["subsample_term"]
            assert terms.get("remainder", 0.0) == pytest.approx(expected, abs=1e-12)


def test_bound_vs_loss_marks_the_compute_optimal_rows(pg_clean, filled):
    df = storage.read_frame(pg_clean, "SELECT * FROM bound_vs_loss")
    assert df.height == len(filled["bounds"])
    opt = df.filter(pl.col("nearest_compute_optimal"))
    assert opt.height == len(sample_store.SIZES) * 4  # one per model and configuration
    for r in opt.iter_rows(named=True):
        assert r["step"] == filled["steps"][r["model"]]["optimal"]
        assert r["tokens_per_param"] == pytest.approx(r["n_train_tokens"] / r["n_params"])
        assert r["gap"] == pytest.approx(r["bound"] - r["empirical_risk"], abs=1e-12)
        assert r["random_guess_loss"] == pytest.approx(math.log(sample_store.V))
        assert r["next_tokens_loss"] is not None and r["held_sample_loss"] is None


def test_bound_over_training_joins_bounds_and_losses(pg_clean, filled):
    df = storage.read_frame(pg_clean, "SELECT * FROM bound_over_training")
    n_loss_steps = storage.read_frame(pg_clean, "SELECT count(*) AS n FROM checkpoint_losses")["n"][0]
    bound_steps = {(r["model"], r["step"]) for r in filled["bounds"]}
    only_losses = df.filter(pl.col("method").is_null())
    assert only_losses.height == n_loss_steps - len(bound_steps)
    assert df.filter(pl.col("method").is_not_null()).height == len(filled["bounds"])
    assert df["tokens_seen"].null_count() == 0 and df["next_tokens_loss"].null_count() == 0


def test_scaling_fits_reads_like_the_paper(pg_clean):
    storage.create_views(pg_clean)
    import json

    storage.replace_partition(pg_clean, "power_law_fits", {}, pl.DataFrame([
        {"quantity": "sigma", "form": "offset_power", "params": json.dumps({"a": 0.27, "b": 8337.2, "c": 0.54}),
         "ci_low": json.dumps({"a": 0.2, "b": 1000.0, "c": 0.41}),
         "ci_high": json.dumps({"a": 0.33, "b": 60000.0, "c": 0.661}), "r2": 0.98, "n_points": 8},
        {"quantity": "prequential_bits", "form": "power", "params": json.dumps({"a": 6e5, "c": 0.5}),
         "ci_low": json.dumps({"a": 1.5e5, "c": 0.4}), "ci_high": json.dumps({"a": 2.4e6, "c": 0.6}),
         "r2": 0.9, "n_points": 8},
    ]))
    df = storage.read_frame(pg_clean, "SELECT * FROM scaling_fits ORDER BY quantity")
    pre, sig = df.rows(named=True)
    assert sig["formula"] == "Σ(N) = 0.27 + 8337·N^−0.54"
    assert sig["params_95ci"] == "a = 0.27 [0.2, 0.33], b = 8337 [1000, 60000], c = 0.54 [0.41, 0.661]"
    assert (sig["b"], sig["b_low"], sig["c_high"]) == (8337.2, 1000.0, 0.661)
    assert pre["formula"] == "prequential_bits(N) = 600000·N^0.5" and pre["form_text"] == "y = a·N^c"
