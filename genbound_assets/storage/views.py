"""Postgres views from ``dbt_like_sql/``: one ``<view name>.sql`` file holding one SELECT.

Each file is parsed with sqlglot (Postgres dialect) to find the relations its SELECT reads
(CTE names and system catalogs left out): :func:`parse_view_file` -> :class:`ViewFile`.  A file
that does not parse, holds anything but one SELECT, or is badly named gets ``error`` (one line,
with the file, line and column when the parser gives them) instead of raising, so one bad file
never stops the others: the Dagster assets in ``defs/sql/`` turn it into a failure of that
file's asset only, and :func:`create_views` skips it and reports it.

* :func:`create_view` runs ``CREATE OR REPLACE VIEW`` for one file inside the caller's
  transaction (a column change PostgreSQL cannot apply in place is done by drop + create, with
  the genbound views that depend on it recreated from their files in the same transaction).
* :func:`create_views` (``genbound setup-db``, ``demo``, ``ui``, the ``store_schema`` asset)
  drops every view genbound made before (each is marked by a comment) and creates one per good
  file in dependency order, all in one transaction.  A file removed from the folder drops its
  view on the next call.

The folder is ``$GENBOUND_SQL_DIR`` when set, else the repository's ``dbt_like_sql/``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from .schema import _SCHEMA_LOCK_KEY, TABLES

SQL_DIR = Path(__file__).resolve().parents[2] / "dbt_like_sql"
SQL_DIR_ENV = "GENBOUND_SQL_DIR"
VIEW_COMMENT = "genbound:dbt_like_sql"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SYSTEM_SCHEMAS = {"pg_catalog", "information_schema"}
_TRAILING = re.compile(r";(\s|--[^\n]*|/\*.*?\*/)*\Z", re.DOTALL)
_CREATE = 'CREATE OR REPLACE VIEW "{name}" AS\n'  # one line: file line = statement line - 1


class ViewError(ValueError):
    """A view file that cannot become a view; the message is one line naming file and line."""


def sql_dir() -> Path:
    """The view folder: ``$GENBOUND_SQL_DIR`` or the repository's ``dbt_like_sql/``."""
    env = os.environ.get(SQL_DIR_ENV, "").strip()
    return Path(env).expanduser().resolve() if env else SQL_DIR


@dataclass(frozen=True)
class ViewFile:
    """One ``<name>.sql`` file, parsed.

    ``reads``: the relations its SELECT reads (lower-cased unless quoted; ``schema.name`` for a
    schema other than public), sorted.  ``error``: why it cannot become a view (one line), or
    None.  ``body``: the statement sent to PostgreSQL (the file, trailing ``;`` removed; line
    numbers unchanged).
    """

    name: str
    path: Path
    body: str
    reads: tuple[str, ...] = ()
    error: str | None = None
    code_version: str = ""

    def tables(self) -> tuple[str, ...]:
        """The genbound tables it reads."""
        return tuple(r for r in self.reads if r in TABLES)

    def views(self, names: Iterable[str]) -> tuple[str, ...]:
        """The views among ``names`` it reads."""
        names = set(names)
        return tuple(r for r in self.reads if r in names)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _parse_error_message(where: str, body: str, err: Exception) -> str:
    from sqlglot.errors import ParseError, TokenError

    if isinstance(err, ParseError) and err.errors:
        e = err.errors[0]
        near = " ".join(str(e.get("highlight") or "").split())
        desc = " ".join(str(e.get("description") or "syntax error").split())
        return (f"{where} line {e.get('line')}, col {e.get('col')}: {desc}"
                + (f" (near {near!r})" if near else ""))
    if isinstance(err, TokenError):
        # "Error tokenizing '<text up to the failure>'": locate it to name a line
        m = re.match(r"Error tokenizing '(.*)'\Z", str(err), re.DOTALL)
        line = None
        if m and m.group(1) and m.group(1) in body:
            end = body.index(m.group(1)) + len(m.group(1))
            line = body.count("\n", 0, end) + 1
        at = f" line {line}" if line else ""
        return (f"{where}{at}: cannot tokenize the SQL (an unterminated string, quoted "
                "identifier or comment?)")
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return f"{where}: {first}"


