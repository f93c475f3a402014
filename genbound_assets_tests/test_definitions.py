"""The Dagster code location: loads in-process, materializes against the test DB, and is served
by dagster-webserver (with `genbound ui`'s environment) in a separate process group.

`genbound ui` itself execs `dagster dev`, which also starts the daemon: 2-3x slower to come up
on this shared machine, so the served test uses the webserver alone, and `ui_command` (argv and
environment for `dagster dev`) is checked separately.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import psutil
import pytest

from genbound_assets import storage

REPO = Path(__file__).resolve().parents[1]


def test_definitions_load_and_validate():
    from genbound_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
    repo = defs.get_repository_def()
    assert dg.AssetKey("store_schema") in repo.asset_graph.get_all_asset_keys()
    assert "postgres" in repo.get_top_level_resources()


def test_store_schema_materializes_against_the_test_db(pg_clean, pg_url):
    from genbound_assets.defs.store.assets import store_schema
    from genbound_assets.defs.store.resources import PostgresResource

    with pg_clean.begin() as conn:
        conn.exec_driver_sql("DROP VIEW latest_bounds")
        conn.exec_driver_sql(
            "INSERT INTO models (model, family, source_kind) VALUES ('pythia-70m', 'pythia', 'pythia_hub')"
        )
    result = dg.materialize(
        [store_schema], resources={"postgres": PostgresResource(database_url=pg_url)}
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node("store_schema")
    meta = {k: v.value for k, v in mat.metadata.items()}
    assert meta["rows/models"] == 1 and meta["rows/bounds"] == 0
    assert {f"rows/{t}" for t in storage.TABLES} <= set(meta)
    assert "latest_bounds" in meta["views"]
    assert "latest_bounds" in set(storage.read_frame(
        pg_clean, "select viewname from pg_views where schemaname = current_schema()"
    )["viewname"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _restore_signals():  # runs in the child: a parent started with `&` may ignore SIGINT/SIGTERM
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


LOCATIONS_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def test_ui_command_runs_dagster_dev_on_the_store(pg_engine, pg_url, tmp_path, monkeypatch):
    from genbound_assets.cli import ui_command

    monkeypatch.setenv(storage.DATA_DIR_ENV, str(tmp_path))
    argv, env = ui_command("127.0.0.1", 4321, REPO / "workspace.yaml")
    assert Path(argv[0]).name == "dagster" and Path(argv[0]).exists()
    assert argv[1:] == ["dev", "-w", str(REPO / "workspace.yaml"), "-h", "127.0.0.1", "-p", "4321"]
    assert env[storage.DATABASE_URL_ENV] == pg_url
    assert env["DAGSTER_HOME"] == str(tmp_path / "dagster_home")
    assert "enabled: false" in (tmp_path / "dagster_home" / "dagster.yaml").read_text()
    with pytest.raises(storage.StoreError, match="not found"):
        ui_command("127.0.0.1", 4321, tmp_path / "missing.yaml")


def wait_loaded(port: int, proc, log_path: Path, timeout: float = 150) -> list:
    """Poll the webserver's GraphQL until the code location is LOADED (or fail with its log)."""
    entries, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/graphql",
                data=json.dumps({"query": LOCATIONS_QUERY}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                body = json.load(resp)
            entries = body["data"]["workspaceOrError"]["locationEntries"]
            if entries and entries[0]["loadStatus"] == "LOADED":
                break
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.5)
    assert entries and entries[0]["loadStatus"] == "LOADED", log_path.read_text()[-3000:]
    assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation", entries
    return entries


def _stop(proc, log) -> None:
    """SIGTERM the process group, wait, SIGKILL stragglers; fail if anything survived."""
    started = []
    try:
        started = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        pass
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    _, alive = psutil.wait_procs(started, timeout=15)
    for p in alive:
        p.kill()
    log.close()
    assert not alive, f"left running after SIGTERM: {alive}"


@pytest.mark.timeout(180)
def test_webserver_serves_the_code_location(pg_engine, pg_url, tmp_path, monkeypatch):
    from genbound_assets.cli import ui_command

    monkeypatch.setenv(storage.DATA_DIR_ENV, str(tmp_path))
    port = _free_port()
    _, env = ui_command("127.0.0.1", port, REPO / "workspace.yaml")
    log = open(tmp_path / "ui.log", "w")  # noqa: SIM115 - closed by _stop
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-w", "workspace.yaml",
         "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=_restore_signals,
    )
    try:
        entries = wait_loaded(port, proc, tmp_path / "ui.log")
        assert entries[0]["name"] == "genbound"
    finally:
        _stop(proc, log)
