"""Dagster definitions, one folder per domain (loaded by ``dagster.load_from_defs_folder``).

Each domain folder holds its assets; shared resources are declared in ``store/resources.py``
under the key ``postgres`` (:class:`genbound_assets.defs.store.resources.PostgresResource`).
"""
