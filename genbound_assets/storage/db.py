"""Where the store lives: the database URL, the embedded PostgreSQL, and cached engines.

Resolution order for the URL (see docs/storage.md):

1. an explicit ``url`` argument (e.g. a Dagster resource's config),
2. ``GENBOUND_DATABASE_URL`` (``postgresql+psycopg2://...``; a plain ``postgresql://`` or
   ``postgres://`` URL is accepted and used with psycopg2),
3. otherwise an *embedded* PostgreSQL started with ``pgserver`` in ``<data dir>/pg``, where the
   data dir is ``GENBOUND_DATA_DIR`` or ``~/.local/share/genbound``.  The embedded server is left
   running when the process exits, so later commands (and Dagster's run workers) reuse it;
   ``genbound stop-db`` stops it.

Every failure a user can cause (bad URL, unreachable server) raises :class:`StoreError`, whose
message is one line that names where the URL came from, so the CLI can print it as is.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

DATABASE_URL_ENV = "GENBOUND_DATABASE_URL"
DATA_DIR_ENV = "GENBOUND_DATA_DIR"
DRIVER = "postgresql+psycopg2"

_engines: dict[str, Engine] = {}
_schema_ready: set[str] = set()
_lock = threading.Lock()


class StoreError(RuntimeError):
    """A configuration or connection problem, with a one-line message meant for users."""


def data_dir() -> Path:
    """genbound's data directory: ``$GENBOUND_DATA_DIR`` or ``~/.local/share/genbound``."""
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    return Path(env).expanduser().resolve() if env else Path.home() / ".local/share/genbound"


def embedded_pg_dir(root: Path | str | None = None) -> Path:
    return (Path(root).expanduser().resolve() if root else data_dir()) / "pg"


def describe_url(url: str) -> str:
    """The URL with any password masked (for messages and logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("://", 1)[0] + "://…" if "://" in url else "<unparsable>"


PLAIN_SCHEMES = ("postgresql", "postgres")


def validate_url(url: str, source: str = DATABASE_URL_ENV) -> str:
    """Return ``url`` as a ``postgresql+psycopg2://`` URL, else raise a one-line StoreError.

    A plain ``postgresql://`` or ``postgres://`` URL (what psql, libpq and most hosting
    providers hand out) is rewritten to ``postgresql+psycopg2://``: SQLAlchemy 2.1 would map it
    to psycopg 3, which genbound does not install.  Only the scheme changes (host, password,
    query string such as ``?sslmode=require`` or ``?host=/socket/dir`` stay byte for byte).
    Any other scheme or driver is refused with a message naming ``source``.
    """
    url = url.strip()
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"{source} is not a database URL ({describe_url(url)!r}); "
            f"expected {DRIVER}://user:password@host:port/dbname"
        ) from None
    if parsed.drivername in PLAIN_SCHEMES:
        return DRIVER + "://" + url.split("://", 1)[1]
    if parsed.drivername != DRIVER:
        raise StoreError(
            f"{source} must be a PostgreSQL URL (postgresql://, postgres:// or {DRIVER}://), "
            f"got {parsed.drivername}://: write postgresql://user:password@host:port/dbname"
        )
    return url


def start_embedded(root: Path | str | None = None) -> str:
    """Start (or attach to) the embedded PostgreSQL in ``<root>/pg``; return its URL.

    pgserver reuses a server already running on the same directory.  The server is *not*
    stopped when this process exits (``cleanup_mode=None``): use :func:`stop_embedded`.
    """
    pg = embedded_pg_dir(root)
    try:
        pg.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the data directory {pg.parent} ({DATA_DIR_ENV}): "
                         f"{e.strerror or e}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        import pgserver
    try:
        # pgserver keeps one handle per data dir per process and returns it without checking
        # that its server still runs: after a stop (genbound stop-db, a crash, a restart) this
        # process would get a dead server's URL forever.  Start the server of a stale handle.
        stale = pgserver.postgres_server.PostgresServer._instances.get(pg.resolve())
        if stale is not None and embedded_pid(pg.parent) is None:
            with stale._lock:
                stale.ensure_postgres_running()
        server = pgserver.get_server(pg, cleanup_mode=None)
    except Exception as e:  # initdb/pg_ctl failures: point at the log
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StoreError(
            f"could not start the embedded PostgreSQL in {pg} ({first}); see {pg / 'log'}, "
            f"or set {DATABASE_URL_ENV} to use an external server"
        ) from e
    uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    return DRIVER + uri[len("postgresql") :]


def embedded_pid(root: Path | str | None = None) -> int | None:
    """PID of the embedded server's postmaster if it is running, else None."""
    import psutil

    pid_file = embedded_pg_dir(root) / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        proc = psutil.Process(pid)
        return pid if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def stop_embedded(root: Path | str | None = None, *, mode: str = "fast") -> bool:
    """Stop the embedded server in ``<root>/pg``; return False if none was running.

    ``mode`` is pg_ctl's shutdown mode: "fast" (default) or "immediate" (for throwaway data).
    """
    pg = embedded_pg_dir(root)
    if embedded_pid(root) is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        user = "pgserver"  # pgserver runs the server as this system user when we are root
    pgserver.pg_ctl(["-w", "-m", mode, "stop"], pgdata=pg, user=user, timeout=60)
    for url in [u for u in _engines if f"host={pg}" in u]:
        _engines.pop(url).dispose()
        _schema_ready.discard(url)
    return True


