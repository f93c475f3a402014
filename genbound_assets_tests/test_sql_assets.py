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
    "latest_bounds": [
        "model", "family", "step", "tokens_seen", "method", "role", "design", "quantizer", "bits",
        "group_size", "code_length_method", "alpha", "loss_range_method", "delta", "sample",
        "n_sample", "subsample_method", "grid_size", "empirical_risk", "complexity", "bound",
        "certified", "computed_at"],
    "bound_points": [
        "model", "family", "step", "tokens_seen", "method", "role", "design", "quantizer", "bits",
        "group_size", "quantize_embeddings", "code_length_method", "alpha", "loss_range_method",
        "delta", "sample", "n_sample", "subsample_method", "grid_size", "interpolated",
        "certified", "n_params", "n_train_tokens", "tokens_per_param", "n_over_d", "vocab_size",
        "code_length_bits", "bits_per_param", "loss_range", "complexity", "sigma", "s_star",
        "empirical_risk", "random_guess_term", "loss_variation_term", "smoothing_term",
        "quantization_gap", "subsample_term", "choice_cost_nats", "bound", "computed_at",
        "at_compute_optimal"],
    "bound_breakdown": [
        "model", "family", "n_params", "step", "tokens_seen", "n_train_tokens", "tokens_per_param",
        "at_compute_optimal", "method", "role", "design", "quantizer", "bits", "group_size",
        "code_length_method", "alpha", "loss_range_method", "delta", "sample", "n_sample",
        "subsample_method", "grid_size", "interpolated", "certified", "term_order", "term", "unit",
        "additive", "value", "share", "bound"],
    "bound_vs_loss": [
        "model", "family", "n_params", "step", "tokens_seen", "n_train_tokens",
        "tokens_per_param", "at_compute_optimal", "method", "role", "design", "quantizer", "bits",
        "group_size", "code_length_method", "alpha", "loss_range_method", "delta", "sample",
        "n_sample", "subsample_method", "grid_size", "certified", "empirical_risk", "bound", "gap",
        "gap_share", "random_guess_loss", "next_tokens_loss", "held_sample_loss"],
    "bound_over_training": [
        "model", "family", "n_params", "step", "tokens_seen", "n_train_tokens",
        "tokens_per_param", "at_compute_optimal", "headline", "headline_certified",
        "headline_empirical_risk", "empirical_risk_h", "decomposed", "azuma", "paper_recipe",
        "prequential_bits", "delta", "design", "next_tokens_loss", "held_sample_loss"],
    "frontier": [
        "family", "model", "n_params", "n_train_tokens", "n_over_d", "tokens_per_param", "d_star",
        "target_tokens_per_param", "step", "step_lo", "step_hi", "weight_hi", "interpolated",
        "delta", "design", "quantizer", "bits", "group_size", "code_length_method",
        "empirical_risk_h", "empirical_risk_sq", "headline", "direct_freedman", "decomposed",
        "azuma", "paper_recipe", "headline_gap", "paper_recipe_gap", "gap_ratio", "sigma",
        "code_length_bits", "bits_per_param", "nominal_bits", "prequential_bits",
        "random_guess_loss", "certified", "note"],
    "scaling_fits": [
        "family", "quantity", "form", "selection", "status", "note", "unit", "source",
        "form_text", "formula", "params_95ci", "a", "a_low", "a_high", "b", "b_low", "b_high", "c",
        "c_low", "c_high", "r2", "n_points", "extrapolated_n", "extrapolated_value",
        "extrapolated_ci_low", "extrapolated_ci_high", "extrapolated_pi_low",
        "extrapolated_pi_high", "certified", "computed_at"],
}


@pytest.fixture
def filled(pg_clean):
    storage.create_views(pg_clean)
    return sample_store.fill_store(pg_clean)


