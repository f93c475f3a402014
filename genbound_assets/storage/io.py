"""Bulk reads and writes between polars frames and the store.

Writes go through ``COPY ... FROM STDIN (FORMAT csv)``.  Floats are written by polars in their
shortest round-trip form and parsed by Postgres with correct rounding, so float64 values
(including -0.0, NaN, ±inf and subnormals) come back bit-exact; float32 columns are widened to
float64 first so the stored double equals the float32 value exactly.

The write rule (docs/storage.md): everything one asset writes for one partition goes through
:func:`replace_partition`, one transaction that deletes the partition's rows and copies the
new ones.  A rerun never duplicates rows, and a failure (bad frame, key violation, lost
connection) rolls back to the previous rows.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import polars as pl
import sqlalchemy as sa
from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB
from sqlalchemy.engine import Connection, Engine

from .schema import get_table

COPY_CHUNK_ROWS = 250_000


# ----------------------------------------------------------------------------- validation


def validate_frame(
    table: str | Table, frame: pl.DataFrame, key: Mapping[str, Any] | None = None
) -> pl.DataFrame:
    """Check ``frame`` against ``table`` and return it ready to COPY.

    * every frame column must be a table column (else: error naming the unknown ones);
    * every NOT NULL column without a server default must be present, either in the frame or
      in ``key`` (else: error naming the missing ones); nullable and defaulted columns
      (e.g. ``computed_at``) may be left out;
    * a ``key`` column absent from the frame is filled with the key's value; one present in the
      frame must equal it on every row (rows outside the partition would survive a rewrite).
    """
    t = get_table(table)
    key = dict(key or {})
    cols = {c.name: c for c in t.columns}
    bad_key = [k for k in key if k not in cols]
    if bad_key:
        raise ValueError(f"partition key names unknown column(s) of {t.name!r}: {bad_key}")
    extra = [c for c in frame.columns if c not in cols]
    present = set(frame.columns) | set(key)
    missing = [
        c.name for c in t.columns
        if c.name not in present and not c.nullable and c.server_default is None
    ]
    if extra or missing:
        parts = []
        if missing:
            parts.append(f"missing required column(s) {missing}")
        if extra:
            parts.append(f"unknown column(s) {extra}")
        raise ValueError(
            f"frame does not match table {t.name!r}: {'; '.join(parts)} "
            f"(table columns: {list(cols)})"
        )
    df = frame
    for k, v in key.items():
        if k in df.columns:
            # a zero-row frame has no row outside (and its columns may be untyped, records._empty)
            outside = df.filter(~pl.col(k).eq_missing(pl.lit(v))).height if df.height else 0
            if outside:
                raise ValueError(
                    f"{outside} row(s) of the frame for {t.name!r} have {k} != {v!r}, "
                    "outside the partition being replaced"
                )
        else:
            df = df.with_columns(pl.lit(v).alias(k))
    # table column order, for a stable COPY column list
    df = df.select([c for c in cols if c in df.columns])
    return _to_copyable(t, df)


def _pg_scalar(x: Any) -> str:
    if x is None:
        return "NULL"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        if math.isnan(x):
            return "NaN"
        if math.isinf(x):
            return "Infinity" if x > 0 else "-Infinity"
        return repr(x)
    if isinstance(x, int | decimal.Decimal):
        return str(x)
    if isinstance(x, list | tuple):
        return _pg_array(x)
    s = str(x).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{s}"'


def _pg_array(values: Any) -> str:
    """A Postgres array literal, floats in repr (exact round-trip) form."""
    if isinstance(values, pl.Series):
        values = values.to_list()
    return "{" + ",".join(_pg_scalar(v) for v in values) + "}"


def _to_copyable(t: Table, df: pl.DataFrame) -> pl.DataFrame:
    exprs = []
    for name, dtype in df.schema.items():
        coltype = t.c[name].type
        if isinstance(coltype, JSONB | JSON):
            if dtype != pl.String:
                exprs.append(
                    pl.col(name).map_elements(
                        lambda v: json.dumps(v, allow_nan=False), return_dtype=pl.String
                    )
                )
        elif isinstance(coltype, ARRAY):
            if isinstance(dtype, pl.List | pl.Array):
                exprs.append(pl.col(name).map_elements(_pg_array, return_dtype=pl.String))
            elif dtype != pl.String:
                raise ValueError(f"column {t.name}.{name} is an array: give a list column, got {dtype}")
        elif isinstance(coltype, sa.LargeBinary):
            if dtype == pl.Binary:   # COPY csv reads bytea as \\x<hex>
                exprs.append(pl.col(name).map_elements(lambda b: "\\x" + b.hex(),
                                                       return_dtype=pl.String))
            elif dtype != pl.String:
                raise ValueError(f"column {t.name}.{name} is bytea: give a binary column, got {dtype}")
        elif dtype == pl.Float32:
            exprs.append(pl.col(name).cast(pl.Float64))
        elif isinstance(dtype, pl.List | pl.Array | pl.Struct | pl.Object):
            raise ValueError(f"column {t.name}.{name} is {coltype}, but the frame has {dtype}")
    return df.with_columns(exprs) if exprs else df


# ----------------------------------------------------------------------------- writes


def copy_frame(conn: Connection, table: str | Table, frame: pl.DataFrame) -> int:
    """COPY ``frame`` into ``table`` on an open connection, inside the caller's transaction.

    The frame is validated (:func:`validate_frame`).  Returns the number of rows copied.
    """
    t = get_table(table)
    df = validate_frame(t, frame)
    if df.height == 0:
        return 0
    collist = ", ".join(f'"{c}"' for c in df.columns)
    sql = f'COPY "{t.name}" ({collist}) FROM STDIN WITH (FORMAT csv)'
    import psycopg2

    cursor = conn.connection.dbapi_connection.cursor()
    try:
        for chunk in df.iter_slices(COPY_CHUNK_ROWS):
            buf = io.BytesIO()
            # unquoted empty field = NULL, quoted "" = empty string
            chunk.write_csv(buf, include_header=False, null_value="", quote_style="non_numeric")
            buf.seek(0)
            cursor.copy_expert(sql, buf)
    except psycopg2.Error as e:
        # the same exception classes as any SQLAlchemy statement (IntegrityError, DataError, ...);
        # a lost connection is invalidated as SQLAlchemy does for its own statements, so the
        # caller's rollback does not replace this error with "connection already closed"
        dead = conn.dialect.is_disconnect(e, conn.connection.dbapi_connection, cursor)
        if dead:
            conn.invalidate(e)
        raise sa.exc.DBAPIError.instance(sql, None, e, psycopg2.Error,
                                         connection_invalidated=dead) from e
    finally:
        _close(cursor)
    return df.height


def _close(cursor) -> None:
    """Close a cursor; on a connection the server dropped, closing raises "connection already
    closed", which must not replace the error that says what happened."""
    import psycopg2

    try:
        cursor.close()
    except psycopg2.InterfaceError:
        pass


