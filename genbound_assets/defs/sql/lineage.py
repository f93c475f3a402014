"""Which asset writes which table: the ``genbound/writes`` metadata convention (docs/sql.md).

A Python asset that writes rows to genbound tables says so::

    from genbound_assets.defs.sql.lineage import writes

    @dg.asset(key=["pythia", "checkpoint_bounds"], metadata={**writes("bounds", "token_losses")})
    def checkpoint_bounds(...): ...

(``writes`` checks the names against the schema and returns ``{"genbound/writes": [...]}``; a
multi-asset puts it on each ``AssetSpec`` that writes.)  :func:`link_table_lineage` then makes
every SQL view asset that reads ``bounds`` depend on every asset that declares it writes
``bounds``.  A table nobody claims is represented by ``AssetSpec(["table", <name>])`` (group
``tables``, not materializable), so a view's lineage never silently stops.
"""

import warnings
from collections.abc import Iterable, Mapping

import dagster as dg

from genbound_assets.storage import TABLES

WRITES_KEY = "genbound/writes"
SQL_VIEW_KEY = "genbound/sql_view"
TABLE_PREFIX = "table"


def writes(*tables: str) -> dict[str, list[str]]:
    """Metadata declaring that an asset writes ``tables`` (genbound table names)."""
    unknown = [t for t in tables if t not in TABLES]
    if unknown or not tables:
        raise ValueError(f"writes(): unknown table(s) {unknown or '(none given)'}; "
                         f"genbound tables: {', '.join(TABLES)}")
    return {WRITES_KEY: sorted(set(tables))}


def table_key(table: str) -> dg.AssetKey:
    """The key of the table-level stand-in for a table no asset claims."""
    return dg.AssetKey([TABLE_PREFIX, table])


def sql_key(view: str) -> dg.AssetKey:
    return dg.AssetKey(["sql", view])


def _value(v):
    return getattr(v, "value", v)  # raw metadata, or a normalized MetadataValue


def declared_writes(metadata: Mapping[str, object], where: str = "asset") -> list[str]:
    """The tables an asset's metadata says it writes ([] when it declares none)."""
    if WRITES_KEY not in metadata:
        return []
    value = _value(metadata[WRITES_KEY])
    tables = [value] if isinstance(value, str) else list(value or [])
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"{where}: metadata {WRITES_KEY!r} names unknown table(s) {unknown}; "
                         f"genbound tables: {', '.join(TABLES)}")
    return tables


def writers_by_table(specs: Iterable[dg.AssetSpec]) -> dict[str, list[dg.AssetKey]]:
    """table -> keys of the assets declaring they write it (sorted)."""
    out: dict[str, set[dg.AssetKey]] = {}
    for spec in specs:
        for t in declared_writes(spec.metadata or {}, spec.key.to_user_string()):
            out.setdefault(t, set()).add(spec.key)
    return {t: sorted(keys, key=lambda k: k.to_user_string()) for t, keys in out.items()}


def table_spec(table: str) -> dg.AssetSpec:
    return dg.AssetSpec(
        table_key(table), group_name="tables", kinds={"postgres"},
        description=f"The genbound table `{table}` (docs/storage.md). No asset in this code "
                    f"location declares that it writes it (metadata {WRITES_KEY!r}), so this "
                    "stand-in closes the lineage of the SQL views that read it.",
    )


def link_table_lineage(defs: dg.Definitions) -> dg.Definitions:
    """Point SQL view assets' table deps at the assets that write those tables.

    Every dep on ``table/<name>`` becomes deps on the writers of ``<name>``; tables without a
    writer keep the dep and get a :func:`table_spec` (added here).
    """
    # the specs as declared (no repository resolution: that validates resources, and happens
    # once later when Dagster loads the result)
    specs = [spec for a in defs.assets or []
             for spec in (a.specs if isinstance(a, dg.AssetsDefinition) else [a])
             if isinstance(spec, dg.AssetSpec)]
    writers = writers_by_table(specs)
    defined = {s.key for s in specs}
    unclaimed: set[str] = set()

    def relink(spec: dg.AssetSpec) -> dg.AssetSpec:
        if SQL_VIEW_KEY not in (spec.metadata or {}):
            return spec
        deps = []
        for dep in spec.deps:
            path = dep.asset_key.path
            if len(path) == 2 and path[0] == TABLE_PREFIX and path[1] in TABLES:
                if path[1] in writers:
                    deps.extend(dg.AssetDep(k) for k in writers[path[1]] if k != spec.key)
                    continue
                unclaimed.add(path[1])
            deps.append(dep)
        seen, unique = set(), []
        for d in deps:
            if d.asset_key not in seen:
                seen.add(d.asset_key)
                unique.append(d)
        return spec.replace_attributes(deps=unique)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # map_asset_specs is marked preview
        linked = defs.map_asset_specs(func=relink)
    extra = [table_spec(t) for t in sorted(unclaimed) if table_key(t) not in defined]
    return dg.Definitions.merge(linked, dg.Definitions(assets=extra)) if extra else linked
