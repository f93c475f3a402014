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
``{dimension: key}`` mapping for a multi-partitioned asset).

The second test runs the real asset graph the same way, with the micro suite
(genbound_assets_tests/micro.py) registered as the only family: the daemon's ``new_checkpoints``
sensor (evaluated in the code server) registers the suite's checkpoints and launches their runs;
one checkpoint partition is materialized through GraphQL (quantization, token losses,
certificates); a checkpoint written while the services run is picked up by the sensor, which
launches a run for exactly that partition.  Runs, events, sensor ticks and the GPU pool's slot
accounting are read from Dagster's tables, genbound's rows (checkpoints, quantized_models, bounds)
from the store, and no two steps of the pool ``gpu`` ran at the same time.  It runs with
``GENBOUND_EXECUTOR=in_process`` (genbound_assets/deploy.py): a step process costs a Python +
torch import, 20-30 s each on this shared 2-core machine; the first test covers the default
multiprocess executor.
"""

from __future__ import annotations

import dataclasses
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


def service_env(pg: ProdPostgres, home: Path, data: Path, grpc_port: int) -> dict[str, str]:
    """The environment compose gives the Dagster services (docker/.env + docker-compose.yaml),
    pointed at ``pg``; the rest of this process's environment (the family registry, profile and
    GENBOUND_* settings a test sets) goes with it, as compose's ``environment:`` would carry it."""
    env = dict(os.environ)
    env.update({
        "DAGSTER_HOME": str(home),
        "DAGSTER_POSTGRES_HOST": pg.host,
        "DAGSTER_POSTGRES_PORT": str(pg.port),
        "DAGSTER_POSTGRES_USER": pg.user,
        "DAGSTER_POSTGRES_PASSWORD": pg.password,
        "DAGSTER_POSTGRES_DB": pg.dagster_db,
        "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
        "DAGSTER_CODE_SERVER_PORT": str(grpc_port),
        "GENBOUND_DATABASE_URL": pg.url(pg.genbound_db),
        "GENBOUND_DATA_DIR": str(data),
        "PYTHONWARNINGS": "ignore",
    })
    return env


def dagster_home(work: Path) -> tuple[Path, Path, Path]:
    """(DAGSTER_HOME holding docker/dagster.yaml unchanged, data dir, log dir) under ``work``."""
    home, data, logs = work / "dagster_home", work / "data", work / "logs"
    for d in (home, data, logs):
        d.mkdir()
    shutil.copyfile(DOCKER / "dagster.yaml", home / "dagster.yaml")  # the same file, unchanged
    return home, data, logs


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


SENSORS = """query($r: RepositorySelector!) { sensorsOrError(repositorySelector: $r) { __typename
  ... on Sensors { results { name sensorState { id status } } } } }"""

SCHEDULES = """query($r: RepositorySelector!) { schedulesOrError(repositorySelector: $r) { __typename
  ... on Schedules { results { name scheduleState { id status } } } } }"""

STOP_SENSOR = """mutation($id: String) { stopSensor(id: $id) { __typename
  ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }"""

STOP_SCHEDULE = """mutation($id: String) { stopRunningSchedule(id: $id) { __typename
  ... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }"""

RUNS = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { __typename
  ... on Runs { results { runId status jobName tags { key value } } } } }"""


def repository_selector(gql: GraphQL, location: str) -> dict[str, str]:
    nodes = gql(REPOSITORIES)["repositoriesOrError"]["nodes"]
    (repo,) = [r for r in nodes if r["location"]["name"] == location]
    return {"repositoryLocationName": location, "repositoryName": repo["name"]}


def instigator_states(gql: GraphQL, location: str) -> dict[str, dict]:
    """{sensor or schedule name: its state {id, status}} as the UI's automation page shows them."""
    sel = repository_selector(gql, location)
    sensors = gql(SENSORS, {"r": sel})["sensorsOrError"]["results"]
    schedules = gql(SCHEDULES, {"r": sel})["schedulesOrError"]["results"]
    return {**{x["name"]: x["sensorState"] for x in sensors},
            **{x["name"]: x["scheduleState"] for x in schedules}}


def stop_instigator(gql: GraphQL, location: str, name: str) -> None:
    """Turn a sensor or schedule off, as the UI's toggle does (stored in the instance's Postgres)."""
    state = instigator_states(gql, location)[name]
    sensor = name in {x["name"] for x in gql(SENSORS, {"r": repository_selector(gql, location)})
                      ["sensorsOrError"]["results"]}
    if sensor:
        out = gql(STOP_SENSOR, {"id": state["id"]})["stopSensor"]
        assert out["__typename"] == "StopSensorMutationResult", out
        assert out["instigationState"]["status"] == "STOPPED", out
    else:
        out = gql(STOP_SCHEDULE, {"id": state["id"]})["stopRunningSchedule"]
        assert out["__typename"] == "ScheduleStateResult", out
        assert out["scheduleState"]["status"] == "STOPPED", out


