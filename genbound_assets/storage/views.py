"""Postgres views from ``dbt_like_sql/``: one ``<view name>.sql`` file holding one SELECT.

``create_views`` drops every view genbound made before (each is marked by a comment), then
creates one view per file in file-name order, all in one transaction.  The view's name is the
file's stem, so a view that selects from another view must have a name that sorts after it.
A file removed from the folder drops its view on the next call.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from .schema import _SCHEMA_LOCK_KEY

SQL_DIR = Path(__file__).resolve().parents[2] / "dbt_like_sql"
VIEW_COMMENT = "genbound:dbt_like_sql"
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def view_files(folder: Path | str | None = None) -> list[Path]:
    """The ``*.sql`` files that define views, sorted by name; validated (name, one statement)."""
    folder = Path(folder) if folder is not None else SQL_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"view folder {folder} does not exist")
    files = sorted(folder.glob("*.sql"))
    for f in files:
        if not _NAME.match(f.stem):
            raise ValueError(f"{f}: a view file's name must be a lower-case SQL identifier")
        body = _body(f)
        if not re.match(r"^(select|with)\b", body, re.IGNORECASE):
            raise ValueError(f"{f}: must hold one SELECT (or WITH ... SELECT) statement")
        if ";" in body:
            raise ValueError(f"{f}: must hold exactly one statement (found ';' inside)")
    return files


def _body(path: Path) -> str:
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("--")]
    return "\n".join(lines).strip().rstrip(";").strip()


def create_views(engine: Engine, folder: Path | str | None = None) -> list[str]:
    """(Re)create one view per SQL file in ``folder`` (default: the repo's ``dbt_like_sql/``).

    Returns the view names.  With the default folder missing (a non-editable install), does
    nothing and returns [].
    """
    if folder is None and not SQL_DIR.is_dir():
        return []
    files = view_files(folder)
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
        for f in files:
            conn.execute(text(f'DROP VIEW IF EXISTS "{f.stem}" CASCADE'))
            # exec_driver_sql: no bind-parameter parsing of the user's SQL (':name', '%')
            conn.exec_driver_sql(f'CREATE VIEW "{f.stem}" AS\n{_body(f)}')
            conn.execute(text(f"COMMENT ON VIEW \"{f.stem}\" IS '{VIEW_COMMENT}'"))
    return [f.stem for f in files]
