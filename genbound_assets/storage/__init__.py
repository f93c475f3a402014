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
from .reader import (
    READER_PASSWORD_ENV,
    READER_ROLE,
    reader_engine,
    reader_password,
    reader_url,
    setup_reader,
)
from .schema import TABLES, create_schema, get_table, metadata, table_counts
from .views import (
    SQL_DIR,
    SQL_DIR_ENV,
    ViewError,
    ViewFile,
    create_view,
    create_views,
    create_views_report,
    load_view_files,
    parse_view_file,
    sql_dir,
    view_files,
)

__all__ = [
    "DATABASE_URL_ENV",
    "DATA_DIR_ENV",
    "READER_PASSWORD_ENV",
    "READER_ROLE",
    "SQL_DIR",
    "SQL_DIR_ENV",
    "TABLES",
    "StoreError",
    "ViewError",
    "ViewFile",
    "copy_frame",
    "create_schema",
    "create_view",
    "create_views",
    "create_views_report",
    "data_dir",
    "database_url",
    "describe_url",
    "embedded_pg_dir",
    "embedded_pid",
    "get_engine",
    "get_table",
    "load_view_files",
    "parse_view_file",
    "metadata",
    "read_frame",
    "reader_engine",
    "reader_password",
    "reader_url",
    "replace_partition",
    "replace_partitions",
    "setup_reader",
    "sql_dir",
    "start_embedded",
    "stop_embedded",
    "table_counts",
    "validate_frame",
    "validate_url",
    "view_files",
]
