"""What the sensor, the schedule and the demo share: the family's registered partitions, its real
checkpoints, what each checkpoint still needs, and the bookkeeping of a scan
(docs/dagster.md, "Automation").  Only real checkpoints are ever requested.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from genbound_assets.families.inventory import (
    checkpoint_record,
    model_record,
    scan_source,
    selected_steps,
    train_tokens,
)
from genbound_assets.families.registry import Family
from genbound_assets.pipeline.settings import CertifySettings
from genbound_assets.storage import read_frame
from genbound_assets.storage.records import write_checkpoints

from .partitions import (
    BOUND_ASSETS,
    CHECKPOINT_ASSETS,
    FamilyParts,
    check_model_key,
    step_key,
)
from .requests import RANGE_END, RANGE_START, requests_for_needs

__all__ = ["TickPlan", "plan_tick", "needs_for", "real_checkpoints", "in_flight"]

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED]


@dataclass
class TickPlan:
    family: str
    add_models: list[str] = field(default_factory=list)
    add_steps: list[str] = field(default_factory=list)
    step_order: list[str] = field(default_factory=list)
    requests: list[dg.RunRequest] = field(default_factory=list)
    events: list[dg.AssetMaterialization] = field(default_factory=list)
    handled: list[str] = field(default_factory=list)       # "model|step" done with (cursor)
    log: list[str] = field(default_factory=list)
    more: bool = False


def real_checkpoints(engine, models: Iterable[str]) -> dict[str, dict[int, str]]:
    """model -> step -> integrity status, from the inventory table."""
    out: dict[str, dict[int, str]] = {}
    for m in models:
        df = read_frame(engine, "SELECT step, status FROM checkpoints WHERE model = :m", {"m": m})
        out[m] = {int(s): st for s, st in df.iter_rows()}
    return out


def in_flight(instance: dg.DagsterInstance, parts: FamilyParts, step_order: list[str]
              ) -> set[tuple[str, int, str]]:
    """(model, step, asset) covered by a queued or running run of this family."""
    pos = {k: i for i, k in enumerate(step_order)}
    out = set()
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=ACTIVE, tags={"genbound/family": parts.name}))
    for run in runs:
        t = run.tags
        try:
            model, lo = t[RANGE_START].split("|")
            _, hi = t[RANGE_END].split("|")
            i, j = pos[step_key(int(lo))], pos[step_key(int(hi))]
        except (KeyError, ValueError):
            continue
        for a in t.get("genbound/assets", "").split(","):
            for k in step_order[i:j + 1]:
                out.add((model, int(k), a))
    return out


def needs_for(instance: dg.DagsterInstance, parts: FamilyParts, steps: dict[str, Iterable[int]],
              bounded: dict[str, set[int]], skip: set[tuple[str, int, str]] = frozenset()
              ) -> dict[tuple[str, int], tuple[str, ...]]:
    """(model, step) -> the assets it still needs: every asset of its level not successfully
    materialized, and everything downstream of one that is missing (it would be stale)."""
    done = {a: instance.get_materialized_partitions(parts.key(a)) for a in CHECKPOINT_ASSETS + BOUND_ASSETS}
    out = {}
    for model, ss in steps.items():
        for s in ss:
            key = f"{model}|{s}"     # the multi-partition key text (model < step by name)
            chain = CHECKPOINT_ASSETS + (BOUND_ASSETS if s in bounded.get(model, set()) else ())
            need, stale = [], False
            for a in chain:
                if a == "checkpoint_loss":   # a sibling of quantized_model, not its parent
                    miss = key not in done[a]
                    if miss and (model, s, a) not in skip:
                        need.append(a)
                    continue
                stale = stale or key not in done[a]
                if stale and (model, s, a) not in skip:
                    need.append(a)
            if need:
                out[(model, int(s))] = tuple(need)
    return out


def plan_tick(instance: dg.DagsterInstance, parts: FamilyParts, family: Family, engine,
              settings: CertifySettings, seen: set[str], limit: int = 200,
              key_prefix: str | None = "new", time_budget_s: float | None = None) -> TickPlan:
    """One scan of ``family``: register its new checkpoints, record quarantines, request runs for
    the new intact ones (and for checkpoints the selection newly picks)."""
    plan = TickPlan(parts.name)
    models_now = instance.get_dynamic_partitions(parts.model.name)
    steps_now = instance.get_dynamic_partitions(parts.step.name)
    known = {tuple(k.split("|")) for k in seen}
    known = {(m, int(s)) for m, s in known}
    scan = scan_source(family.source, known, _fingerprints(engine, family.source.list_models()), limit,
                       time_budget_s=time_budget_s)
    plan.more = scan.more
    for _model, folder, reason in scan.incomplete:
        plan.log.append(f"{parts.name}: skipped {folder}: {reason}")
    for model, reason in scan.refused:
        plan.log.append(f"{parts.name}: refused model {model}: {reason} (none of its checkpoints "
                        "is registered or requested until this is fixed)")
    new: dict[str, list[int]] = {}
    for f in scan.found:
        model, step = f.ref.model, f.ref.step
        try:
            check_model_key(model)
        except ValueError as e:
            plan.log.append(f"{parts.name}: refused {f.ref.location}: {e}")
            plan.handled.append(f"{model}|{step}")
            continue
        try:   # D of the checkpoint: the data must hold the windows it trained on
            train_tokens(family.order, step)
        except ValueError as e:   # not handled: retried on the next tick (e.g. data still copying)
            plan.log.append(f"{parts.name}: {model} step {step} not registered: "
                            f"{' '.join(str(e).split())}")
            continue
        if model not in models_now and model not in plan.add_models:
            plan.add_models.append(model)
        sk = step_key(step)
        if sk not in steps_now and sk not in plan.add_steps:
            plan.add_steps.append(sk)
        plan.handled.append(f"{model}|{step}")
        if f.ok:
            new.setdefault(model, []).append(step)
        else:
            plan.log.append(f"{parts.name}: {model} step {step} quarantined: {f.report.reason}")
            _record_quarantine(engine, family, f)
            plan.events.append(dg.AssetMaterialization(
                asset_key=parts.key("checkpoint"), partition=parts.partition_key(model, step),
                description=f"quarantined: {f.report.reason}",
                metadata={"status": "quarantined", "reason": f.report.reason or ""}))
    plan.add_steps = sorted(plan.add_steps, key=int)
    plan.step_order = list(steps_now) + plan.add_steps
    if not new:
        return plan
    # what the selection bounds, over every intact checkpoint of the touched models
    bounded, steps = {}, {}
    status = real_checkpoints(engine, new)
    for model, ss in new.items():
        intact = {s for s, st in status.get(model, {}).items() if st == "ok"} | set(ss)
        d = {s: train_tokens(family.order, s) for s in intact}
        info = family.source.model_info(model)
        bounded[model] = selected_steps(info.n_params, d, settings.selection,
                                        settings.tokens_per_param, family.source.final_step(model))
        steps[model] = set(ss) | (bounded[model] & intact)
    skip = in_flight(instance, parts, plan.step_order)
    needs = needs_for(instance, parts, steps, bounded, skip)
    plan.requests = requests_for_needs(parts, plan.step_order, needs, key_prefix=key_prefix)
    return plan


def _fingerprints(engine, models: Iterable[str]) -> dict[tuple[str, int], str]:
    out = {}
    for m in models:
        df = read_frame(engine, "SELECT step, fingerprint FROM checkpoints WHERE model = :m AND "
                                "fingerprint IS NOT NULL", {"m": m})
        out.update({(m, int(s)): fp for s, fp in df.iter_rows()})
    return out


def _record_quarantine(engine, family: Family, found) -> None:
    write_checkpoints(engine, model_record(family, found.ref.model),
                      [checkpoint_record(family, found.ref, found.report)])
