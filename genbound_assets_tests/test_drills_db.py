"""Database drills and the retry policy (docs/reliability.md, "Retries" and "Drills").

The session's embedded Postgres is shared by every test, so these drills start their own
throwaway pgserver (module fixture ``own_pg``), point GENBOUND_DATABASE_URL at it, and stop,
start and restart it under real runs of ``checkpoint`` + ``checkpoint_loss`` (m-b, 4 steps):

* restarted mid-write: the first COPY of a rerun finds the server restarted under it; the
  attempt fails, the retry (RetryPolicy backoff) succeeds; zero rows lost or duplicated;
* down when a run starts: the first attempts cannot connect; the server comes back; the run
  completes;
* down for good: the run fails after its retries with one line naming the database; after the
  server is back a rerun completes;
* bad input (a malformed setting) fails on the first attempt: not retried.

``is_transient`` is also checked on errors from a real connection and on constructed ones.
"""

import shutil
import tempfile
import threading
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from genbound_assets import storage
from genbound_assets.defs.families import retry
from genbound_assets.storage import read_frame, table_counts
from genbound_assets_tests.micro import micro_env
from genbound_assets_tests.test_drills import CKPT, KEEP, Drill, failures, fresh_suite
from genbound_assets_tests.test_drills_doc import DRILL_KEYS, check_row, normalize

FAST = dg.RetryPolicy(max_retries=4, delay=0.3, backoff=dg.Backoff.EXPONENTIAL)


