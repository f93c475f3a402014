"""The production configuration (docker/) run without containers.

What docker compose runs, as separate processes on loopback:

* a PostgreSQL server on a TCP port with password authentication (pgserver's binaries, run the
  way the postgres image runs them: Dagster's database created as POSTGRES_DB, genbound's by
  docker/postgres/initdb/10-genbound-db.sh, executed as is);
* ``dagster code-server start -m genbound_assets.definitions`` (the codeserver service);
* ``dagster-webserver`` and ``dagster-daemon run``, with DAGSTER_HOME holding docker/dagster.yaml
  copied byte for byte and the workspace docker/workspace.yaml used in place: only environment
  variables differ from compose.

Over GraphQL the test finds the code location, launches a run that materializes ``store_schema``
(queued: the daemon dequeues it and the code server runs it), and then reads the run and its
events from Dagster's tables in Postgres, and genbound's tables from the second database.

``launch_materialization`` takes asset keys and an optional partition (a single key or a
``{dimension: key}`` mapping for a multi-partitioned asset), so materializing a micro-suite
partition of another asset is one more call.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
BIN = Path(sys.executable).parent



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _restore_signals():  # in the child: a parent started with `&` may ignore SIGINT/SIGTERM
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


# --------------------------------------------------------------------------------------------
# PostgreSQL on TCP with a password, like the compose `postgres` service


@dataclass
class ProdPostgres:
    host: str
    port: int
    user: str
    password: str
    dagster_db: str = "dagster"
    genbound_db: str = "genbound"

    def url(self, db: str) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{db}"


def _pg_bin() -> Path:
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


@pytest.fixture(scope="module")
def prod_pg() -> Iterator[ProdPostgres]:
    """A throwaway PostgreSQL 16 on 127.0.0.1:<free port>, scram-sha-256 for TCP clients."""
    pgbin = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="genbound-prodpg-"))  # not tmp_path: 0700 dirs lock out `pgserver`
    pgdata, log = root / "pgdata", root / "postgres.log"
    cred = ProdPostgres("127.0.0.1", _free_port(), "genbound_admin", secrets.token_hex(16))
    (root / "pw").write_text(cred.password + "\n")
    run_as: dict = {}
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # postgres refuses to run as root
        import pwd

        from pgserver.utils import (
            ensure_folder_permissions,
            ensure_prefix_permissions,
            ensure_user_exists,
        )

        ensure_user_exists("pgserver")
        ensure_prefix_permissions(root)
        ensure_prefix_permissions(pgbin)
        ensure_folder_permissions(pgbin, 0o555)
        ensure_folder_permissions(pgbin.parent / "lib", 0o444)
        entry = pwd.getpwnam("pgserver")
        for p in (root, root / "pw"):
            os.chown(p, entry.pw_uid, entry.pw_gid)
        run_as = {"user": "pgserver"}
    started = False
    try:
        subprocess.run(
            [str(pgbin / "initdb"), "-D", str(pgdata), "-U", cred.user, "--pwfile", str(root / "pw"),
             "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, text=True, timeout=120, **run_as,
        )
        opts = (f"-c listen_addresses={cred.host} -p {cred.port} -k {pgdata} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        subprocess.run(
            [str(pgbin / "pg_ctl"), "-D", str(pgdata), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"],
            check=True, capture_output=True, text=True, timeout=90, start_new_session=True, **run_as,
        )
        started = True
        # the postgres image creates POSTGRES_DB itself, then runs /docker-entrypoint-initdb.d/*
        admin = sa.create_engine(cred.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{cred.dagster_db}"')
        admin.dispose()
        yield cred
    finally:
        if started:
            subprocess.run([str(pgbin / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60, **run_as)
        shutil.rmtree(root, ignore_errors=True)


def run_initdb_scripts(pg: ProdPostgres) -> None:
    """Run docker/postgres/initdb/* as the postgres image's entrypoint would (POSTGRES_USER, POSTGRES_DB)."""
    env = dict(os.environ, PATH=f"{_pg_bin()}:{os.environ.get('PATH', '')}", PGHOST=pg.host,
               PGPORT=str(pg.port), PGPASSWORD=pg.password, POSTGRES_USER=pg.user,
               POSTGRES_DB=pg.dagster_db, GENBOUND_DB=pg.genbound_db)
    for script in sorted((DOCKER / "postgres" / "initdb").glob("*.sh")):
        out = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{script.name}: {out.stderr.strip()}"


def check_databases_closed_to_public(pg: ProdPostgres) -> None:
    """After the init script a login role reaches a database only once granted CONNECT on it."""
    probe, probe_pw = "probe_" + secrets.token_hex(3), secrets.token_hex(12)
    admin = sa.create_engine(pg.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {probe} LOGIN PASSWORD '{probe_pw}'")
    try:
        for db in (pg.dagster_db, pg.genbound_db):
            url = f"postgresql+psycopg2://{probe}:{probe_pw}@{pg.host}:{pg.port}/{db}"
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            with pytest.raises(sa.exc.OperationalError, match="permission denied for database"):
                engine.connect().close()
            with admin.connect() as conn:
                conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{db}" TO {probe}')
            engine.connect().close()  # granted: now it connects
            with admin.connect() as conn:
                conn.exec_driver_sql(f'REVOKE CONNECT ON DATABASE "{db}" FROM {probe}')
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP ROLE {probe}")
        admin.dispose()


# --------------------------------------------------------------------------------------------
# The three Dagster processes


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    children: list[psutil.Process] = field(default_factory=list)

    def tail(self, n: int = 3000) -> str:
        try:
            return f"--- {self.name} ({self.log}) ---\n" + self.log.read_text(errors="replace")[-n:]
        except OSError:
            return f"--- {self.name}: no log ---"


def _start(name: str, argv: list[str], env: Mapping[str, str], logdir: Path) -> Service:
    log = logdir / f"{name}.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, cwd=REPO, env=dict(env), stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_restore_signals)
    return Service(name, proc, log)


def _stop(services: Sequence[Service], timeout: float = 30) -> list[str]:
    """SIGTERM each process group, then SIGKILL what is left; returns what needed a SIGKILL."""
    for s in services:
        try:
            s.children = psutil.Process(s.proc.pid).children(recursive=True)
        except psutil.Error:
            pass
        if s.proc.poll() is None:
            os.killpg(s.proc.pid, signal.SIGTERM)
    killed: list[str] = []
    deadline = time.monotonic() + timeout
    for s in services:
        try:
            s.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(s.proc.pid, signal.SIGKILL)
            s.proc.wait(timeout=10)
            killed.append(f"{s.name} (pid {s.proc.pid})")
    for s in services:
        _, alive = psutil.wait_procs(s.children, timeout=max(1.0, deadline - time.monotonic()))
        for p in alive:  # anything that left the group: stop it by pid
            p.kill()
            killed.append(f"{s.name} child {p.pid}")
    return killed


# --------------------------------------------------------------------------------------------
# GraphQL


class GraphQL:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/graphql"

    def __call__(self, query: str, variables: Mapping | None = None, timeout: float = 30) -> dict:
        req = urllib.request.Request(
            self.url, data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = json.load(resp)
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]


LOCATIONS = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""

REPOSITORIES = """{ repositoriesOrError { __typename ... on RepositoryConnection { nodes {
  name location { name } jobs { name } assetNodes { assetKey { path } } } } } }"""

DAEMONS = """{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"""

LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename
  ... on LaunchRunSuccess { run { runId status } }
  ... on RunConfigValidationInvalid { errors { message } }
  ... on Error { message } } }"""

RUN = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status tags { key value } } } }"""


def wait_for_code_server(port: int, services: Sequence[Service], timeout: float) -> None:
    """Wait until the gRPC server answers the health check compose's codeserver healthcheck runs
    (`dagster api grpc-health-check`), so the webserver and daemon start as compose starts them."""
    from dagster._grpc.client import DagsterGrpcClient

    client, deadline, last = DagsterGrpcClient(port=port, host="127.0.0.1"), time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        dead = [s for s in services if s.proc.poll() is not None]
        assert not dead, "exited early:\n" + "\n".join(s.tail() for s in dead)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()  # listening yet?
            if client.health_check_query() == "SERVING":
                return
        except Exception as e:  # refused / UNAVAILABLE until the server listens
            last = " ".join(str(e).split())[:200]
        time.sleep(0.5)
    raise AssertionError(f"code server on {port} not serving: {last}\n" + "\n".join(s.tail() for s in services))


def wait_for_location(gql: GraphQL, services: Sequence[Service], location: str, timeout: float) -> dict:
    """Poll the webserver until ``location`` is LOADED; fail with every service's log otherwise."""
    entries, deadline, last_error = None, time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        dead = [s for s in services if s.proc.poll() is not None]
        assert not dead, "exited early:\n" + "\n".join(s.tail() for s in dead)
        try:
            entries = gql(LOCATIONS, timeout=5)["workspaceOrError"]["locationEntries"]
            entry = next((e for e in entries if e["name"] == location), None)
            if entry and entry["loadStatus"] == "LOADED":
                return entry
        except (OSError, KeyError, ValueError, AssertionError) as e:
            last_error = repr(e)
        time.sleep(0.5)
    raise AssertionError(f"location {location!r} not loaded: {entries} {last_error}\n"
                         + "\n".join(s.tail() for s in services))


def find_asset_job(gql: GraphQL, location: str, asset_path: Sequence[str]) -> tuple[str, str]:
    """(repository name, job name) of the implicit asset job that holds ``asset_path``."""
    nodes = gql(REPOSITORIES)["repositoriesOrError"]["nodes"]
    for repo in nodes:
        if repo["location"]["name"] != location:
            continue
        if list(asset_path) in [a["assetKey"]["path"] for a in repo["assetNodes"]]:
            jobs = [j["name"] for j in repo["jobs"] if j["name"].startswith("__ASSET_JOB")]
            assert jobs, f"no implicit asset job in {repo['name']}: {repo['jobs']}"
            return repo["name"], sorted(jobs)[0]
    raise AssertionError(f"asset {list(asset_path)} not in location {location!r}: {nodes}")


def partition_tags(partition: str | Mapping[str, str] | None) -> list[dict[str, str]]:
    """Run tags that select a partition: a key, or {dimension: key} for a MultiPartitionsDefinition
    (Dagster orders the dimensions by name and joins their keys with '|')."""
    if partition is None:
        return []
    if isinstance(partition, str):
        return [{"key": "dagster/partition", "value": partition}]
    dims = sorted(partition)
    tags = [{"key": "dagster/partition", "value": "|".join(partition[d] for d in dims)}]
    return tags + [{"key": f"dagster/partition/{d}", "value": partition[d]} for d in dims]


def launch_materialization(gql: GraphQL, location: str, asset_paths: Sequence[Sequence[str]],
                           partition: str | Mapping[str, str] | None = None,
                           tags: Mapping[str, str] | None = None,
                           run_config: Mapping | None = None) -> str:
    """Launch a run that materializes ``asset_paths`` (optionally one partition); return its id."""
    repo, job = find_asset_job(gql, location, asset_paths[0])
    params = {
        "selector": {"repositoryLocationName": location, "repositoryName": repo, "jobName": job,
                     "assetSelection": [{"path": list(p)} for p in asset_paths]},
        "runConfigData": dict(run_config or {}),
        "executionMetadata": {"tags": partition_tags(partition)
                              + [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    result = gql(LAUNCH, {"p": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def wait_for_run(gql: GraphQL, run_id: str, services: Sequence[Service], timeout: float) -> str:
    status, deadline = None, time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = gql(RUN, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {status} after {timeout:.0f} s\n"
                         + "\n".join(s.tail() for s in services))


# --------------------------------------------------------------------------------------------


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="genbound-prod-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_partition_tags_are_dagsters_own():
    """The tags launch_materialization sends select the same partition as Dagster's own tags."""
    import dagster as dg

    multi = dg.MultiPartitionsDefinition({"step": dg.DynamicPartitionsDefinition(name="steps"),
                                          "model": dg.DynamicPartitionsDefinition(name="models")})
    key = {"step": "step1000", "model": "pythia-70m"}
    expected = multi.get_tags_for_partition_key(dg.MultiPartitionKey(key))
    assert {t["key"]: t["value"] for t in partition_tags(key)} == expected
    single = dg.StaticPartitionsDefinition(["a", "b"])
    assert {t["key"]: t["value"] for t in partition_tags("b")} == single.get_tags_for_partition_key("b")
    assert partition_tags(None) == []


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_production_config_materializes_through_daemon_and_code_server(prod_pg, work):
    t0 = time.monotonic()
    run_initdb_scripts(prod_pg)
    run_initdb_scripts(prod_pg)  # idempotent: a second run leaves the database alone
    check_databases_closed_to_public(prod_pg)

    home, data, logs = work / "dagster_home", work / "data", work / "logs"
    for d in (home, data, logs):
        d.mkdir()
    shutil.copyfile(DOCKER / "dagster.yaml", home / "dagster.yaml")  # the same file, unchanged
    grpc_port, ui_port = _free_port(), _free_port()
    env = dict(os.environ)
    env.update({
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_HOST": prod_pg.host,
        "DAGSTER_POSTGRES_PORT": str(prod_pg.port),
        "DAGSTER_POSTGRES_USER": prod_pg.user,
        "DAGSTER_POSTGRES_PASSWORD": prod_pg.password,
        "DAGSTER_POSTGRES_DB": prod_pg.dagster_db,
        "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
        "DAGSTER_CODE_SERVER_PORT": str(grpc_port),
        "GENBOUND_DATABASE_URL": prod_pg.url(prod_pg.genbound_db),
        "GENBOUND_DATA_DIR": str(data),
        "PYTHONWARNINGS": "ignore",
    })
    workspace = str(DOCKER / "workspace.yaml")
    services: list[Service] = []
    stray: list[str] = []
    try:
        services.append(_start("codeserver", [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1",
                                              "-p", str(grpc_port), "-m", "genbound_assets.definitions"], env, logs))
        wait_for_code_server(grpc_port, services, timeout=120)
        health = subprocess.run([str(BIN / "dagster"), "api", "grpc-health-check", "-h", "127.0.0.1",
                                 "-p", str(grpc_port)], env=env, capture_output=True, text=True, timeout=60)
        assert health.returncode == 0, f"compose's codeserver healthcheck fails: {health.stdout}{health.stderr}"
        services.append(_start("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1",
                                             "-p", str(ui_port), "-w", workspace], env, logs))
        services.append(_start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env, logs))
        gql = GraphQL(ui_port)

        entry = wait_for_location(gql, services, "genbound", timeout=150)
        assert entry["locationOrLoadError"]["__typename"] == "RepositoryLocation", entry
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/server_info", timeout=10) as resp:
            assert resp.status == 200  # compose's webserver healthcheck
        t_up = time.monotonic() - t0

        run_id = launch_materialization(gql, "genbound", [["store_schema"]],
                                        tags={"genbound/test": "production-config"})
        status = wait_for_run(gql, run_id, services, timeout=120)
        assert status == "SUCCESS", "\n".join(s.tail() for s in services)
        run_tags = {t["key"]: t["value"] for t in gql(RUN, {"id": run_id})["runOrError"]["tags"]}
        assert run_tags.get("genbound/test") == "production-config"

        daemons = {d["daemonType"]: d for d in gql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]}
        assert daemons["QUEUED_RUN_COORDINATOR"]["healthy"], daemons
        assert daemons["SENSOR"]["healthy"] and daemons["SCHEDULER"]["healthy"], daemons
        t_run = time.monotonic() - t0
    finally:
        stray = _stop(services)
    assert not stray, f"needed SIGKILL after SIGTERM: {stray}\n" + "\n".join(s.tail() for s in services)

    # Dagster's run and event storage is the Postgres database from docker/dagster.yaml.
    dagster_db = sa.create_engine(prod_pg.url(prod_pg.dagster_db))
    with dagster_db.connect() as conn:
        (row,) = conn.execute(sa.text("select status, run_body from runs where run_id = :r"), {"r": run_id}).all()
        assert row.status == "SUCCESS"
        events = [r[0] for r in conn.execute(sa.text(
            "select dagster_event_type from event_logs where run_id = :r order by id"), {"r": run_id})]
        keys = [r[0] for r in conn.execute(sa.text("select asset_key from asset_keys"))]
    dagster_db.dispose()
    # queued by the QueuedRunCoordinator (the default coordinator launches at once, with no
    # ENQUEUED event), launched from the queue by the daemon, run by the code server, materialized
    for expected in ("PIPELINE_ENQUEUED", "PIPELINE_STARTING", "PIPELINE_START",
                     "ASSET_MATERIALIZATION", "PIPELINE_SUCCESS"):
        assert expected in events, f"{expected} not among {events}"
    assert events.index("PIPELINE_ENQUEUED") < events.index("PIPELINE_STARTING") < events.index("PIPELINE_START")
    assert json.dumps(["store_schema"]) in keys, keys

    # ...and the asset wrote genbound's store in the other database on the same server.
    from genbound_assets import storage

    genbound_db = sa.create_engine(prod_pg.url(prod_pg.genbound_db))
    counts = storage.table_counts(genbound_db)
    views = set(storage.read_frame(
        genbound_db, "select viewname from pg_views where schemaname = current_schema()")["viewname"])
    genbound_db.dispose()
    assert set(counts) == set(storage.TABLES) and "latest_bounds" in views

    # Backups as docs/deploy.md gives them: pg_dump of each database.
    dump_env = dict(os.environ, PGPASSWORD=prod_pg.password)
    for db, table in ((prod_pg.dagster_db, "event_logs"), (prod_pg.genbound_db, "bounds")):
        out = subprocess.run([str(_pg_bin() / "pg_dump"), "-h", prod_pg.host, "-p", str(prod_pg.port),
                              "-U", prod_pg.user, "--schema-only", db],
                             env=dump_env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"CREATE TABLE public.{table} " in out.stdout, f"{db}: no {table} in the dump"
    print(json.dumps({"services_up_s": round(t_up, 1), "run_done_s": round(t_run, 1),
                      "total_s": round(time.monotonic() - t0, 1)}))