def runs_tagged(gql: GraphQL, tags: Mapping[str, str]) -> list[dict]:
    """Runs carrying every tag of ``tags``, newest first, with their tags as a dict."""
    runs = gql(RUNS, {"tags": [{"key": k, "value": v} for k, v in tags.items()]})["runsOrError"]["results"]
    return [dict(r, tags={t["key"]: t["value"] for t in r["tags"]}) for r in runs]


def wait_for_runs(gql: GraphQL, tags: Mapping[str, str], services: Sequence[Service], n: int,
                  timeout: float, settle: float = 0.0) -> list[dict]:
    """Wait until at least ``n`` runs tagged ``tags`` exist and all of them have finished (and,
    with ``settle``, no further one appeared for that many seconds)."""
    runs, deadline, quiet_since = [], time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        dead = [s for s in services if s.proc.poll() is not None]
        assert not dead, "exited early:\n" + "\n".join(s.tail() for s in dead)
        now = runs_tagged(gql, tags)
        done = len(now) >= n and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in now)
        if done and [r["runId"] for r in now] == [r["runId"] for r in runs]:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle:
                return now
        else:
            quiet_since = None
        runs = now
        time.sleep(1.0)
    raise AssertionError(f"runs tagged {dict(tags)}: wanted {n} finished, have "
                         f"{[(r['status'], r['tags'].get('dagster/asset_partition_range_start')) for r in runs]}"
                         "\n" + "\n".join(s.tail() for s in services))


LOGS = """query($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection { events {
  __typename ... on MessageEvent { message stepKey }
  ... on ExecutionStepFailureEvent { error { message stack cause { message stack cause { message stack } } } }
  ... on RunFailureEvent { pipelineName } } } } }"""


def run_failures(gql: GraphQL, run_id: str) -> str:
    """The failure messages of a run (step failures with their error), for an assertion message."""
    events = gql(LOGS, {"id": run_id})["logsForRun"].get("events", [])
    out = []
    for e in events:
        if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent", "EngineEvent") and (
                e["__typename"] != "EngineEvent" or "rror" in (e.get("message") or "")):
            out.append(f"{e['__typename']} {e.get('stepKey')}: {e.get('message')}")
            err = e.get("error")
            while err:  # the step's error, then what caused it (the asset's own exception)
                out.append(f"{err['message']}{''.join((err.get('stack') or [])[-4:])}")
                err = err.get("cause")
    return f"run {run_id} failed:\n" + "\n".join(out)


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
        if not os.environ.get("KEEP_PROD_TEST_DIR"):
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

    home, data, logs = dagster_home(work)
    grpc_port, ui_port = _free_port(), _free_port()
    env = service_env(prod_pg, home, data, grpc_port)
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


# --------------------------------------------------------------------------------------------
# The real graph on the micro suite

GPU_ASSETS = ("checkpoint_loss", "quantized_model", "token_losses", "hessian_spectrum")


