"""The read-only role genbound_reader, `genbound sql` running as it, and the connection URLs
people already have (plain postgresql:// and postgres://).

Writes are refused by PostgreSQL's privilege checks: each of the six statements is sent both
through the CLI (one-line error, exit 1) and through a plain SQLAlchemy connection as the role
(SQLSTATE 42501 insufficient_privilege), and the data is checked unchanged afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat

import polars as pl
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from genbound_assets import storage
from genbound_assets.cli import main
from genbound_assets.storage.reader import READER_ROLE, reader_password_file


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def store(pg_clean):
    """The clean test store with the views, the role set up, and one model and bound row."""
    storage.create_views(pg_clean)
    storage.setup_reader(pg_clean)
    storage.replace_partition(pg_clean, "models", {"model": "m"}, pl.DataFrame(
        {"family": ["f"], "source_kind": ["local"], "n_params": [1000]}))
    storage.replace_partition(pg_clean, "bounds", {"model": "m"}, pl.DataFrame({
        "step": [10], "method": ["azuma"], "code_length_method": ["stored"],
        "loss_range_method": ["azuma_width"], "delta": [0.01], "n_sample": [100],
        "bound": [4.25], "empirical_risk": [3.5], "certified": [True]}))
    return pg_clean


WRITES = [
    ("INSERT INTO models (model, family, source_kind) VALUES ('x', 'f', 'local')",
     "permission denied for table models"),
    ("UPDATE bounds SET bound = 0", "permission denied for table bounds"),
    ("DELETE FROM bounds", "permission denied for table bounds"),
    ("CREATE TABLE scratch (i int)", "permission denied for schema public"),
    ("DROP TABLE bounds", "must be owner of table bounds"),
    ("TRUNCATE bounds", "permission denied for table bounds"),
]


@pytest.mark.parametrize("statement,message", WRITES, ids=[w[0].split()[0] for w in WRITES])
def test_writes_are_refused_by_postgres(store, statement, message):
    res = run("sql", statement)
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr == f"genbound: error: {message}\n"
    # the same statement from any client connected as the role: PostgreSQL refuses it
    engine = sa.create_engine(storage.reader_url())
    try:
        with pytest.raises(sa.exc.DBAPIError) as err, engine.begin() as conn:
            conn.exec_driver_sql(statement)
        assert err.value.orig.pgcode == "42501" and message in str(err.value.orig)
    finally:
        engine.dispose()
    assert storage.read_frame(store, "SELECT model, step, bound FROM bounds").rows() == [("m", 10, 4.25)]
    assert storage.read_frame(store, "SELECT count(*) AS n FROM models")["n"][0] == 1
    assert "scratch" not in sa.inspect(store).get_table_names()


def test_the_role_may_read_everything_and_do_nothing_else(store):
    with store.connect() as conn:
        role = conn.execute(sa.text(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
            "rolbypassrls FROM pg_roles WHERE rolname = :r"), {"r": READER_ROLE}).one()
        assert tuple(role) == (True, False, False, False, False, False)
        rels = conn.execute(sa.text(
            "SELECT c.relname, c.relkind, "
            "has_table_privilege(:r, c.oid, 'SELECT'), "
            "has_table_privilege(:r, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v')"), {"r": READER_ROLE}).all()
        names = {r[0] for r in rels}
        assert set(storage.TABLES) <= names and {"latest_bounds", "bound_breakdown"} <= names
        assert all(r[2] and not r[3] for r in rels), [r for r in rels if not r[2] or r[3]]
        assert conn.execute(sa.text("SELECT has_schema_privilege(:r, current_schema(), 'CREATE')"),
                            {"r": READER_ROLE}).scalar_one() is False
        # no membership in another role (it could SET ROLE to it)
        assert conn.execute(sa.text(
            "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
            "WHERE r.rolname = :r"), {"r": READER_ROLE}).scalar_one() == 0


def test_tables_and_views_created_later_are_readable(store):
    with store.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE later_table (i int)")
        conn.exec_driver_sql("INSERT INTO later_table VALUES (7)")
        conn.exec_driver_sql("CREATE VIEW later_view AS SELECT i * 2 AS j FROM later_table")
    try:
        assert run("sql", "SELECT j FROM later_view", "--csv").stdout == "j\n14\n"
    finally:
        with store.begin() as conn:
            conn.exec_driver_sql("DROP VIEW later_view; DROP TABLE later_table")


def test_sql_prints_table_csv_and_json(store):
    q = "SELECT model, step, bound, certified, 'NaN'::float8 AS nan, 1.5::numeric AS num, '50%' AS pct FROM latest_bounds"
    table = run("sql", q)
    assert table.exit_code == 0 and table.stdout.splitlines()[-1] == "(1 row)"
    assert run("sql", q, "--csv").stdout.splitlines() == [
        "model,step,bound,certified,nan,num,pct", "m,10,4.25,True,nan,1.5,50%"]
    out = run("sql", q, "--json").stdout
    assert json.loads(out) == [{"model": "m", "step": 10, "bound": 4.25, "certified": True,
                                "nan": "NaN", "num": 1.5, "pct": "50%"}]
    assert json.loads(run("sql", "SELECT 1 AS x WHERE false", "--json").stdout) == []
    assert run("sql", q, "--csv", "--json").exit_code == 1


def test_sql_url_connects_as_the_reader(store):
    res = run("sql", "--url")
    assert res.exit_code == 0
    url = res.stdout.strip()
    assert url.startswith(f"postgresql://{READER_ROLE}:")
    engine = sa.create_engine(storage.validate_url(url))  # what a notebook would do
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_user").scalar_one() == READER_ROLE
            assert conn.exec_driver_sql("SELECT bound FROM bounds").scalar_one() == 4.25
    finally:
        engine.dispose()


def _scram_matches(stored: str, password: str) -> bool:
    """Check a PostgreSQL SCRAM-SHA-256 verifier (RFC 5802/7677) against a password."""
    mech, rest = stored.split("$", 1)
    iters_salt, keys = rest.split("$")
    iters, salt = iters_salt.split(":")
    stored_key, _ = keys.split(":")
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iters))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return mech == "SCRAM-SHA-256" and hashlib.sha256(client_key).digest() == base64.b64decode(stored_key)


def test_password_comes_from_the_env_or_a_private_file(store, monkeypatch):
    def verifier() -> str:
        try:
            with store.connect() as conn:
                return conn.execute(sa.text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"),
                                    {"r": READER_ROLE}).scalar_one()
        except sa.exc.ProgrammingError:  # an external test database without superuser rights
            pytest.skip("pg_authid is readable by superusers only")

    path = reader_password_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    from_file = path.read_text().strip()
    assert len(from_file) >= 32 and _scram_matches(verifier(), from_file)
    monkeypatch.setenv(storage.READER_PASSWORD_ENV, "an env password: with 'quotes' & %")
    res = run("setup-db")
    assert res.exit_code == 0 and f"password from ${storage.READER_PASSWORD_ENV}" in res.stdout
    assert _scram_matches(verifier(), "an env password: with 'quotes' & %")
    assert not _scram_matches(verifier(), from_file)
    monkeypatch.delenv(storage.READER_PASSWORD_ENV)
    os.chmod(path, 0o644)  # loosened by hand: tightened again on use
    storage.setup_reader(store)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and _scram_matches(verifier(), from_file)


# ----------------------------------------------------------------------------- URLs


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_plain_postgres_urls_are_used_with_psycopg2(scheme):
    url = f"{scheme}://u:p%40ss@db.example:5432/genbound?sslmode=require"  # secret-scan: allow
    want = "postgresql+psycopg2://u:p%40ss@db.example:5432/genbound?sslmode=require"  # secret-scan: allow
    assert storage.validate_url(url) == want


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_plain_url_in_the_env_reaches_the_store(store, pg_url, monkeypatch, scheme):
    plain = scheme + "://" + pg_url.split("://", 1)[1]
    monkeypatch.setenv(storage.DATABASE_URL_ENV, plain)
    assert storage.database_url() == pg_url
    res = run("setup-db")
    assert res.exit_code == 0, res.output
    assert run("sql", "SELECT count(*) AS n FROM bounds", "--csv").stdout == "n\n1\n"


@pytest.mark.parametrize("url", ["mysql://u@h/db", "sqlite:///x.db", "postgresql+psycopg://u@h/db"])
def test_other_schemes_are_refused_in_one_line(monkeypatch, url):
    monkeypatch.setenv(storage.DATABASE_URL_ENV, url)
    res = run("sql", "SELECT 1")
    assert res.exit_code == 1 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("genbound: error: GENBOUND_DATABASE_URL must be a PostgreSQL URL")


def test_a_wrong_url_in_the_env_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv(storage.DATABASE_URL_ENV, "postgresql://u:secret@127.0.0.1:1/db")
    with pytest.raises(storage.StoreError) as err:
        storage.get_engine()
    msg = str(err.value)
    assert msg.startswith("cannot connect to the database at GENBOUND_DATABASE_URL=")
    assert "secret" not in msg and "\n" not in msg
