"""The Dagster code location: everything under ``genbound_assets/defs/`` (one folder per domain).

``workspace.yaml`` points ``dagster dev`` here; ``genbound ui`` runs that with the store's URL
exported.  The project config ([tool.dg] in pyproject.toml) names ``genbound_assets.defs``.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from genbound_assets.defs.sql.lineage import link_table_lineage

# SQL view assets depend on the assets that declare they write the tables the views read
# (metadata "genbound/writes", docs/sql.md); this needs every asset, hence after loading.
defs: dg.Definitions = link_table_lineage(
    dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
)