def replace_partition(
    engine: Engine, table: str | Table, key: Mapping[str, Any], frame: pl.DataFrame
) -> int:
    """Replace the rows of ``table`` matching ``key`` (column -> value) with ``frame``.

    One transaction: lock the partition (concurrent writers of the same partition queue up),
    delete its rows, COPY the new ones.  If anything raises, nothing changes.  ``key={}`` is the
    whole table.  Returns the number of rows written.
    """
    return replace_partitions(engine, [(table, key, frame)])


def replace_partitions(
    engine: Engine, parts: list[tuple[str | Table, Mapping[str, Any], pl.DataFrame]]
) -> int:
    """``replace_partition`` for several (table, key, frame) at once, in ONE transaction.

    For results that span tables (a checkpoint's losses, quantization record and bounds): either
    every partition is replaced or none is.  Returns the total number of rows written.
    """
    checked = []
    for table, key, frame in parts:  # validate everything before touching the database
        t = get_table(table)
        checked.append((t, dict(key), validate_frame(t, frame, dict(key))))
    written = 0
    with engine.begin() as conn:
        for t, key, df in sorted(checked, key=lambda x: x[0].name):  # fixed lock order
            lock_name = f"{t.name}:{json.dumps(key, sort_keys=True, default=str)}"
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:n, 0))"), {"n": lock_name}
            )
            cond = [t.c[k].is_(None) if v is None else t.c[k] == v for k, v in key.items()]
            conn.execute(t.delete().where(sa.and_(sa.true(), *cond)))
            written += copy_frame(conn, t, df)
    return written


# ----------------------------------------------------------------------------- reads

_OID_DTYPES: dict[int, pl.DataType] = {
    16: pl.Boolean(),
    20: pl.Int64(),
    21: pl.Int16(),
    23: pl.Int32(),
    26: pl.Int64(),
    700: pl.Float32(),
    701: pl.Float64(),
    1700: pl.Float64(),  # numeric (e.g. sum(bigint), avg) -> float64
    18: pl.String(),
    19: pl.String(),
    25: pl.String(),
    1042: pl.String(),
    1043: pl.String(),
    114: pl.String(),  # json, returned as JSON text
    3802: pl.String(),  # jsonb, returned as JSON text
    1082: pl.Date(),
    1114: pl.Datetime("us"),
    1184: pl.Datetime("us", "UTC"),
    1000: pl.List(pl.Boolean()),
    1005: pl.List(pl.Int16()),
    1007: pl.List(pl.Int32()),
    1016: pl.List(pl.Int64()),
    1021: pl.List(pl.Float32()),
    1022: pl.List(pl.Float64()),
    1009: pl.List(pl.String()),
}
_JSON_OIDS = {114, 3802}