def _relations(tree) -> tuple[str, ...]:
    """Relations a parsed query reads: tables in every scope, CTE references left out."""
    from sqlglot import exp
    from sqlglot.optimizer.scope import traverse_scope

    def norm(ident) -> str:
        return ident.name if ident.quoted else ident.name.lower()

    found: set[str] = set()
    try:
        tables = [src for scope in traverse_scope(tree) for src in scope.sources.values()
                  if isinstance(src, exp.Table)]
    except Exception:  # scope analysis refused it: every table reference minus CTE names
        ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
        tables = [t for t in tree.find_all(exp.Table) if t.name.lower() not in ctes or t.db]
    for t in tables:
        if not isinstance(t.this, exp.Identifier) or not t.name:
            continue  # a table function (generate_series, unnest, ...)
        name = norm(t.this)
        db = norm(t.args["db"]) if isinstance(t.args.get("db"), exp.Identifier) else ""
        if db in _SYSTEM_SCHEMAS or (not db and name.startswith("pg_")):
            continue
        found.add(name if db in ("", "public") else f"{db}.{name}")
    return tuple(sorted(found))


def parse_view_file(path: Path | str) -> ViewFile:
    """Read and parse one view file; never raises for bad content (see ``ViewFile.error``)."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    path = Path(path)
    name, where = path.stem, _display(path)
    raw = path.read_text()
    body = _TRAILING.sub("", raw.rstrip())
    version = hashlib.sha256(raw.encode()).hexdigest()[:16]

    def bad(msg: str) -> ViewFile:
        return ViewFile(name=name, path=path, body=body, error=msg, code_version=version)

    if not _NAME.match(name):
        return bad(f"{where}: a view file's name must be a lower-case SQL identifier "
                   "(letters, digits, _; at most 63 characters)")
    if name in TABLES:
        return bad(f"{where}: {name!r} is a genbound table; a view needs another name")
    try:
        statements = [s for s in sqlglot.parse(body, read="postgres")
                      if s is not None and not isinstance(s, exp.Semicolon)]
    except SqlglotError as e:
        return bad(_parse_error_message(where, body, e))
    if len(statements) != 1:
        return bad(f"{where}: must hold exactly one statement, found {len(statements)}")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        return bad(f"{where}: must hold one SELECT (or WITH ... SELECT) statement, "
                   f"found {type(tree).__name__.upper()}")
    reads = _relations(tree)
    if name in reads:
        return bad(f"{where}: the view reads itself")
    return ViewFile(name=name, path=path, body=body, reads=reads, code_version=version)


def load_view_files(folder: Path | str | None = None) -> list[ViewFile]:
    """Every ``*.sql`` file of the folder (default :func:`sql_dir`), parsed, sorted by name,
    with cycles between views marked as errors on every view in the cycle."""
    folder = Path(folder) if folder is not None else sql_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"view folder {folder} does not exist (set {SQL_DIR_ENV})")
    views = [parse_view_file(f) for f in sorted(folder.glob("*.sql"))]
    return _mark_cycles(views)


def _mark_cycles(views: list[ViewFile]) -> list[ViewFile]:
    by_name = {v.name: v for v in views}
    deps = {v.name: [d for d in v.views(by_name) if d != v.name] for v in views}
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cyclic: dict[str, list[str]] = {}
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in deps[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                for w in comp:
                    cyclic[w] = sorted(comp)

    for v in sorted(deps):
        if v not in index:
            visit(v)
    out = []
    for v in views:
        if v.name in cyclic and v.error is None:
            cycle = " -> ".join(cyclic[v.name] + [cyclic[v.name][0]])
            v = ViewFile(name=v.name, path=v.path, body=v.body, reads=v.reads, code_version=v.code_version,
                         error=f"{_display(v.path)}: views read each other in a cycle ({cycle})")
        out.append(v)
    return out


def dependency_order(views: Iterable[ViewFile]) -> list[ViewFile]:
    """The views without an error, each after the views it reads (ties by name).  A view
    reading a view with an error is placed as if it did not read it (callers skip it)."""
    good = {v.name: v for v in views if v.error is None}
    done: list[ViewFile] = []
    placed: set[str] = set()
    while True:
        ready = sorted(n for n, v in good.items()
                       if n not in placed and set(v.views(good)) - {n} <= placed)
        if not ready:
            return done
        for n in ready:
            done.append(good[n])
            placed.add(n)


def view_files(folder: Path | str | None = None) -> list[Path]:
    """The ``*.sql`` files that define views, sorted by name; raises ValueError for the first
    file with an error (see :func:`load_view_files` for the non-raising form)."""
    views = load_view_files(folder)
    for v in views:
        if v.error:
            raise ViewError(v.error)
    return [v.path for v in views]


def _pg_message(view: ViewFile, err: DBAPIError) -> str:
    orig = getattr(err, "orig", None) or err
    first = (str(getattr(orig, "pgerror", None) or orig).strip().splitlines() or [""])[0]
    first = " ".join(re.sub(r"^ERROR:\s*", "", first).split())
    line = ""
    diag = getattr(orig, "diag", None)
    pos = getattr(diag, "statement_position", None) if diag is not None else None
    if pos:
        stmt = _CREATE.format(name=view.name) + view.body
        line = f" line {stmt.count(chr(10), 0, int(pos) - 1)}"
    return f"{_display(view.path)}{line}: {first}"


def _dependent_views(conn: Connection, name: str) -> list[str]:
    """Views that read ``name``, directly or through other views."""
    rows = conn.execute(text("""
        WITH RECURSIVE dep(oid) AS (
            SELECT DISTINCT r.ev_class FROM pg_depend d
            JOIN pg_rewrite r ON r.oid = d.objid
            WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
              AND d.refobjid = to_regclass(:name) AND r.ev_class <> d.refobjid
            UNION
            SELECT r.ev_class FROM dep
            JOIN pg_depend d ON d.refobjid = dep.oid AND d.classid = 'pg_rewrite'::regclass
            JOIN pg_rewrite r ON r.oid = d.objid
            WHERE r.ev_class <> dep.oid
        )
        SELECT c.relname FROM dep JOIN pg_class c ON c.oid = dep.oid ORDER BY 1
    """), {"name": f'"{name}"'}).scalars().all()
    return list(rows)


def _relkind(conn: Connection, name: str) -> str | None:
    return conn.execute(text("SELECT c.relkind FROM pg_class c JOIN pg_namespace n ON "
                             "n.oid = c.relnamespace WHERE n.nspname = current_schema() "
                             "AND c.relname = :n"), {"n": name}).scalar()


def execute_verbatim(conn: Connection, sql: str):
    """Send ``sql`` to PostgreSQL exactly as written, on the connection's transaction.

    Neither SQLAlchemy (``:name``) nor psycopg2 (``%``: it formats whenever parameters are
    passed, even none) touches it: the DBAPI cursor is called without parameters.  Errors are
    raised as SQLAlchemy's DBAPIError subclasses.  Returns the (open) DBAPI cursor.
    """
    import psycopg2

    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(sql)
    except psycopg2.Error as e:
        cursor.close()
        raise DBAPIError.instance(sql, None, e, psycopg2.Error) from e
    return cursor


def _run_create(conn: Connection, view: ViewFile, replace: bool = True) -> None:
    stmt = _CREATE.format(name=view.name) + view.body
    if not replace:
        stmt = stmt.replace("CREATE OR REPLACE VIEW", "CREATE VIEW", 1)
    execute_verbatim(conn, stmt)
    conn.execute(text(f"COMMENT ON VIEW \"{view.name}\" IS '{VIEW_COMMENT}'"))


def create_view(conn: Connection, view: ViewFile,
                others: Mapping[str, ViewFile] | None = None) -> list[str]:
    """``CREATE OR REPLACE VIEW`` for one file, inside the caller's transaction.

    When PostgreSQL cannot replace in place (a column removed, renamed or retyped: SQLSTATE
    42P16), the view is dropped and created, and the views that read it (all of which must be
    genbound views in ``others``) are recreated from their files, in dependency order.  Returns
    the names of those recreated views.  Raises :class:`ViewError` (one line) on failure; the
    caller's transaction must then be rolled back.
    """
    if view.error:
        raise ViewError(view.error)
    kind = _relkind(conn, view.name)
    if kind not in (None, "v"):
        raise ViewError(f"{_display(view.path)}: {view.name!r} already exists and is not a view")
    conn.exec_driver_sql("SAVEPOINT genbound_view")
    try:
        _run_create(conn, view)
        conn.exec_driver_sql("RELEASE SAVEPOINT genbound_view")
        return []
    except DBAPIError as e:
        conn.exec_driver_sql("ROLLBACK TO SAVEPOINT genbound_view")
        if getattr(getattr(e, "orig", None), "pgcode", None) != "42P16" or kind != "v":
            raise ViewError(_pg_message(view, e)) from None
    others = dict(others or {})
    dependents = _dependent_views(conn, view.name)
    foreign = [d for d in dependents if d not in others or others[d].error]
    if foreign:
        raise ViewError(f"{_display(view.path)}: its columns changed and views outside the SQL "
                        f"folder (or broken ones) read it: {', '.join(foreign)}; drop them first")
    conn.exec_driver_sql(f'DROP VIEW "{view.name}" CASCADE')
    try:
        _run_create(conn, view, replace=False)
    except DBAPIError as e:
        raise ViewError(_pg_message(view, e)) from None
    order = [v for v in dependency_order(others.values()) if v.name in dependents]
    for dep in order:
        try:
            _run_create(conn, dep, replace=False)
        except DBAPIError as e:
            raise ViewError(f"recreating {dep.name}, which reads {view.name}: "
                            f"{_pg_message(dep, e)}") from None
    return [v.name for v in order]


@dataclass
class ViewsReport:
    """What :func:`create_views_report` did: views created, and files skipped with why."""

    created: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def create_views_report(engine: Engine, folder: Path | str | None = None) -> ViewsReport:
    """(Re)create one view per good SQL file (module docstring); bad files are skipped and
    reported, and so are views whose SQL PostgreSQL refuses and views reading a skipped one.

    With the default folder missing (a non-editable install), does nothing.
    """
    report = ViewsReport()
    folder_path = Path(folder) if folder is not None else sql_dir()
    if folder is None and not folder_path.is_dir():
        if os.environ.get(SQL_DIR_ENV, "").strip():   # a typo must not silently drop the views
            from .db import StoreError

            raise StoreError(f"{SQL_DIR_ENV}={folder_path}: no such folder")
        return report
    views = load_view_files(folder_path)
    by_name = {v.name: v for v in views}
    for v in views:
        if v.error:
            report.failed[v.name] = v.error
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
        old = conn.execute(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind = 'v' AND n.nspname = current_schema() "
                "AND obj_description(c.oid, 'pg_class') = :tag"
            ),
            {"tag": VIEW_COMMENT},
        ).scalars().all()
        for name in old:
            conn.execute(text(f'DROP VIEW IF EXISTS "{name}" CASCADE'))
        for v in views:
            if _relkind(conn, v.name) == "v":
                conn.execute(text(f'DROP VIEW IF EXISTS "{v.name}" CASCADE'))
        for v in dependency_order(views):
            blocked = [d for d in v.views(by_name) if d in report.failed]
            if blocked:
                report.failed[v.name] = (f"{_display(v.path)}: not created because it reads "
                                         f"{', '.join(blocked)}, which failed")
                continue
            conn.exec_driver_sql("SAVEPOINT genbound_views")
            try:
                if _relkind(conn, v.name) not in (None, "v"):
                    raise ViewError(f"{_display(v.path)}: {v.name!r} already exists and is not a view")
                _run_create(conn, v, replace=False)
            except (DBAPIError, ViewError) as e:
                conn.exec_driver_sql("ROLLBACK TO SAVEPOINT genbound_views")
                report.failed[v.name] = str(e) if isinstance(e, ViewError) else _pg_message(v, e)
                continue
            conn.exec_driver_sql("RELEASE SAVEPOINT genbound_views")
            report.created.append(v.name)
        # views reading a view that failed in PostgreSQL were never reached by the order above
        for v in views:
            if v.name not in report.created and v.name not in report.failed:
                report.failed[v.name] = (f"{_display(v.path)}: not created because a view it "
                                         "reads failed")
    return report


def create_views(engine: Engine, folder: Path | str | None = None) -> list[str]:
    """(Re)create the views (see :func:`create_views_report`); returns the names created, in
    creation order.  Files that cannot become views are skipped, never raised."""
    return create_views_report(engine, folder).created
