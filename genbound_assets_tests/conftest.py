"""Shared fixtures: a real PostgreSQL for the session, and a per-test clean slate.

* ``pg_url``    the test database: $GENBOUND_TEST_DATABASE_URL (a throwaway database: its
                genbound tables get truncated) or an embedded pgserver in a temp dir, stopped
                and deleted after the session.  While it is up, GENBOUND_DATABASE_URL points
                at it, so code calling ``storage.get_engine()`` uses the test database.
* ``pg_engine`` a SQLAlchemy engine on it with the schema and views created (session scope).
* ``pg_clean``  function scope: truncates every genbound table, then yields ``pg_engine``.

GENBOUND_DATA_DIR is a session temp dir for every test, so no test touches
~/.local/share/genbound; an embedded server started there by a test is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

TEST_URL_ENV = "GENBOUND_TEST_DATABASE_URL"


def _private_tmp(prefix: str):
    # Not under pytest's tmp_path: every pytest session that starts resets
    # /tmp/pytest-of-<user> to mode 0700, which locks out the `pgserver` system user that runs
    # PostgreSQL when tests run as root (several developers share this machine).
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread for the whole run: the test models are tiny, and on a shared 2-core box
    two OpenMP threads spin-wait and run several times slower than one."""
    import torch

    from genbound_assets.runtime import tune_allocator

    tune_allocator()          # as every genbound process does (genbound_assets/runtime.py)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def genbound_data_dir():
    from genbound_assets import storage

    root = _private_tmp("genbound-data-")
    old = os.environ.get(storage.DATA_DIR_ENV)
    os.environ[storage.DATA_DIR_ENV] = str(root)
    try:
        yield root
    finally:
        storage.stop_embedded(root)  # in case a test started one on demand
        shutil.rmtree(root, ignore_errors=True)
        if old is None:
            os.environ.pop(storage.DATA_DIR_ENV, None)
        else:
            os.environ[storage.DATA_DIR_ENV] = old


@pytest.fixture(scope="session")
def pg_embedded_root():
    """Root dir of the session's embedded server (its data is in ``<root>/pg``); None if external."""
    if os.environ.get(TEST_URL_ENV, "").strip():
        yield None
        return
    from genbound_assets import storage

    root = _private_tmp("genbound-testdb-")
    try:
        yield root
    finally:
        storage.stop_embedded(root, mode="immediate")  # throwaway data: no checkpoint
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(pg_embedded_root):
    from genbound_assets import storage

    external = os.environ.get(TEST_URL_ENV, "").strip()
    if external:
        url = storage.validate_url(external, source=TEST_URL_ENV)
    else:
        url = storage.start_embedded(pg_embedded_root)
        import sqlalchemy as sa

        # throwaway data: skip fsync (both settings apply on reload, no restart)
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("ALTER SYSTEM SET fsync = off")
            conn.exec_driver_sql("ALTER SYSTEM SET synchronous_commit = off")
            conn.exec_driver_sql("SELECT pg_reload_conf()")
        engine.dispose()
    old = os.environ.get(storage.DATABASE_URL_ENV)
    os.environ[storage.DATABASE_URL_ENV] = url
    try:
        yield url
    finally:
        if old is None:
            os.environ.pop(storage.DATABASE_URL_ENV, None)
        else:
            os.environ[storage.DATABASE_URL_ENV] = old


@pytest.fixture(scope="session")
def pg_engine(pg_url):
    from genbound_assets import storage

    engine = storage.get_engine(pg_url)  # creates the schema
    storage.create_views(engine)
    yield engine
    engine.dispose()


def truncate_all(engine) -> None:
    """Empty every genbound table (one statement, so it is quick and atomic)."""
    from genbound_assets.storage import TABLES

    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE " + ", ".join(f'"{t}"' for t in TABLES))


@pytest.fixture
def pg_clean(pg_engine):
    """``pg_engine`` with every genbound table emptied before the test."""
    truncate_all(pg_engine)
    return pg_engine


@pytest.fixture(scope="session")
def micro_suite_root():
    """The micro suite (genbound_assets_tests/micro.py), trained once per session; copy it
    (micro.copy_suite) before changing it."""
    from genbound_assets_tests.micro import train_micro

    root = _private_tmp("genbound-micro-")
    try:
        yield train_micro(root / "suite")
    finally:
        shutil.rmtree(root, ignore_errors=True)
