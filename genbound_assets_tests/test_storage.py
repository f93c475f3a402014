"""The Postgres store against a real PostgreSQL (conftest: pg_engine / pg_clean)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from genbound_assets import storage
from genbound_assets.storage import io as sio


def token_loss_frame(n: int, seed: int = 0, sample: str = "bound-a") -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    # every float64 exponent range, plus the values text formats usually get wrong
    loss = rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n)
    special = [0.1, 1 / 3, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
               np.nan, np.inf, -np.inf, 2.0**-1074 * 3]
    loss[: min(n, len(special))] = special[:n]
    return pl.DataFrame({
        "sample": sample,
        "i": np.arange(n, dtype=np.int32),
        "position": rng.integers(0, 1 << 45, n),
        "loss": loss,
        "entropy": rng.random(n),
    })


def count(engine, table: str, where: str = "true", **params) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"select count(*) from {table} where {where}"), params).scalar()


# ----------------------------------------------------------------------------- schema


def test_schema_creation_is_idempotent(pg_engine):
    assert storage.create_schema(pg_engine) == []  # conftest already created it
    assert storage.create_schema(pg_engine) == []
    names = set(sa.inspect(pg_engine).get_table_names())
    assert set(storage.TABLES) <= names
    assert storage.TABLES == (
        "models", "checkpoints", "token_samples", "token_losses", "checkpoint_losses",
        "quantized_models", "hessian_spectra", "bounds", "token_loss_sets", "token_loss_arrays",
        "compute_optimal", "power_law_fits",
    )
    for table in storage.TABLES:  # every table is stamped
        cols = {c["name"] for c in sa.inspect(pg_engine).get_columns(table)}
        assert cols & {"computed_at", "created_at"}, table


def test_create_schema_adds_columns_an_older_database_lacks(pg_engine):
    with pg_engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE bounds DROP COLUMN delta_split")  # no view reads it
        conn.exec_driver_sql("ALTER TABLE models DROP COLUMN config")
    assert sorted(storage.create_schema(pg_engine)) == ["bounds.delta_split", "models.config"]
    assert storage.create_schema(pg_engine) == []


def test_enum_columns_are_checked(pg_clean):
    frame = pl.DataFrame({"model": ["m"], "family": ["f"], "source_kind": ["github"]})
    with pytest.raises(IntegrityError, match="models_source_kind_check"):
        storage.replace_partition(pg_clean, "models", {"model": "m"}, frame)


# ----------------------------------------------------------------------------- bulk writes


def test_copy_100k_token_losses_round_trips_bit_exact(pg_clean):
    n = 100_000
    frame = token_loss_frame(n)
    key = {"model": "pythia-70m", "step": 1000}
    assert storage.replace_partition(pg_clean, "token_losses", key, frame) == n
    back = storage.read_frame(
        pg_clean,
        "select * from token_losses where model = :model and step = :step order by i",
        key,
    )
    assert back.height == n
    for col in ("loss", "entropy"):
        sent = frame[col].to_numpy().view(np.uint64)
        got = back[col].to_numpy().view(np.uint64)
        nan = np.isnan(frame[col].to_numpy())
        assert np.array_equal(sent[~nan], got[~nan]), col
        assert np.isnan(back[col].to_numpy()[nan]).all()
    assert back["position"].to_list() == frame["position"].to_list()
    assert back["i"].to_list() == frame["i"].to_list()
    assert set(back["model"]) == {"pythia-70m"} and set(back["quantizer"]) == {"none"}
    assert back.schema["computed_at"] == pl.Datetime("us", "UTC")
    # the slow (row) path gives the same frame as the COPY path
    with pg_clean.connect() as conn:
        rows = sio._read_rows(conn, sa.text("select * from token_losses order by i limit 50"), {})
    fast = storage.read_frame(pg_clean, "select * from token_losses order by i limit 50")
    assert rows.equals(fast, null_equal=True) and rows.schema == fast.schema


def test_rewriting_a_partition_gives_identical_row_counts(pg_clean):
    key_a = {"model": "m", "step": 1}
    key_b = {"model": "m", "step": 2}
    storage.replace_partition(pg_clean, "token_losses", key_a, token_loss_frame(500))
    storage.replace_partition(pg_clean, "token_losses", key_b, token_loss_frame(300, seed=1))
    for _ in range(2):
        storage.replace_partition(pg_clean, "token_losses", key_a, token_loss_frame(500, seed=2))
        assert count(pg_clean, "token_losses", "step = 1") == 500
        assert count(pg_clean, "token_losses", "step = 2") == 300
    # a smaller rewrite shrinks the partition: nothing of the old one survives
    storage.replace_partition(pg_clean, "token_losses", key_a, token_loss_frame(10, seed=3))
    assert count(pg_clean, "token_losses", "step = 1") == 10
    # an empty frame empties just that partition
    storage.replace_partition(pg_clean, "token_losses", key_a, token_loss_frame(0))
    assert count(pg_clean, "token_losses") == 300


def test_a_write_that_fails_midway_leaves_previous_rows(pg_clean, monkeypatch):
    key = {"model": "m", "step": 7}
    before = token_loss_frame(5_000, seed=4)
    storage.replace_partition(pg_clean, "token_losses", key, before)
    snapshot = storage.read_frame(pg_clean, "select i, loss from token_losses order by i")

    # several COPY chunks go in after the DELETE; the last chunk repeats a primary key
    monkeypatch.setattr(sio, "COPY_CHUNK_ROWS", 1_000)
    bad = token_loss_frame(6_000, seed=5)
    bad = bad.with_columns(pl.when(pl.col("i") == 5_999).then(0).otherwise(pl.col("i")).alias("i"))
    with pytest.raises(IntegrityError, match="token_losses_pkey"):
        storage.replace_partition(pg_clean, "token_losses", key, bad)
    after = storage.read_frame(pg_clean, "select i, loss from token_losses order by i")
    assert after.equals(snapshot)

    # same when a value is rejected by a CHECK constraint in the last chunk
    bad = token_loss_frame(6_000, seed=6).with_columns(
        pl.when(pl.col("i") == 5_500).then(pl.lit("bogus")).otherwise(pl.lit("none")).alias("quantizer")
    )
    with pytest.raises(IntegrityError):
        storage.replace_partition(pg_clean, "token_losses", key, bad)
    assert storage.read_frame(pg_clean, "select i, loss from token_losses order by i").equals(snapshot)


def test_frame_validation_names_missing_and_extra_columns(pg_clean):
    frame = token_loss_frame(3).drop("loss").with_columns(pl.lit(1.0).alias("los"))
    with pytest.raises(ValueError) as err:
        storage.replace_partition(pg_clean, "token_losses", {"model": "m", "step": 1}, frame)
    msg = str(err.value)
    assert "missing required column(s) ['loss']" in msg and "unknown column(s) ['los']" in msg
    # key columns come from the key; a frame row outside the partition is refused
    frame = token_loss_frame(3).with_columns(pl.Series("step", [1, 1, 2]))
    with pytest.raises(ValueError, match="outside the partition"):
        storage.replace_partition(pg_clean, "token_losses", {"model": "m", "step": 1}, frame)
    with pytest.raises(ValueError, match="unknown column"):
        storage.replace_partition(pg_clean, "token_losses", {"modle": "m"}, token_loss_frame(1))
    with pytest.raises(ValueError, match="unknown table 'token_loss'"):
        storage.replace_partition(pg_clean, "token_loss", {}, token_loss_frame(1))
    assert count(pg_clean, "token_losses") == 0


def test_arrays_and_json_round_trip(pg_clean):
    nodes = [0.1, -0.0, 1e-300, float("inf"), 1 / 3]
    spectra = pl.DataFrame({
        "model": ["m"], "step": [5], "n_lanczos": [30], "n_vectors": [4], "seed": [0],
        "n_batch_tokens": [4096], "trace_slq": [12.5],
        "ritz_nodes": [nodes], "ritz_weights": [[0.2] * 5],
    })
    storage.replace_partition(pg_clean, "hessian_spectra", {"model": "m", "step": 5}, spectra)
    got = storage.read_frame(pg_clean, "select ritz_nodes, density from hessian_spectra")
    assert got.schema["ritz_nodes"] == pl.List(pl.Float64)
    assert np.array_equal(np.array(got["ritz_nodes"][0]).view(np.uint64), np.array(nodes).view(np.uint64))
    assert got["density"][0] is None

    fits = pl.DataFrame({
        "quantity": ["bound"], "form": ["offset_power"], "selection": ["pythia final"],
        "params": [{"a": 0.1, "b": 1 / 3, "c": 2.0}], "residuals": [[0.5, -0.25]], "r2": [0.99],
    })
    storage.replace_partition(pg_clean, "power_law_fits", {"quantity": "bound"}, fits)
    got = storage.read_frame(pg_clean, "select params, residuals, certified from power_law_fits")
    import json

    assert json.loads(got["params"][0]) == {"a": 0.1, "b": 1 / 3, "c": 2.0}
    assert got["residuals"].to_list() == [[0.5, -0.25]] and got["certified"].to_list() == [False]


def test_read_frame_keeps_types_on_empty_results_and_binds_params(pg_clean):
    empty = storage.read_frame(pg_clean, "select * from bounds where model = :m", {"m": "none"})
    assert empty.height == 0
    assert empty.schema["bound"] == pl.Float64 and empty.schema["n_params"] == pl.Int64
    assert empty.schema["certified"] == pl.Boolean and empty.schema["delta_split"] == pl.String
    odd = storage.read_frame(
        pg_clean,
        "select :s as s, '' as empty, null::text as nothing, 5::bigint as big, true as t, "
        "null::boolean as nb, '50%' as pct, 2.5::numeric as num",
        {"s": "it's \"quoted\",\nmultiline"},
    )
    assert odd.row(0) == ('it\'s "quoted",\nmultiline', "", None, 5, True, None, "50%", 2.5)


# ----------------------------------------------------------------------------- views


def test_latest_bounds_view(pg_clean):
    def bound_rows(step: int, value: float, interpolated: bool = False) -> pl.DataFrame:
        return pl.DataFrame({
            "model": ["pythia-70m"], "step": [step], "method": ["freedman_decomposed"],
            "code_length_method": ["stored"], "loss_range_method": ["tight"], "delta": [0.01],
            "n_sample": [10_000], "bound": [value], "interpolated": [interpolated],
        })

    for step, value in [(1000, 9.0), (143000, 4.5), (2000, 8.0)]:
        storage.replace_partition(pg_clean, "bounds", {"model": "pythia-70m", "step": step},
                                  bound_rows(step, value))
    storage.replace_partition(pg_clean, "bounds", {"model": "pythia-70m", "step": 200000},
                              bound_rows(200000, 1.0, interpolated=True))
    storage.replace_partition(pg_clean, "checkpoints", {"model": "pythia-70m"},
                              pl.DataFrame({"step": [143000], "tokens_seen": [299_892_736_000]}))
    latest = storage.read_frame(pg_clean, "select model, step, tokens_seen, bound from latest_bounds")
    assert latest.rows() == [("pythia-70m", 143000, 299_892_736_000, 4.5)]


def test_create_views_from_a_folder(pg_engine, tmp_path):
    (tmp_path / "a_counts.sql").write_text("-- counts\nselect count(*) as n from models;\n")
    (tmp_path / "b_twice.sql").write_text("select n * 2 as n2 from a_counts")
    assert storage.create_views(pg_engine, tmp_path) == ["a_counts", "b_twice"]
    assert storage.create_views(pg_engine, tmp_path) == ["a_counts", "b_twice"]  # idempotent
    (tmp_path / "b_twice.sql").unlink()
    storage.create_views(pg_engine, tmp_path)
    views = set(sa.inspect(pg_engine).get_view_names())
    assert "a_counts" in views and "b_twice" not in views and "latest_bounds" not in views
    (tmp_path / "c_bad.sql").write_text("delete from models")
    report = storage.create_views_report(pg_engine, tmp_path)  # a bad file is skipped, reported
    assert report.created == ["a_counts"] and "must hold one SELECT" in report.failed["c_bad"]
    assert "latest_bounds" in storage.create_views(pg_engine)  # back to the repo's folder
    assert "a_counts" not in set(sa.inspect(pg_engine).get_view_names())


# ----------------------------------------------------------------------------- connection


@pytest.mark.parametrize("url", [
    "mysql://u@localhost/db",  # plain postgresql:// is accepted: test_reader_role.py
    "postgresql+psycopg://u@localhost/db", "sqlite:///x.db", "not a url",
])
def test_bad_urls_are_rejected_naming_the_variable(monkeypatch, url):
    monkeypatch.setenv(storage.DATABASE_URL_ENV, url)
    with pytest.raises(storage.StoreError) as err:
        storage.get_engine()
    msg = str(err.value)
    assert "GENBOUND_DATABASE_URL" in msg and "\n" not in msg


def test_unreachable_database_is_one_line(monkeypatch):
    monkeypatch.setenv(storage.DATABASE_URL_ENV, "postgresql+psycopg2://u:secret@127.0.0.1:1/db")
    with pytest.raises(storage.StoreError) as err:
        storage.get_engine()
    msg = str(err.value)
    assert msg.startswith("cannot connect to the database at GENBOUND_DATABASE_URL=")
    assert "\n" not in msg and "secret" not in msg


def test_env_url_is_used_when_set(pg_url):
    assert storage.database_url() == pg_url
    assert storage.database_url("postgresql+psycopg2://x@h/db") == "postgresql+psycopg2://x@h/db"
