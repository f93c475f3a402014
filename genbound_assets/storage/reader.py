"""The read-only role ``genbound_reader``: who may read the store without being able to change it.

``setup_reader(engine)`` (run by ``genbound setup-db``; ``reader_engine()`` runs it on first use)
creates or updates the role, as the store's own (admin) connection:

* ``LOGIN`` with ``NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS``;
* ``CONNECT`` on the database, ``USAGE`` on the schema, ``SELECT`` on every table and view in it,
  and default privileges so tables and views the admin role creates later are readable too;
* every other table privilege (INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER) and
  ``CREATE`` on the schema revoked from it.

So a write through the role is refused *by PostgreSQL* ("permission denied for table bounds",
"must be owner of table bounds", "permission denied for schema public"), whatever the client.

Password: ``$GENBOUND_READER_PASSWORD`` if set, else the contents of
``<data dir>/reader_password`` (created on first use with 32 random URL-safe characters, mode
0600).  ``setup_reader`` sets the role's password to it each time, so the two stay in step.
The embedded server authenticates local socket connections with ``trust`` (pgserver's initdb):
there the password is not checked and the role only guards against mistakes; on a server with
password authentication it is the credential.  See docs/sql.md.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

from .db import StoreError, connected_engine, connection_error, data_dir, database_url, get_engine

READER_ROLE = "genbound_reader"
READER_PASSWORD_ENV = "GENBOUND_READER_PASSWORD"
READER_PASSWORD_FILE = "reader_password"
_READER_LOCK_KEY = 0x67627264  # "gbrd": serializes concurrent setup_reader calls

def reader_password_file() -> Path:
    return data_dir() / READER_PASSWORD_FILE


def reader_password() -> str:
    """The reader's password: $GENBOUND_READER_PASSWORD, else the 0600 file under the data dir
    (generated on first use).  A file readable by others is tightened to 0600."""
    env = os.environ.get(READER_PASSWORD_ENV, "")
    if env.strip():
        return env
    path = reader_password_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process won the race: read its password
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, 0o600)
    password = path.read_text().strip()
    if not password:
        raise StoreError(f"{path} is empty: delete it (a new password is generated) or set "
                         f"{READER_PASSWORD_ENV}")
    return password


@dataclass
class ReaderSetup:
    """What ``setup_reader`` did, and what it could not rule out."""

    role: str
    created: bool
    schema: str
    database: str
    warnings: list[str] = field(default_factory=list)


def _q(conn, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def setup_reader(engine: Engine, password: str | None = None) -> ReaderSetup:
    """Create or update ``genbound_reader`` on ``engine``'s database (module docstring).

    Idempotent; one transaction under an advisory lock.  ``engine`` must connect as a role that
    may create roles and owns the genbound tables (the store's own URL).  Raises a one-line
    StoreError when it may not.
    """
    password = reader_password() if password is None else password
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _READER_LOCK_KEY})
            schema, database, admin = conn.execute(
                sa.text("SELECT current_schema(), current_database(), current_user")).one()
            role, sch, db = _q(conn, READER_ROLE), _q(conn, schema), _q(conn, database)
            exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                                  {"r": READER_ROLE}).first() is not None
            attrs = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
            # psycopg2 interpolates :pw client-side, quoted as a literal (utility statements
            # take no server-side parameters)
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sa.text(f"{verb} ROLE {role} WITH {attrs} PASSWORD :pw"), {"pw": password})
            conn.exec_driver_sql(f"GRANT CONNECT ON DATABASE {db} TO {role}")
            conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {sch} TO {role}")
            conn.exec_driver_sql(f"REVOKE CREATE ON SCHEMA {sch} FROM {role}")
            conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA {sch} TO {role}")
            others = "INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER"
            conn.exec_driver_sql(f"REVOKE {others} ON ALL TABLES IN SCHEMA {sch} FROM {role}")
            # tables and views the admin role creates later (views count as tables here)
            conn.exec_driver_sql(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {sch} GRANT SELECT ON TABLES TO {role}")
            conn.exec_driver_sql(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA {sch} REVOKE {others} ON TABLES FROM {role}")
            warnings = []
            if conn.execute(sa.text("SELECT has_schema_privilege(:r, :s, 'CREATE')"),
                            {"r": READER_ROLE, "s": schema}).scalar_one():
                warnings.append(
                    f"{READER_ROLE} can still create tables in schema {schema} through PUBLIC "
                    f"(PostgreSQL < 15 default): as an administrator run "
                    f"REVOKE CREATE ON SCHEMA {sch} FROM PUBLIC")
            not_owned = conn.execute(sa.text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = :s AND c.relkind IN ('r', 'v', 'm', 'p') "
                "AND pg_get_userbyid(c.relowner) <> :admin ORDER BY 1"),
                {"s": schema, "admin": admin}).scalars().all()
            if not_owned:
                warnings.append(
                    f"{len(not_owned)} relation(s) in schema {schema} belong to another role "
                    f"(e.g. {not_owned[0]}): tables that role creates later are not covered by "
                    f"{admin}'s default privileges; rerun genbound setup-db after creating them")
    except DBAPIError as e:
        if e.connection_invalidated:
            raise connection_error(engine.url.render_as_string(hide_password=False), e) from None
        orig = getattr(e, "orig", None) or e
        first = (str(getattr(orig, "pgerror", None) or orig).strip().splitlines() or [""])[0]
        first = " ".join(first.replace("ERROR:", "").split())
        raise StoreError(
            f"cannot set up the read-only role {READER_ROLE} as "
            f"{engine.url.username or 'this user'} ({first}); an administrator can run "
            "`genbound setup-db` once (see docs/sql.md)") from None
    return ReaderSetup(role=READER_ROLE, created=not exists, schema=schema, database=database,
                       warnings=warnings)


def reader_url(admin_url: str | None = None, password: str | None = None) -> str:
    """The store's URL (resolved as ``database_url`` does) with the reader's user and password."""
    url = make_url(database_url(admin_url))
    pw = reader_password() if password is None else password
    return url.set(username=READER_ROLE, password=pw).render_as_string(hide_password=False)


def reader_needs_setup(engine: Engine) -> bool:
    """True when the role is missing or some table or view in the schema is not readable by it."""
    with engine.connect() as conn:
        if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"),
                        {"r": READER_ROLE}).first() is None:
            return True
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'v', 'm', 'p') "
            "AND NOT has_table_privilege(:r, c.oid, 'SELECT')"), {"r": READER_ROLE}).scalar_one())


def reader_engine(url: str | None = None) -> Engine:
    """A cached engine that connects as ``genbound_reader`` (set up first if needed).

    ``url`` is the store's own URL (None: $GENBOUND_DATABASE_URL or the embedded server); the
    reader connects to the same host, port and database.  Raises a one-line StoreError when the
    role cannot be set up or cannot connect.
    """
    admin = get_engine(url)  # the schema exists before the reader looks at it
    if reader_needs_setup(admin):
        setup_reader(admin)
    resolved = reader_url(admin.url.render_as_string(hide_password=False))
    try:
        return connected_engine(resolved)
    except StoreError as err:
        if "password authentication failed" in str(err):
            raise StoreError(f"{err}; run `genbound setup-db` to give {READER_ROLE} the password "
                             f"from ${READER_PASSWORD_ENV} or {reader_password_file()}") from None
        raise


__all__ = [
    "READER_PASSWORD_ENV",
    "READER_ROLE",
    "ReaderSetup",
    "reader_engine",
    "reader_needs_setup",
    "reader_password",
    "reader_password_file",
    "reader_url",
    "setup_reader",
]
