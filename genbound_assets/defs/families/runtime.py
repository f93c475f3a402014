"""What every genbound asset body needs: its partitions grouped by model, and the run's log as a
plain ``log(str)`` callable for the core.  (Figures: defs/sql/figures.py, the report's own.)"""

from __future__ import annotations

import dagster as dg

from .partitions import split_key

__all__ = ["partitions_by_model", "DagsterLog"]


def partitions_by_model(context: dg.AssetExecutionContext) -> dict[str, list[int]]:
    """The run's checkpoint partitions (one, or a range) as model -> sorted steps."""
    keys = context.partition_keys if context.has_partition_key_range or context.has_partition_key else []
    out: dict[str, list[int]] = {}
    for k in keys:
        model, step = split_key(k)
        out.setdefault(model, []).append(step)
    return {m: sorted(s) for m, s in sorted(out.items())}


class DagsterLog:
    """A ``log(str)`` callable for the core that writes to the run's log."""

    def __init__(self, context: dg.AssetExecutionContext, prefix: str = ""):
        self.context, self.prefix = context, prefix

    def __call__(self, msg: str) -> None:
        self.context.log.info(f"{self.prefix}{msg}")