def _column(name: str, oid: int, values: list) -> pl.Series:
    dtype = _OID_DTYPES.get(oid)
    if oid in _JSON_OIDS:
        values = [None if v is None else json.dumps(v) for v in values]
    elif oid == 1700:
        values = [None if v is None else float(v) for v in values]
    elif oid == 1184:
        values = [None if v is None else v.astimezone(dt.UTC) for v in values]
    if dtype is None:
        return pl.Series(name, values)  # let polars infer
    return pl.Series(name, values, dtype=dtype, strict=True)


def read_frame(
    engine: Engine | Connection, sql: str | sa.Executable, params: Mapping[str, Any] | None = None
) -> pl.DataFrame:
    """Run a query (``:name`` bind parameters) and return its rows as a polars frame.

    Column dtypes come from the result's Postgres types, so an empty result keeps them:
    bigint -> Int64, double -> Float64, numeric -> Float64, timestamptz -> Datetime(UTC),
    double precision[] -> List(Float64), json/jsonb -> String (JSON text).
    A SELECT given as a string whose columns are all scalars is streamed with
    ``COPY (query) TO STDOUT`` (several times faster on per-token tables; floats stay exact).
    """
    if isinstance(engine, Connection):
        return _read(engine, sql, params)
    with engine.connect() as conn:
        return _read(conn, sql, params)


_FAST_OIDS = {16, 18, 19, 20, 21, 23, 25, 26, 114, 700, 701, 1042, 1043, 1082, 1114, 1184, 1700, 3802}
_SELECT_START = re.compile(r"^\s*\(?\s*(select|with|values|table)\b", re.IGNORECASE)


def _read(conn: Connection, sql: str | sa.Executable, params: Mapping[str, Any] | None):
    params = dict(params or {})
    if isinstance(sql, str) and _SELECT_START.match(sql):
        fast = _read_copy(conn, sql, params)
        if fast is not None:
            return fast
    return _read_rows(conn, sa.text(sql) if isinstance(sql, str) else sql, params)


def _read_copy(conn: Connection, sql: str, params: dict[str, Any]) -> pl.DataFrame | None:
    """COPY-based read; None when the result has a type this path does not parse."""
    compiled = sa.text(sql.strip().rstrip(";")).compile(dialect=conn.dialect)
    bound = compiled.construct_params(params)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        query = cursor.mogrify(compiled.string, bound).decode()
        conn.exec_driver_sql("SAVEPOINT genbound_read")  # a failed probe must not poison conn
        try:
            cursor.execute(f"SELECT * FROM ({query}) AS genbound_q LIMIT 0")
        except Exception:
            conn.exec_driver_sql("ROLLBACK TO SAVEPOINT genbound_read")
            return None  # not wrappable as a subquery: let the row path run (and report) it
        desc = cursor.description
        names = [d.name for d in desc]
        if len(set(names)) != len(names):
            raise ValueError(f"read_frame: duplicate column names in result: {names}")
        if any(d.type_code not in _FAST_OIDS for d in desc):
            return None
        conn.exec_driver_sql("SET LOCAL TimeZone = 'UTC'")
        conn.exec_driver_sql("SET LOCAL DateStyle = 'ISO'")
        buf = io.BytesIO()
        cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv)", buf)
        # undo the SET LOCALs: the caller's transaction keeps its own settings
        conn.exec_driver_sql("ROLLBACK TO SAVEPOINT genbound_read")
        conn.exec_driver_sql("RELEASE SAVEPOINT genbound_read")
    finally:
        _close(cursor)
    if not desc:
        return pl.DataFrame()
    text_cols = {16, 1082, 1114, 1184}
    schema = {
        d.name: pl.String() if d.type_code in text_cols else _OID_DTYPES[d.type_code] for d in desc
    }
    if buf.tell() == 0:
        df = pl.DataFrame(schema=schema)
    else:
        buf.seek(0)
        df = pl.read_csv(buf, has_header=False, schema=schema, infer_schema=False)
    fixes = []
    for d in desc:
        c = pl.col(d.name)
        if d.type_code == 16:
            fixes.append(pl.when(c.is_null()).then(None).otherwise(c == "t").alias(d.name))
        elif d.type_code == 1082:
            fixes.append(c.str.to_date("%Y-%m-%d"))
        elif d.type_code in (1114, 1184):
            parsed = c.str.replace(r"\+00$", "").str.to_datetime(
                "%Y-%m-%d %H:%M:%S%.f", time_unit="us"
            )
            fixes.append(parsed.dt.replace_time_zone("UTC") if d.type_code == 1184 else parsed)
    return df.with_columns(fixes) if fixes else df


def _read_rows(conn: Connection, stmt: sa.Executable, params: dict[str, Any]) -> pl.DataFrame:
    result = conn.execute(stmt, params)
    if not result.returns_rows:
        raise ValueError("read_frame: the statement returns no rows")
    desc = result.cursor.description
    rows = result.fetchall()
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in desc]
    names = [d.name for d in desc]
    if len(set(names)) != len(names):
        raise ValueError(f"read_frame: duplicate column names in result: {names}")
    return pl.DataFrame(
        [_column(d.name, d.type_code, list(c)) for d, c in zip(desc, cols, strict=True)]
    )
