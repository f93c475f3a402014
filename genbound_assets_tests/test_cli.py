"""The `genbound` CLI: in-process with click's CliRunner, plus the real console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from genbound_assets import storage
from genbound_assets.cli import main

GENBOUND = str(Path(sys.executable).parent / "genbound")


def run(*args: str, env: dict | None = None):
    # click >= 8.2 keeps stdout and stderr apart in the result
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_setup_db_is_idempotent_and_lists_tables(pg_clean):
    for _ in range(2):
        res = run("setup-db")
        assert res.exit_code == 0, res.output
        for table in storage.TABLES:
            assert f"  {table} " in res.stdout
        views = next(ln for ln in res.stdout.splitlines() if ln.startswith("views: "))
        assert "latest_bounds" in views.split(": ", 1)[1].split(", ")


def test_sql_prints_a_table(pg_clean):
    res = run("sql", "select 1 as one, 'x' as letter, null::text as nothing, 0.1::float8 as f")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split("|")[0].strip() == "one" and "letter" in lines[0]
    assert lines[2].split("|")[1].strip() == "x" and lines[2].split("|")[3].strip() == "0.1"
    assert lines[-1] == "(1 row)"
    res = run("sql", "select i from generate_series(1, 3) as i", "--csv")
    assert res.stdout.splitlines() == ["i", "1", "2", "3"]


def test_sql_reads_what_the_store_wrote(pg_clean):
    # `genbound sql` is read-only (test_reader_role.py): write with the store's own engine
    with pg_clean.begin() as conn:
        conn.exec_driver_sql("insert into token_samples (sample, i, u, seed, purpose) "
                             "values ('s', 0, 0.5, 1, 'bound'), ('s', 1, 0.25, 1, 'bound')")
    assert "(2 rows)" in run("sql", "select * from token_samples").stdout


def test_sql_error_is_one_line_and_non_zero(pg_clean):
    res = run("sql", "select * from no_such_table")
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and "no_such_table" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("url", ["mysql://u@localhost/db", "postgresql+psycopg2://u@127.0.0.1:1/db"])
def test_bad_database_url_is_one_line_naming_the_variable(url):
    res = run("setup-db", env={storage.DATABASE_URL_ENV: url})
    assert res.exit_code == 1
    assert res.stderr.startswith("genbound: error: ") and res.stderr.count("\n") == 1
    assert "GENBOUND_DATABASE_URL" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_demo_trains_then_materializes_the_graph_and_reruns_identically(pg_clean, tmp_path):
    """`genbound demo`: train 2 sizes on synthetic data, materialize the whole graph on a
    persistent instance under the data dir, print a table per size; a rerun reuses the suite
    and replaces every partition with the same numbers."""
    env = {"GENBOUND_DATA_DIR": str(tmp_path), "GENBOUND_PROFILE": "micro"}
    args = ("demo", "--quick", "--corpus", "synthetic")
    res = run(*args, env=env)
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "training the suite" in out and "FAILED" not in out, out[-3000:]
    assert "[4/4]" in out and "ratio = (headline - R_h)" in out
    assert (tmp_path / "dagster_home").is_dir()
    rows = storage.read_frame(pg_clean, "select model, step, method, certified, bound, n_train_tokens, "
                                        "n_params from bounds where method = 'headline' "
                                        "and not interpolated order by model, step")
    assert set(rows["model"]) == {"neox-12k", "neox-29k"} and rows["certified"].all()
    co = storage.read_frame(pg_clean, "select c.model, c.step, c.n_train_tokens, c.n_params, c.certified "
                                      "from compute_optimal c order by model")
    assert co.height == 2 and co["certified"].all()
    for n, d in zip(co["n_params"], co["n_train_tokens"], strict=True):
        assert 20 * n <= d < 20 * n + 4096   # the D* checkpoint: D within one step above 20 N
    for model in co["model"]:
        assert f"  {model}: step" in out
    counts = storage.table_counts(pg_clean)

    again = run(*args, env=env)
    assert again.exit_code == 0, again.output
    assert "not retraining" in again.stdout
    assert storage.table_counts(pg_clean) == counts
    rows2 = storage.read_frame(pg_clean, "select model, step, method, certified, bound, n_train_tokens, "
                                         "n_params from bounds where method = 'headline' "
                                         "and not interpolated order by model, step")
    assert rows2.equals(rows)    # deterministic: the same bounds


def test_console_script_bad_url_no_traceback():
    env = {k: v for k, v in os.environ.items() if k != storage.DATABASE_URL_ENV}
    env[storage.DATABASE_URL_ENV] = "postgres://someone:pw@localhost/db"
    proc = subprocess.run([GENBOUND, "sql", "select 1"], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "GENBOUND_DATABASE_URL" in proc.stderr
    assert ":pw@" not in proc.stderr  # no password echoed


def test_console_script_attaches_to_the_running_embedded_server(pg_engine, pg_embedded_root):
    """With no URL, later commands reuse the embedded server already running on the data dir."""
    if pg_embedded_root is None:
        pytest.skip("tests run against an external GENBOUND_TEST_DATABASE_URL")
    pid = storage.embedded_pid(pg_embedded_root)
    env = {k: v for k, v in os.environ.items() if k != storage.DATABASE_URL_ENV}
    env[storage.DATA_DIR_ENV] = str(pg_embedded_root)
    proc = subprocess.run([GENBOUND, "sql", "select count(*) as n from models", "--csv"],
                          env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "n"
    assert storage.embedded_pid(pg_embedded_root) == pid  # same server, not a new one


def test_suite_group_is_optional():
    """`genbound suite` appears once genbound_assets/cli_suite.py lands; the CLI works before."""
    res = run("--help")
    assert res.exit_code == 0
    import importlib.util

    has_suite = importlib.util.find_spec("genbound_assets.cli_suite") is not None
    assert ("suite" in main.commands) == has_suite
