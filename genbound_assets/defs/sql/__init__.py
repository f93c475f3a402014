"""SQL views as Dagster assets: one asset ``sql/<name>`` per ``dbt_like_sql/<name>.sql`` file.

* ``assets.py``: the assets (built when the code location loads; the folder is
  ``$GENBOUND_SQL_DIR`` or the repository's ``dbt_like_sql/``).  Each runs
  ``CREATE OR REPLACE VIEW`` in one transaction.  Its upstream assets come from parsing the SQL
  (sqlglot): views it reads -> their ``sql/<name>`` assets; genbound tables it reads -> the
  assets that write them.
* ``lineage.py``: the convention that maps a table to the assets that write it.  A Python asset
  declares ``metadata={**writes("bounds", ...)}`` (i.e. ``{"genbound/writes": [...]}``);
  ``link_table_lineage(defs)``, applied once to the whole code location in
  ``genbound_assets/definitions.py``, points every SQL asset at those writers and adds a
  table-level ``AssetSpec(["table", <name>])`` for each table no asset claims, so lineage is
  always complete.

A file that does not parse still becomes an asset (no parsed deps) whose materialization fails
with the parser's one-line message (file, line, column); the code location and every other
asset are unaffected.  See docs/sql.md.
"""