def test_views_exist_with_their_columns(pg_clean):
    storage.create_views(pg_clean)
    assert set(EXPECTED_COLUMNS) == {p.stem for p in (REPO / "dbt_like_sql").glob("*.sql")}
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
    df = storage.read_frame(pg_clean, "SELECT * FROM bound_breakdown WHERE NOT interpolated")
    rows = {(r["model"], r["step"], r["method"]): r for r in filled["bounds"]}
    assert df.select("model", "step", "method").unique().height == len(rows)
    summands = {
        "headline": {"empirical_risk", "range_term", "loss_variation_term", "subsample_term"},
        "freedman_decomposed": {"empirical_risk", "random_guess_term", "loss_variation_term",
                                "smoothing_term", "quantization_gap", "subsample_term"},
        "paper_recipe": {"empirical_risk", "random_guess_term", "loss_variation_term",
                         "smoothing_term", "quantization_gap", "subsample_term"},
        "azuma": {"empirical_risk", "loss_variation_term", "subsample_term"},
    }
    for (model, step, method), g in df.group_by(["model", "step", "method"]):
        src = rows[(model, step, method)]
        additive = g.filter(pl.col("additive"))
        terms = dict(zip(g["term"], g["value"], strict=True))
        assert g["role"].unique().to_list() == [src["role"]]
        if method == "prequential":   # an estimate: no bound, nothing adds up
            assert additive.height == 0 and g["share"].null_count() == g.height
            continue
        assert set(additive["term"]) == summands[method], method   # no remainder anywhere
        assert math.isclose(additive["value"].sum(), src["bound"], rel_tol=1e-12), method
        assert math.isclose(additive["share"].sum(), 1.0, rel_tol=1e-12)
        assert terms["choice_cost_nats"] == src["choice_cost_nats"]
        assert g.filter(pl.col("term") == "choice_cost_nats")["share"].to_list() == [None]
        if method == "headline":
            assert terms["range_term"] == pytest.approx(src["loss_range"] * src["complexity"])
        if method in ("headline", "azuma"):   # stored, but not a summand of these bounds
            gap = g.filter(pl.col("term") == "quantization_gap").row(0, named=True)
            assert gap["additive"] is False and gap["share"] is None
    # interpolated rows: a product of interpolated numbers is not interpolated, so the headline's
    # range term leaves a remainder that makes the terms add up to the row's bound again
    interp = storage.read_frame(pg_clean, "SELECT * FROM bound_breakdown WHERE interpolated "
                                          "AND method = 'headline' AND additive")
    bound = interp["bound"][0]
    assert "remainder" in interp["term"].to_list()
    assert interp["value"].sum() == pytest.approx(bound, rel=1e-12)


def test_compute_optimal_selection_marks_the_rows(pg_clean, filled):
    """at_compute_optimal follows the compute_optimal table: the certified step's measured rows,
    or the interpolated rows of a bracketed model (not the 'nearest D/N' guess)."""
    df = storage.read_frame(pg_clean, "SELECT * FROM bound_points WHERE at_compute_optimal")
    for model, co in filled["compute_optimal"].items():
        rows = df.filter(pl.col("model") == model)
        if co["certified"]:
            assert set(rows["step"]) == {co["step"]} and not rows["interpolated"].any()
            assert set(rows["method"]) == set(sample_store.METHODS)
        else:
            assert set(rows["step"]) == {co["step_hi"]} and rows["interpolated"].all()
            assert not rows["certified"].any() and set(rows["role"]) == {"estimate"}
    vs = storage.read_frame(pg_clean, "SELECT * FROM bound_vs_loss")
    measured = [r for r in filled["bounds"] if r["bound"] is not None]
    assert vs.height == len(measured)        # no interpolated or prequential rows
    opt = vs.filter(pl.col("at_compute_optimal"))
    assert opt.height == 4 * (len(sample_store.SIZES) - 1)
    for r in opt.iter_rows(named=True):
        assert r["step"] == filled["compute_optimal"][r["model"]]["step"]
        assert r["tokens_per_param"] == pytest.approx(r["n_train_tokens"] / r["n_params"])
        assert r["gap"] == pytest.approx(r["bound"] - r["empirical_risk"], abs=1e-12)
        assert r["random_guess_loss"] == pytest.approx(math.log(sample_store.V))
        assert r["next_tokens_loss"] is not None and r["held_sample_loss"] is None