def gpu_step_intervals(conn, run_ids: Sequence[str]) -> list[tuple[float, float, str]]:
    """(start, end, run:step) of every step of a pool-``gpu`` asset in ``run_ids``, from the
    STEP_START and STEP_SUCCESS/STEP_FAILURE events Dagster stored."""
    rows = conn.execute(sa.text(
        "select run_id, step_key, dagster_event_type, timestamp from event_logs "
        "where run_id = any(:r) and dagster_event_type in ('STEP_START', 'STEP_SUCCESS', 'STEP_FAILURE')"),
        {"r": list(run_ids)}).all()
    spans: dict[tuple[str, str], dict[str, float]] = {}
    for run_id, step, kind, ts in rows:
        if step and step.split("__")[-1] in GPU_ASSETS:
            spans.setdefault((run_id, step), {})["start" if kind == "STEP_START" else "end"] = ts.timestamp()
    out = [(v["start"], v["end"], f"{r[:8]}:{s}") for (r, s), v in spans.items()]
    assert all(len(v) == 2 for v in spans.values()), spans
    return sorted(out)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_production_config_runs_the_graph_on_the_micro_suite(prod_pg, work, micro_suite_root, monkeypatch):
    from genbound_assets import storage
    from genbound_assets.families.sources import LocalCheckpointSource
    from genbound_assets.families.suite import load_data_order
    from genbound_assets_tests.micro import FAMILY, copy_suite, micro_env
    from genbound_assets_tests.test_automation import _new_checkpoint

    t0 = time.monotonic()
    pg = dataclasses.replace(prod_pg, dagster_db="dagster_graph", genbound_db="genbound_graph")
    admin = sa.create_engine(pg.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{pg.dagster_db}"')  # what the image does for POSTGRES_DB
    admin.dispose()
    run_initdb_scripts(pg)

    # the micro suite as the only family; every process gets this environment (compose's env_file)
    root = copy_suite(micro_suite_root, work / "suite")
    micro_env(monkeypatch, root, work, selection="none", sensor_interval_s=5, executor="in_process")
    source = LocalCheckpointSource(root)
    steps = {m: sorted(r.step for r in source.list_checkpoints(m)) for m in source.list_models()}
    assert sorted(steps) == ["m-a", "m-b"]
    d_star = load_data_order(root)["models"]["m-a"]["d_star_step"]

    home, data, logs = dagster_home(work)
    grpc_port, ui_port = _free_port(), _free_port()
    env = service_env(pg, home, data, grpc_port)
    workspace = str(DOCKER / "workspace.yaml")
    services: list[Service] = []
    stray: list[str] = []
    marks: dict[str, float] = {}
    sensor = {"dagster/sensor_name": "new_checkpoints", "genbound/family": FAMILY}
    try:
        services.append(_start("codeserver", [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1",
                                              "-p", str(grpc_port), "-m", "genbound_assets.definitions"], env, logs))
        wait_for_code_server(grpc_port, services, timeout=120)
        services.append(_start("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1",
                                             "-p", str(ui_port), "-w", workspace], env, logs))
        gql = GraphQL(ui_port)
        wait_for_location(gql, services, "genbound", timeout=150)
        marks["location_loaded_s"] = time.monotonic() - t0
        states = instigator_states(gql, "genbound")
        # every automation is on by default (docs/dagster.md, "Automation")
        for name in ("new_checkpoints", "genbound_automation", f"{FAMILY}_checkpoint_backfill"):
            assert states[name]["status"] == "RUNNING", states
        # An operator turns the model-level automation and the hourly catch-up off in the UI before
        # the daemon starts: this test is about the checkpoint sensor (test_automation.py covers
        # the other two in process); each extra run costs ~20 s of step processes on 2 cores.
        stop_instigator(gql, "genbound", "genbound_automation")
        stop_instigator(gql, "genbound", f"{FAMILY}_checkpoint_backfill")
        services.append(_start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], env, logs))
        marks["services_up_s"] = time.monotonic() - t0

        # 1. the daemon's sensor finds the suite and launches one run per model (selection none:
        #    inventory and loss curve of every checkpoint, one consecutive range per model)
        first = wait_for_runs(gql, sensor, services, n=len(steps), timeout=240, settle=6)
        marks["sensor_runs_done_s"] = time.monotonic() - t0
        assert [r["status"] for r in first] == ["SUCCESS"] * len(first), \
            "\n".join(run_failures(gql, r["runId"]) for r in first if r["status"] != "SUCCESS")
        got = sorted((r["tags"]["genbound/model"], r["tags"]["dagster/asset_partition_range_start"],
                      r["tags"]["dagster/asset_partition_range_end"], r["tags"]["genbound/assets"],
                      r["jobName"]) for r in first)
        assert got == sorted((m, f"{m}|{ss[0]}", f"{m}|{ss[-1]}", "checkpoint,checkpoint_loss",
                              f"{FAMILY}_checkpoints") for m, ss in steps.items()), got

        # 2. one checkpoint partition through GraphQL: quantization, token losses, certificates
        manual = launch_materialization(
            gql, "genbound", [[FAMILY, "quantized_model"], [FAMILY, "token_losses"], [FAMILY, "checkpoint_bounds"]],
            partition={"model": "m-a", "step": str(d_star)}, tags={"genbound/test": "production-graph"})
        status = wait_for_run(gql, manual, services, timeout=240)
        assert status == "SUCCESS", run_failures(gql, manual)
        marks["manual_run_done_s"] = time.monotonic() - t0

        # 3. a checkpoint written while the services run: the sensor launches exactly its run
        new_step = steps["m-a"][-1] + 40
        _new_checkpoint(root, "m-a", new_step, steps["m-a"][-1], total=new_step)
        after = wait_for_runs(gql, sensor, services, n=len(first) + 1, timeout=150, settle=6)
        new = [r for r in after if r["runId"] not in {x["runId"] for x in first}]
        assert len(new) == 1, [r["tags"] for r in new]
        (run,) = new
        assert run["status"] == "SUCCESS", run_failures(gql, run["runId"])
        assert run["tags"]["genbound/family"] == FAMILY and run["tags"]["genbound/model"] == "m-a"
        assert run["tags"]["dagster/asset_partition_range_start"] == f"m-a|{new_step}"
        assert run["tags"]["dagster/asset_partition_range_end"] == f"m-a|{new_step}"
        marks["new_checkpoint_run_done_s"] = time.monotonic() - t0
        daemons = {d["daemonType"]: d for d in gql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]}
        assert daemons["SENSOR"]["healthy"] and daemons["QUEUED_RUN_COORDINATOR"]["healthy"], daemons
        final_states = instigator_states(gql, "genbound")
    finally:
        stray = _stop(services)
        print(json.dumps({k: round(v, 1) for k, v in marks.items()}))
    assert not stray, f"needed SIGKILL after SIGTERM: {stray}\n" + "\n".join(s.tail() for s in services)
    assert final_states["new_checkpoints"]["status"] == "RUNNING"
    assert final_states["genbound_automation"]["status"] == "STOPPED"

    sensor_runs = [r["runId"] for r in after]
    dagster_db = sa.create_engine(pg.url(pg.dagster_db))
    with dagster_db.connect() as conn:
        runs = dict(conn.execute(sa.text("select run_id, status from runs")).all())
        # every run the test saw, and no other: no automation, no schedule, no stray request
        assert set(runs) == set(sensor_runs) | {manual}, runs
        assert set(runs.values()) == {"SUCCESS"}, runs
        mats = conn.execute(sa.text(
            "select run_id, asset_key, partition from event_logs "
            "where dagster_event_type = 'ASSET_MATERIALIZATION'")).all()
        ticks = [json.loads(b) for (b,) in conn.execute(sa.text("select tick_body from job_ticks"))]
        registered = {r[0] for r in conn.execute(sa.text(
            "select partition from dynamic_partitions where partitions_def_name = :d"), {"d": f"{FAMILY}__step"})}
        gpu_slots = conn.execute(sa.text(
            "select count(*) from concurrency_slots where concurrency_key = 'gpu' and not deleted")).scalar()
        spans = gpu_step_intervals(conn, list(runs))
    dagster_db.dispose()

    def done(run_id):
        return {(json.loads(k)[-1], p) for r, k, p in mats if r == run_id}

    assert done(manual) == {(a, f"m-a|{d_star}") for a in ("quantized_model", "token_losses", "checkpoint_bounds")}
    assert done(run["runId"]) == {("checkpoint", f"m-a|{new_step}"), ("checkpoint_loss", f"m-a|{new_step}")}
    for r in first:
        m = r["tags"]["genbound/model"]
        assert done(r["runId"]) == {(a, f"{m}|{s}") for a in ("checkpoint", "checkpoint_loss") for s in steps[m]}
    assert registered == {str(s) for ss in steps.values() for s in ss} | {str(new_step)}
    # the sensor's ticks: evaluated by the daemon in the code server, runs requested on two ticks
    # (TickData is stored under its storage names: job_name = the instigator's name)
    sensor_ticks = [t for t in ticks if t["job_name"] == "new_checkpoints"]
    requested = [t for t in sensor_ticks if t.get("run_ids")]
    assert len(requested) == 2 and {x for t in requested for x in t["run_ids"]} == set(sensor_runs), requested
    # the pool from docker/dagster.yaml (default_limit 1) held every GPU-heavy step: one at a time
    assert gpu_slots == 1
    assert len(spans) == len(first) + 2 + 1, spans  # checkpoint_loss per sensor run; quantize, losses
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        assert start >= end, f"GPU steps overlap: {a} and {b}"

    engine = sa.create_engine(pg.url(pg.genbound_db))
    ckpts = storage.read_frame(engine, "select model, step, status from checkpoints")
    quant = storage.read_frame(engine, "select model, step, quantizer, status from quantized_models")
    bounds = storage.read_frame(engine, "select model, step, method, certified, bound from bounds")
    engine.dispose()
    want = {(m, s) for m, ss in steps.items() for s in ss} | {("m-a", new_step)}
    assert {(m, s) for m, s, _ in ckpts.iter_rows()} == want
    assert set(ckpts["status"]) == {"ok"}
    assert {(m, s) for m, s, _, _ in quant.iter_rows()} == {("m-a", d_star)}
    assert set(quant["quantizer"]) == {"rtn", "gptq"} and set(quant["status"]) == {"ok"}, quant
    heads = bounds.filter((bounds["method"] == "headline") & bounds["certified"])
    assert {(m, s) for m, s in zip(heads["model"], heads["step"], strict=True)} == {("m-a", d_star)}
    assert all(0 < b < 50 for b in heads["bound"])
    marks["total_s"] = time.monotonic() - t0
    print(json.dumps({k: round(v, 1) for k, v in marks.items()}))