@pytest.fixture(scope="module")
def own_pg():
    """A throwaway embedded server of this module only: (root, url)."""
    root = Path(tempfile.mkdtemp(prefix="genbound-drilldb-"))
    try:
        url = storage.start_embedded(root)
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:           # throwaway data: no fsync
            conn.exec_driver_sql("ALTER SYSTEM SET fsync = off")
            conn.exec_driver_sql("SELECT pg_reload_conf()")
        engine.dispose()
        yield root, url
    finally:
        storage.stop_embedded(root, mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def db_defs(own_pg, micro_suite_root, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("drills-db")
    try:   # undone even when building the definitions fails: the URL must not leak
        root = fresh_suite(micro_suite_root, tmp / "suite")
        micro_env(mp, root, tmp)
        mp.setenv(storage.DATABASE_URL_ENV, own_pg[1])
        from genbound_assets.definitions import build_defs

        yield root, build_defs(), tmp
    finally:
        mp.undo()


@pytest.fixture
def db_drill(own_pg, db_defs, micro_suite_root, monkeypatch, tmp_path):
    """A Drill on the module's own server, with m-b's inventory and losses already stored
    (the rows a fault must not lose), and short retry delays."""
    from genbound_assets.defs.families import resources
    from genbound_assets_tests.conftest import truncate_all

    pg_root, url = own_pg
    root, defs, tmp = db_defs
    monkeypatch.setenv(storage.DATABASE_URL_ENV, url)
    if storage.embedded_pid(pg_root) is None:
        storage.start_embedded(pg_root)
    engine = storage.get_engine(url)
    truncate_all(engine)
    fresh_suite(micro_suite_root, root)
    resources._open.cache_clear()
    monkeypatch.setattr(retry, "POSTGRES_RETRY", FAST)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        d = Drill(root, micro_suite_root, defs, instance, engine, tmp_path)
        d.register()
        res = d.run(CKPT, "m-b", list(KEEP))
        assert res.success, failures(res)
        yield d, pg_root, url


def _restart(pg_root: Path) -> None:
    """``pg_ctl restart -m fast``, as an operator would run it: from outside this process (its
    engines and pooled connections are left as they are)."""
    import os

    import pgserver

    user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pgserver.pg_ctl(["-w", "-m", "fast", "restart"], pgdata=storage.embedded_pg_dir(pg_root),
                    user=user, timeout=60)


def _snapshot(url) -> tuple[dict, list]:
    """Counts of every table and m-b's rows (values only), read on a fresh connection."""
    engine = sa.create_engine(url)
    try:
        counts = table_counts(engine)
        rows = read_frame(engine, "SELECT c.step, c.status, c.fingerprint, l.eval_kind, l.n_tokens, "
                          "l.mean_loss FROM checkpoints c JOIN checkpoint_losses l USING (model, step) "
                          "WHERE c.model = 'm-b' ORDER BY c.step, l.eval_kind").rows()
    finally:
        engine.dispose()
    return counts, rows


def _retries(d: Drill, result) -> int:
    return sum(1 for r in d.instance.all_logs(result.run_id)
               if r.dagster_event and r.dagster_event.event_type_value == "STEP_UP_FOR_RETRY")


def _doc(key, fault, outcome, message, d: Drill, pg_root):
    check_row("drills", [key, fault, "checkpoint + checkpoint_loss, m-b steps 32..116", outcome,
                         normalize(message, pg=pg_root, suite=d.root)], DRILL_KEYS)


@pytest.mark.slow
def test_run_survives_a_restart_mid_write_with_zero_rows_lost(db_drill, monkeypatch):
    d, pg_root, url = db_drill
    before = _snapshot(url)
    from genbound_assets.storage import io

    real, calls, restarts, between = io.copy_frame, [], [], []

    def restarting_copy(conn, table, frame):
        calls.append(str(table))
        if len(calls) == 1:     # the rerun's first COPY: its DELETE is done, not committed
            pid = storage.embedded_pid(pg_root)
            _restart(pg_root)                        # fast shutdown: this session is killed
            restarts.append((pid, storage.embedded_pid(pg_root)))
        elif len(calls) == 2:   # the retry, before it writes: the failed attempt lost nothing
            between.append(_snapshot(url))
        return real(conn, table, frame)

    monkeypatch.setattr(io, "copy_frame", restarting_copy)
    res = d.run(CKPT, "m-b", list(KEEP))
    assert res.success, failures(res)
    (old, new), = restarts
    assert old and new and old != new                # a real restart
    assert between == [before]
    assert _retries(d, res) == 1
    warning = next(r.user_message for r in d.instance.all_logs(res.run_id)
                   if "transient database error" in (r.user_message or ""))
    assert _snapshot(url) == before                  # zero rows lost, none duplicated
    _doc("db_restarted_mid_write", "Postgres restarted (fast shutdown) during the first COPY of "
         "a rerun", "attempt 1 rolled back (previous rows intact), retried after backoff, "
         "attempt 2 completes; rows identical before/after", warning.split(": ", 1)[-1], d, pg_root)


@pytest.mark.slow
def test_database_down_when_the_run_starts(db_drill, monkeypatch):
    d, pg_root, url = db_drill
    before = _snapshot(url)
    storage.stop_embedded(pg_root)
    from genbound_assets.storage import db

    real, timers = db.connection_error, []

    def refused(*a, **k):   # the run found the server down: it comes back 1 s later
        if not timers:
            timers.append(threading.Timer(1.0, storage.start_embedded, args=(pg_root,)))
            timers[0].start()
        return real(*a, **k)

    monkeypatch.setattr(db, "connection_error", refused)
    try:
        res = d.run(CKPT, "m-b", list(KEEP))
    finally:
        for t in timers:
            t.join()
    assert res.success, failures(res)
    assert _retries(d, res) >= 1
    first = next(r.user_message for r in d.instance.all_logs(res.run_id)
                 if "transient database error" in (r.user_message or ""))
    assert "cannot connect to the database" in first
    assert _snapshot(url) == before
    _doc("db_down_at_start", "Postgres stopped when the run starts, back 1 s after the first "
         "refused connection",
         "retried with backoff until it is back; the run completes; rows identical",
         first.split(": ", 1)[-1], d, pg_root)


@pytest.mark.slow
def test_database_down_for_good_fails_in_one_line_then_a_rerun_completes(db_drill, monkeypatch):
    d, pg_root, url = db_drill
    before = _snapshot(url)
    monkeypatch.setattr(retry, "POSTGRES_RETRY", dg.RetryPolicy(max_retries=2, delay=0.2))
    storage.stop_embedded(pg_root)
    res = d.run(CKPT, "m-b", list(KEEP))
    assert not res.success
    assert _retries(d, res) == 2
    fail = next(ev.step_failure_data for ev in res.all_events if ev.event_type_value == "STEP_FAILURE")
    assert fail.error.message.startswith("Exceeded max_retries of 2")
    cause = fail.error.cause.message.strip()
    assert cause.startswith("genbound_assets.storage.db.StoreError: cannot connect to the database")
    line = cause.split(": ", 1)[1].splitlines()[0]
    storage.start_embedded(pg_root)                  # the fix
    assert _snapshot(url) == before                  # nothing was touched
    res = d.run(CKPT, "m-b", list(KEEP))
    assert res.success, failures(res)
    assert _snapshot(url) == before
    _doc("db_down_for_good", "Postgres stopped and not restarted (retries: 2)",
         "fails after 2 retries (Exceeded max_retries, cause in one line); no row touched; "
         "rerun after restart ok", line, d, pg_root)


@pytest.mark.slow
def test_bad_input_is_not_retried(db_drill, monkeypatch):
    d, pg_root, url = db_drill
    before = _snapshot(url)
    monkeypatch.setenv("GENBOUND_DELTA", "abc")
    res = d.run(("checkpoint_loss",), "m-b", list(KEEP))
    assert not res.success
    (msg,) = failures(res)
    assert msg == "ValueError: GENBOUND_DELTA='abc': expected a number"
    assert _retries(d, res) == 0
    assert _snapshot(url) == before
    monkeypatch.delenv("GENBOUND_DELTA")
    assert d.run(("checkpoint_loss",), "m-b", list(KEEP)).success
    check_row("drills", ["bad_input_not_retried", "GENBOUND_DELTA=abc (a bad setting)",
                         "checkpoint_loss, m-b steps 32..116",
                         "fails on the first attempt (Failure, allow_retries=False); no row "
                         "touched; rerun after fix ok", normalize(msg, suite=d.root)], DRILL_KEYS)


# --------------------------------------------------------------------------------------------
# what counts as transient


def _connect_error(url: str) -> BaseException:
    engine = sa.create_engine(url)
    try:
        with engine.connect():
            pass
    except Exception as e:   # noqa: BLE001 - the error is the point
        return e
    finally:
        engine.dispose()
    raise AssertionError(f"{url} connected")


def test_connection_errors_are_transient_and_bad_input_is_not(own_pg):
    import psycopg2

    pg_root, url = own_pg
    if storage.embedded_pid(pg_root) is None:
        storage.start_embedded(pg_root)
    # a real refused connection (no server on that socket) and its StoreError
    down = url.replace(f"host={pg_root}", f"host={pg_root}/nowhere")
    refused = _connect_error(down)
    assert isinstance(refused, sa.exc.OperationalError) and retry.is_transient(refused)
    try:
        storage.get_engine(down)
    except storage.StoreError as e:
        assert retry.is_transient(e)
    else:
        raise AssertionError("get_engine connected to nothing")
    # real permanent connection errors: unknown database, unknown role
    assert not retry.is_transient(_connect_error(url.replace("/postgres?", "/no_such_db?")))
    assert not retry.is_transient(_connect_error(url.replace("postgres:@", "no_such_role:@")))
    # a real statement error is not a connection error
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1/0")
    except sa.exc.DBAPIError as e:
        assert not retry.is_transient(e)
    finally:
        engine.dispose()
    # constructed: a dropped connection, an invalidated one; bad input, a bad URL
    assert retry.is_transient(psycopg2.OperationalError("server closed the connection unexpectedly"))
    assert retry.is_transient(psycopg2.InterfaceError("connection already closed"))
    inv = sa.exc.DBAPIError("SELECT 1", None, ValueError("x"), connection_invalidated=True)
    assert retry.is_transient(inv)
    assert retry.is_transient(sa.exc.OperationalError("SELECT 1", None, OSError("reset by peer")))
    auth = psycopg2.OperationalError('FATAL:  password authentication failed for user "x"')
    assert not retry.is_transient(sa.exc.OperationalError("SELECT 1", None, auth))
    assert not retry.is_transient(ValueError("GENBOUND_DELTA='abc': expected a number"))
    assert not retry.is_transient(psycopg2.IntegrityError("duplicate key"))
    try:
        storage.validate_url("mysql://x/y")
    except storage.StoreError as e:
        assert not retry.is_transient(e)


def test_one_line_names_the_error():
    assert retry.one_line(ValueError("bad\nsecond line")) == "ValueError: bad"
    assert retry.one_line(dg.Failure("m-a step 4: gone")) == "m-a step 4: gone"
    wrapped = sa.exc.OperationalError("SELECT 1", None, OSError("server closed\n  details"))
    assert retry.one_line(wrapped) == "OSError: server closed"
