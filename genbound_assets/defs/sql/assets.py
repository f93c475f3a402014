"""One asset per SQL view file (see this package's docstring and docs/sql.md).

No `from __future__ import annotations` in asset modules: Dagster reads the `context` and
resource annotations at definition time and rejects string annotations.
"""

import re
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from genbound_assets.storage import (
    TABLES,
    ViewError,
    ViewFile,
    create_view,
    load_view_files,
    sql_dir,
)
from genbound_assets.storage.schema import _SCHEMA_LOCK_KEY

from ..families.retry import POSTGRES_RETRY, retry_transient
from ..store.resources import PostgresResource
from .lineage import SQL_VIEW_KEY, sql_key, table_key

ROW_COUNT_TIMEOUT_MS = 10_000


def _description(view: ViewFile) -> str:
    """The file's leading comment block, joined into paragraphs (or a default)."""
    lines = []
    for line in view.path.read_text().splitlines():
        s = line.strip()
        if not s.startswith("--"):
            if s:
                break
            continue
        lines.append(s[2:].strip())
    text = "\n".join(lines).strip()
    head = f"View `{view.name}` ({view.path.name})."
    if view.error:
        return f"BROKEN: {view.error}\n\n{head}"
    return f"{head}\n\n{text}" if text else head


def _asset_name(stem: str, taken: set[str]) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", stem) or "_"
    base, i = name, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _columns(conn, name: str) -> dg.TableSchema:
    rows = conn.execute(sa.text(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = :n ORDER BY ordinal_position"),
        {"n": name}).all()
    return dg.TableSchema(columns=[dg.TableColumn(name=c, type=t) for c, t in rows])


def _row_count(engine, name: str) -> int | None:
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ROW_COUNT_TIMEOUT_MS}")
            return int(conn.exec_driver_sql(f'SELECT count(*) FROM "{name}"').scalar_one())
    except DBAPIError:
        return None  # too slow or failing to evaluate: the view exists, its count is unknown


def materialize_view(context: dg.AssetExecutionContext, engine, path: Path,
                     declared_reads: tuple[str, ...]) -> dg.MaterializeResult:
    """Create or replace the view of ``path`` (read and parsed now: the file is the truth)."""
    views = {v.name: v for v in load_view_files(path.parent)}
    view = views.get(path.stem)
    if view is None:
        raise dg.Failure(description=f"{path}: the file no longer exists")
    if view.error:
        raise dg.Failure(description=view.error, allow_retries=False)
    if view.reads != declared_reads:
        context.log.warning(f"{path.name} now reads {list(view.reads)}, but this asset was "
                            f"defined reading {list(declared_reads)}: reload the code location "
                            "to update its lineage")
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})
            recreated = create_view(conn, view, views)
            schema = _columns(conn, view.name)
    except ViewError as e:
        raise dg.Failure(description=str(e), allow_retries=False) from None
    if recreated:
        context.log.info(f"columns of {view.name} changed: dropped and recreated it with the "
                         f"views that read it: {', '.join(recreated)}")
    count = _row_count(engine, view.name)
    meta = {
        "view": dg.MetadataValue.text(view.name),
        "dagster/column_schema": schema,
        "reads": dg.MetadataValue.json(list(view.reads)),
        "recreated_dependents": dg.MetadataValue.json(recreated),
        "sql": dg.MetadataValue.md(f"```sql\n{view.body}\n```"),
    }
    if count is not None:
        meta["dagster/row_count"] = dg.MetadataValue.int(count)
    return dg.MaterializeResult(metadata=meta)


def _sql_asset(view: ViewFile, views: dict[str, ViewFile], name: str) -> dg.AssetsDefinition:
    # a view in a cycle keeps no view deps (Dagster refuses cyclic graphs); it fails when run
    deps = [] if view.error else [sql_key(v) for v in view.views(views) if v != view.name]
    deps += [table_key(t) for t in view.tables()]
    unknown = [r for r in view.reads if r not in views and r not in TABLES]
    path, reads = view.path, view.reads
    metadata = {
        SQL_VIEW_KEY: view.name,
        "genbound/sql_file": str(path),
        "genbound/reads": list(reads),
    }
    if unknown:
        metadata["genbound/unknown_relations"] = unknown
    if view.error:
        metadata["genbound/error"] = view.error

    @dg.asset(
        retry_policy=POSTGRES_RETRY,
        key=dg.AssetKey(["sql", name]),
        deps=deps,
        group_name="sql",
        kinds={"postgres", "sql"},
        code_version=view.code_version or None,
        description=_description(view),
        metadata=metadata,
    )
    @retry_transient
    def _view(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
        return materialize_view(context, postgres.get_engine(), path, reads)

    return _view


def build_sql_assets(folder: Path | str | None = None) -> list[dg.AssetsDefinition]:
    """One asset per ``*.sql`` file of ``folder`` (default: ``$GENBOUND_SQL_DIR`` or
    ``dbt_like_sql/``); a missing folder gives no assets."""
    folder = Path(folder) if folder is not None else sql_dir()
    if not folder.is_dir():
        return []
    views = load_view_files(folder)
    by_name = {v.name: v for v in views}
    taken: set[str] = set()
    return [_sql_asset(v, by_name, _asset_name(v.name, taken)) for v in views]


@dg.definitions
def sql_views() -> dg.Definitions:
    return dg.Definitions(assets=build_sql_assets())
