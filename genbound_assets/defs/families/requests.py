"""Batched run requests over real checkpoints, shared by the sensor, the schedule and the demo.

A run over many partitions costs about one run's overhead (docs/dagster.md, "Batching"), so
requests cover *ranges* of checkpoint partitions: for one model, a maximal run of consecutive
keys of the family's step dimension (in its order) that all need the same assets.  A range never
spans a step the model lacks, so no phantom partition is ever requested.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import dagster as dg

from .partitions import BOUND_ASSETS, CHECKPOINT_ASSETS, FamilyParts, step_key

__all__ = ["RANGE_START", "RANGE_END", "step_ranges", "checkpoint_requests", "requests_for_needs"]

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def step_ranges(step_order: list[str], steps: Iterable[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive ``step_order`` entries among ``steps``: (first, last) steps."""
    pos = {k: i for i, k in enumerate(step_order)}
    idx = sorted(pos[step_key(s)] for s in set(steps))
    out: list[tuple[int, int]] = []
    for i in idx:
        if out and i == pos[step_key(out[-1][1])] + 1:
            out[-1] = (out[-1][0], int(step_order[i]))
        else:
            out.append((int(step_order[i]), int(step_order[i])))
    return out


def _request(parts: FamilyParts, model: str, lo: int, hi: int, assets: tuple[str, ...],
             tags: Mapping[str, str], key_prefix: str | None) -> dg.RunRequest:
    # the multi-partition key text: dimensions in name order (model < step), joined by '|'
    start, end = f"{model}|{lo}", f"{model}|{hi}"
    run_key = None
    if key_prefix is not None:
        h = hashlib.sha1(f"{parts.name}:{','.join(assets)}:{start}:{end}".encode()).hexdigest()[:12]
        run_key = f"{key_prefix}:{parts.name}:{model}:{lo}-{hi}:{h}"
    return dg.RunRequest(
        run_key=run_key, job_name=f"{parts.name}_checkpoints",
        asset_selection=[parts.key(a) for a in assets],
        tags={**tags, RANGE_START: start, RANGE_END: end, "genbound/family": parts.name,
              "genbound/model": model, "genbound/assets": ",".join(assets)})


def requests_for_needs(parts: FamilyParts, step_order: list[str],
                       needs: Mapping[tuple[str, int], tuple[str, ...]],
                       tags: Mapping[str, str] | None = None, key_prefix: str | None = None
                       ) -> list[dg.RunRequest]:
    """One request per (model, asset set, range): ``needs`` maps (model, step) to the assets
    that checkpoint needs (in graph order)."""
    groups: dict[tuple[str, tuple[str, ...]], set[int]] = {}
    for (model, step), assets in needs.items():
        if assets:
            groups.setdefault((model, tuple(assets)), set()).add(int(step))
    out = []
    for (model, assets), steps in sorted(groups.items()):
        for lo, hi in step_ranges(step_order, steps):
            out.append(_request(parts, model, lo, hi, assets, tags or {}, key_prefix))
    return out


def checkpoint_requests(parts: FamilyParts, step_order: list[str], new: Mapping[str, Iterable[int]],
                        bounded: Mapping[str, set[int]], tags: Mapping[str, str] | None = None,
                        key_prefix: str | None = None) -> list[dg.RunRequest]:
    """Requests for new checkpoints: every checkpoint-level asset for the ``bounded`` ones, the
    inventory and loss curve for the rest."""
    needs = {}
    for model, steps in new.items():
        for s in steps:
            needs[(model, int(s))] = (CHECKPOINT_ASSETS + BOUND_ASSETS
                                      if int(s) in bounded.get(model, set()) else CHECKPOINT_ASSETS)
    return requests_for_needs(parts, step_order, needs, tags, key_prefix)