def database_url(url: str | None = None, *, start: bool = True) -> str:
    """Resolve the store's URL: explicit ``url``, else $GENBOUND_DATABASE_URL, else embedded."""
    if url is not None and url.strip():
        return validate_url(url, source="database_url")
    env = os.environ.get(DATABASE_URL_ENV, "")
    if env.strip():
        return validate_url(env, source=DATABASE_URL_ENV)
    if not start:
        raise StoreError(f"{DATABASE_URL_ENV} is not set and starting the embedded server is off")
    return start_embedded()


def _source_of(url: str) -> str:
    env = os.environ.get(DATABASE_URL_ENV, "").strip()
    try:
        env_resolved = validate_url(env) if env else ""
    except StoreError:
        env_resolved = ""
    if env and url in (env, env_resolved):
        return f"{DATABASE_URL_ENV}={describe_url(url)}"
    if "host=" in url and url.startswith(f"{DRIVER}://postgres:@/"):
        return f"the embedded server ({describe_url(url)})"
    return describe_url(url)


def connection_error(url: str, err: BaseException) -> StoreError:
    """A one-line StoreError for a failed connection, naming where the URL came from."""
    orig = getattr(err, "orig", None) or err
    msg = " ".join(str(orig).split()) or type(orig).__name__
    return StoreError(f"cannot connect to the database at {_source_of(url)}: {msg}")


def connected_engine(resolved: str) -> Engine:
    """The process's cached engine for an already resolved URL, checked with one round trip.
    An unreachable server drops it from the cache and raises :class:`StoreError` (one line)."""
    with _lock:
        engine = _engines.get(resolved)
        if engine is None:
            engine = sa.create_engine(resolved, pool_pre_ping=True)
            _engines[resolved] = engine
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
    except DBAPIError as e:
        with _lock:
            _engines.pop(resolved, None)
        engine.dispose()
        raise connection_error(resolved, e) from None
    return engine


def get_engine(url: str | None = None, *, ensure_schema: bool = True) -> Engine:
    """A cached SQLAlchemy engine for the store, with the schema created on first use.

    Views are not touched here (``create_views`` drops and recreates them): ``genbound setup-db``,
    ``genbound demo``, ``genbound ui`` and the ``store_schema`` asset (re)create them.

    ``url=None`` resolves through :func:`database_url` (env var, then the embedded server).
    Raises :class:`StoreError` (one line) if the URL is bad or the server is unreachable.
    """
    resolved = database_url(url)
    engine = connected_engine(resolved)
    if ensure_schema and resolved not in _schema_ready:
        from .schema import create_schema

        create_schema(engine)
        _schema_ready.add(resolved)
    return engine