def test_frontier_has_one_row_per_model_with_every_bound(pg_clean, filled):
    df = storage.read_frame(pg_clean, "SELECT * FROM frontier ORDER BY n_params")
    assert df["model"].to_list() == list(sample_store.SIZES)
    by = {(r["model"], r["step"], r["method"], r["interpolated"]): r
          for r in [*filled["bounds"], *filled["interpolated"]]}
    for f in df.iter_rows(named=True):
        co = filled["compute_optimal"][f["model"]]
        interp = not co["certified"]
        step = co["step_hi"] if interp else co["step"]

        def row(method, f=f, step=step, interp=interp):
            return by[(f["model"], step, method, interp)]

        assert f["interpolated"] is interp and f["certified"] is not interp
        assert f["headline"] == f["direct_freedman"] == row("headline")["bound"]
        assert f["decomposed"] == row("freedman_decomposed")["bound"]
        assert f["azuma"] == row("azuma")["bound"]
        assert f["paper_recipe"] == row("paper_recipe")["bound"]
        r_h = row("freedman_decomposed")["empirical_risk"]
        assert f["empirical_risk_h"] == r_h
        assert f["headline_gap"] == pytest.approx(f["headline"] - r_h)
        assert f["gap_ratio"] == pytest.approx((f["headline"] - r_h) / (f["paper_recipe"] - r_h))
        assert f["sigma"] == row("freedman_decomposed")["sigma"]
        assert f["n_train_tokens"] == (co["d_star"] if interp else co["n_train_tokens"])
        assert f["n_over_d"] == pytest.approx(f["n_params"] / f["n_train_tokens"])
        assert f["nominal_bits"] == 4.0 * f["n_params"]
        point = next(p for p in filled["points"] if p.model == f["model"])
        assert f["prequential_bits"] == pytest.approx(point.values["prequential_bits"])
        assert f["headline"] == pytest.approx(point.values["headline"])
    # a model whose selection found nothing yet still has its row, with the reason
    with pg_clean.begin() as conn:
        conn.exec_driver_sql("INSERT INTO compute_optimal (model, n_params, d_star, note) "
                             "VALUES ('new-model', 5, 100, 'no bounded checkpoint yet')")
    new = storage.read_frame(pg_clean, "SELECT * FROM frontier WHERE model = 'new-model'")
    assert new.height == 1 and new["headline"][0] is None and new["certified"][0] is False
    assert new["note"][0] == "no bounded checkpoint yet"


def test_bound_over_training_is_headline_and_loss_by_step(pg_clean, filled):
    df = storage.read_frame(pg_clean, "SELECT * FROM bound_over_training")
    assert df.select("model", "step").unique().height == df.height      # one row per step
    n_loss_steps = storage.read_frame(pg_clean, "SELECT count(*) AS n FROM checkpoint_losses")["n"][0]
    assert df.height == n_loss_steps
    heads = {(r["model"], r["step"]): r for r in filled["bounds"] if r["method"] == "headline"}
    with_bound = df.filter(pl.col("headline").is_not_null())
    assert with_bound.height == len(heads)
    for r in with_bound.iter_rows(named=True):
        h = heads[(r["model"], r["step"])]
        assert r["headline"] == h["bound"] and r["headline_certified"]
        assert r["headline_empirical_risk"] == h["empirical_risk"]
        assert r["at_compute_optimal"] == (r["step"] == filled["compute_optimal"][r["model"]].get("step"))
        assert r["prequential_bits"] is not None and r["paper_recipe"] is not None
    assert df["tokens_seen"].null_count() == 0 and df["next_tokens_loss"].null_count() == 0


