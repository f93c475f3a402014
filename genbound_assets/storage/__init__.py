"""The Postgres store: schema, connection (external URL or embedded pgserver), bulk I/O, views.

Public API (see docs/storage.md)::

    from genbound_assets.storage import get_engine, replace_partition, read_frame

    engine = get_engine()                      # $GENBOUND_DATABASE_URL or the embedded server
    replace_partition(engine, "token_losses", {"model": "pythia-70m", "step": 1000}, frame)
    df = read_frame(engine, "select * from bounds where model = :m", {"m": "pythia-70m"})
"""

from .db import (
    DATA_DIR_ENV,
    DATABASE_URL_ENV,
    StoreError,
    data_dir,
    database_url,
    describe_url,
    embedded_pg_dir,
    embedded_pid,
    get_engine,
    start_embedded,
    stop_embedded,
    validate_url,
)
from .io import copy_frame, read_frame, replace_partition, replace_partitions, validate_frame
from .schema import TABLES, create_schema, get_table, metadata, table_counts
from .views import SQL_DIR, create_views, view_files

__all__ = [
    "DATABASE_URL_ENV",
    "DATA_DIR_ENV",
    "SQL_DIR",
    "TABLES",
    "StoreError",
    "copy_frame",
    "create_schema",
    "create_views",
    "data_dir",
    "database_url",
    "describe_url",
    "embedded_pg_dir",
    "embedded_pid",
    "get_engine",
    "get_table",
    "metadata",
    "read_frame",
    "replace_partition",
    "replace_partitions",
    "start_embedded",
    "stop_embedded",
    "table_counts",
    "validate_frame",
    "validate_url",
    "view_files",
]
