"""The Dagster code location: everything under ``genbound_assets/defs/`` (one folder per domain).

``workspace.yaml`` points ``dagster dev`` here; ``genbound ui`` runs that with the store's URL
exported.  The project config ([tool.dg] in pyproject.toml) names ``genbound_assets.defs``.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

defs: dg.Definitions = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