def test_scaling_fits_reads_like_the_paper(pg_clean):
    storage.create_views(pg_clean)
    import json

    storage.replace_partition(pg_clean, "power_law_fits", {}, pl.DataFrame([
        {"family": "pythia", "quantity": "sigma", "form": "offset_power",
         "params": json.dumps({"a": 0.27, "b": 8337.2, "c": 0.54}),
         "ci_low": json.dumps({"a": 0.2, "b": 1000.0, "c": 0.41}),
         "ci_high": json.dumps({"a": 0.33, "b": 60000.0, "c": 0.661}), "r2": 0.98, "n_points": 8,
         "status": "ok"},
        {"family": "pythia", "quantity": "prequential_bits", "form": "power",
         "params": json.dumps({"a": 6e5, "c": 0.5}),
         "ci_low": json.dumps({"a": 1.5e5, "c": 0.4}), "ci_high": json.dumps({"a": 2.4e6, "c": 0.6}),
         "r2": 0.9, "n_points": 8, "status": "ok"},
        {"family": "pythia", "quantity": "quantization_gap", "form": "power",
         "params": json.dumps({"a": 2.1e-8, "c": -0.3}),
         "ci_low": json.dumps({"a": 3e-15, "c": -0.4}), "ci_high": json.dumps({"a": 0.14, "c": -0.2}),
         "r2": 0.7, "n_points": 8, "status": "ok"},
        {"family": "suite", "quantity": "sigma", "form": "offset_power",
         "status": "not_enough_sizes", "note": "not enough sizes: 2 model size(s)", "n_points": 2},
    ]))
    df = storage.read_frame(pg_clean, "SELECT * FROM scaling_fits ORDER BY family, quantity")
    pre, gap, sig, few = df.rows(named=True)
    assert sig["formula"] == "Σ(N) = 0.27 + 8337·N^−0.54"
    assert sig["params_95ci"] == "a = 0.27 [0.2, 0.33], b = 8337 [1000, 60000], c = 0.54 [0.41, 0.661]"
    assert (sig["b"], sig["b_low"], sig["c_high"]) == (8337.2, 1000.0, 0.661)
    assert pre["formula"] == "K(h)(N) = 600000·N^0.5" and pre["form_text"] == "y = a·N^c"
    assert gap["formula"] == "quantization_gap(N) = 2.100e-08·N^−0.3"
    assert few["family"] == "suite" and few["status"] == "not_enough_sizes"
    assert few["formula"] is None and few["params_95ci"] is None and few["n_points"] == 2


def test_stored_fits_and_extrapolation_in_the_view(pg_clean, filled):
    df = storage.read_frame(pg_clean, "SELECT * FROM scaling_fits WHERE family = :f",
                            {"f": sample_store.FAMILY})
    assert df.height == len(filled["fits"]) and not df["certified"].any()
    for f in filled["fits"]:
        r = df.filter((pl.col("quantity") == f.quantity) & (pl.col("form") == f.form)).row(0, named=True)
        assert r["status"] == f.status and r["n_points"] == f.n_points
        if f.status == "ok":
            assert r["c"] == pytest.approx(f.params["c"]) and r["r2"] == pytest.approx(f.r2)
            assert r["formula"].startswith({"sigma": "Σ(N) = "}.get(f.quantity, ""))
        else:
            assert r["formula"] is None and r["note"] == f.note
        if f.extrapolation:
            assert r["extrapolated_n"] == pytest.approx(10 * max(f.x))
            assert r["extrapolated_ci_low"] < r["extrapolated_value"] < r["extrapolated_ci_high"]
    # the sample's Σ follows 0.27 + 30·N^−0.5 exactly: recovered
    sig = df.filter(pl.col("quantity") == "sigma").row(0, named=True)
    assert sig["c"] == pytest.approx(0.5, rel=1e-6) and sig["a"] == pytest.approx(0.27, rel=1e-6)
