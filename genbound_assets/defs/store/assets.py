"""The store's own asset: the schema and the views exist, and how many rows each table has.

No `from __future__ import annotations` in asset modules: Dagster reads the `context` and
resource annotations at definition time and rejects string annotations.
"""

import dagster as dg

from genbound_assets.defs.families.retry import POSTGRES_RETRY, retry_transient
from genbound_assets.storage import create_schema, create_views, table_counts

from .resources import PostgresResource


@dg.asset(
    retry_policy=POSTGRES_RETRY,
    group_name="store",
    kinds={"postgres"},
    description="Creates genbound's tables (idempotent, additive migrations) and (re)creates "
    "the views in dbt_like_sql/; reports each table's row count.",
)
@retry_transient
def store_schema(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
    engine = postgres.get_engine()
    changed = create_schema(engine)
    views = create_views(engine)
    counts = table_counts(engine)
    context.log.info(f"schema changes: {changed or 'none'}; views: {views}")
    return dg.MaterializeResult(
        metadata={
            "database": dg.MetadataValue.text(engine.url.render_as_string(hide_password=True)),
            "schema_changes": dg.MetadataValue.json(changed),
            "views": dg.MetadataValue.json(views),
            "total_rows": dg.MetadataValue.int(sum(counts.values())),
            **{f"rows/{t}": dg.MetadataValue.int(n) for t, n in counts.items()},
        }
    )
