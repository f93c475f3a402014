"""The Dagster code location: everything under ``genbound_assets/defs/`` (one folder per domain).

``workspace.yaml`` points ``dagster dev`` here; ``genbound ui`` runs that with the store's URL
exported.  The project config ([tool.dg] in pyproject.toml) names ``genbound_assets.defs``.
The family registry (families/registry.py) is read when the definitions are built: after
``genbound family add``, reload the code location (the UI's "Reload" button).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from genbound_assets.defs.sql.lineage import link_table_lineage
from genbound_assets.runtime import tune_allocator

tune_allocator()   # every process that loads the code location: dagster dev, run and step workers


def build_defs() -> dg.Definitions:
    """Build the definitions now (tests and the demo rebuild them after changing the registry).

    SQL view assets depend on the assets that declare they write the tables the views read
    (metadata "genbound/writes", docs/sql.md); this needs every asset, hence after loading."""
    return link_table_lineage(dg.load_from_defs_folder(path_within_project=Path(__file__).parent))


defs: dg.Definitions = build_defs()
