"""Automation over every registered family (docs/dagster.md, "Automation"):

* sensor ``new_checkpoints``: polls each family's source; registers the partition keys of new
  complete checkpoints (keys Dagster cannot handle are refused with a log line); records
  quarantined checkpoints (inventory row + a runless materialization with the reason) and
  half-written folders (log line); requests batched runs for exactly the new intact checkpoints
  (and checkpoints the ``selection`` setting newly picks).  Cursor: the checkpoints handled, per
  family; idempotent across restarts (it also skips what is already materialized); at most
  ``MAX_PER_TICK`` integrity checks and ``TICK_BUDGET_S`` seconds of checking per tick.
* schedule ``<family>_checkpoint_backfill`` (hourly, one per family: a schedule runs one job, and each family's checkpoint-level assets are one job with its own partitions): every real checkpoint partition with no successful
  materialization (missed ticks, failures since fixed), batched the same way.
* ``genbound_automation``: the declarative-automation sensor that keeps the model-level assets
  up to date when any checkpoint of their model changes.
"""

import json
import logging
import os

import dagster as dg

from genbound_assets.defs.sql.lineage import TABLE_PREFIX
from genbound_assets.defs.store.resources import PostgresResource

from .partitions import all_family_parts
from .requests import requests_for_needs
from .resources import GenboundResource
from .watch import in_flight, needs_for, plan_tick, real_checkpoints

# what the sensor and the schedule may request: every executable asset (not the stand-ins of
# tables no asset claims, defs/sql/lineage.py)
TARGET = dg.AssetSelection.all() - dg.AssetSelection.key_prefixes([TABLE_PREFIX])

LOG = logging.getLogger("genbound.sensor")

def _env_positive(name: str, default, cast=int):
    """A positive number from ``$name`` (unset or empty: ``default``); one line if malformed."""
    raw = os.environ.get(name, "").strip()
    try:
        value = cast(raw.replace("_", "")) if raw else default
    except ValueError:
        value = 0
    if not value > 0:   # also NaN
        kind = "integer" if cast is int else "number"
        raise ValueError(f"{name}={raw!r}: expected a positive {kind}")
    return value


MAX_PER_TICK = _env_positive("GENBOUND_SENSOR_MAX_PER_TICK", 200)
INTERVAL_S = _env_positive("GENBOUND_SENSOR_INTERVAL_S", 60)
# integrity checks hash the weights (tens of seconds for a 12B checkpoint); a tick that outlives
# Dagster's sensor timeout (60 s) saves no cursor, so no new check starts after this many seconds
TICK_BUDGET_S = _env_positive("GENBOUND_SENSOR_TICK_BUDGET_S", 30.0, float)
_ON, _OFF = ("1", "on", "true", "yes", "running"), ("0", "off", "false", "no", "stopped")


def _status(default: str) -> dg.DefaultSensorStatus:
    raw = os.environ.get("GENBOUND_AUTOMATION", "").strip().lower() or default
    if raw not in _ON + _OFF:
        raise ValueError(f"GENBOUND_AUTOMATION={raw!r}: expected on or off")
    return dg.DefaultSensorStatus.RUNNING if raw in _ON else dg.DefaultSensorStatus.STOPPED


def checkpoint_job_name(family: str) -> str:
    return f"{family}_checkpoints"


def _checkpoint_job(parts):
    """The family's checkpoint-level assets as one job (one partitions definition: model × step);
    every sensor and schedule request is a subset of it over a range of one model's steps."""
    from .partitions import BOUND_ASSETS, CHECKPOINT_ASSETS

    return dg.define_asset_job(
        checkpoint_job_name(parts.name),
        selection=dg.AssetSelection.assets(*[parts.key(a) for a in CHECKPOINT_ASSETS + BOUND_ASSETS]),
        partitions_def=parts.checkpoint,
        description=f"Checkpoint-level assets of family {parts.name} (inventory, loss curve, "
        "quantization, token losses, certificates).")


def _new_checkpoints(jobs):
    @dg.sensor(name="new_checkpoints", minimum_interval_seconds=INTERVAL_S, jobs=jobs or None,
               default_status=_status("on"),
               description="Registers new complete checkpoints of every family and requests their "
               "assets (batched); records quarantined and half-written ones with the reason.")
    def new_checkpoints(context: dg.SensorEvaluationContext, postgres: PostgresResource,
                        genbound: GenboundResource) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {}
        engine = postgres.get_engine()
        requests, dyn, events, skipped = [], [], [], []
        for parts in all_family_parts():
            settings = genbound.settings(parts.spec)
            try:
                family = genbound.family(parts.spec)
            except (OSError, ValueError) as e:
                context.log.warning(f"family {parts.name}: cannot be opened: {e}")
                continue
            seen = set(cursor.get(parts.name, []))
            plan = plan_tick(context.instance, parts, family, engine, settings, seen, MAX_PER_TICK,
                             time_budget_s=TICK_BUDGET_S)
            for line in plan.log:
                context.log.info(line)
                LOG.info(line)   # also in the daemon's own log (and visible to tests)
                skipped.append(line)
            if plan.add_models:
                dyn.append(parts.model.build_add_request(plan.add_models))
            if plan.add_steps:
                dyn.append(parts.step.build_add_request(plan.add_steps))
            requests += plan.requests
            events += plan.events
            cursor[parts.name] = sorted(seen | set(plan.handled))
            if plan.more:
                context.log.info(f"family {parts.name}: more new checkpoints than one tick checks "
                                 f"({MAX_PER_TICK} or {TICK_BUDGET_S:g} s); the next tick continues")
        return dg.SensorResult(run_requests=requests, dynamic_partitions_requests=dyn,
                               asset_events=events, cursor=json.dumps(cursor),
                               skip_reason=None if requests or dyn else
                               ("no new checkpoint" + (f"; {len(skipped)} noted" if skipped else "")))

    return new_checkpoints


def _checkpoint_backfill(parts, job):
    @dg.schedule(name=f"{parts.name}_checkpoint_backfill", cron_schedule="0 * * * *", job=job,
                 default_status=dg.DefaultScheduleStatus(_status("on").value),
                 description=f"Requests every real checkpoint partition of family {parts.name} "
                 "that has no successful materialization (missed sensor ticks, failures since "
                 "fixed), batched per model.")
    def checkpoint_backfill(context: dg.ScheduleEvaluationContext, postgres: PostgresResource,
                            genbound: GenboundResource):
        return backfill_requests(context.instance, postgres.get_engine(), genbound,
                                 families=[parts.name])

    return checkpoint_backfill


def _automation_sensor() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition(
        "genbound_automation", target=TARGET, default_status=_status("on"),
        minimum_interval_seconds=30,
        description="Declarative automation: model-level assets follow their checkpoints.")


@dg.definitions
def automation() -> dg.Definitions:
    families = all_family_parts()
    jobs = {p.name: _checkpoint_job(p) for p in families}
    return dg.Definitions(
        jobs=list(jobs.values()),
        sensors=[_new_checkpoints(list(jobs.values())), _automation_sensor()],
        schedules=[_checkpoint_backfill(p, jobs[p.name]) for p in families])


def backfill_requests(instance: dg.DagsterInstance, engine, genbound: GenboundResource,
                      key_prefix: str | None = None, families: list[str] | None = None
                      ) -> list[dg.RunRequest]:
    """The schedule's requests: only registered partitions that are real intact checkpoints."""
    from genbound_assets.families.inventory import selected_steps, train_tokens

    out = []
    for parts in all_family_parts():
        if families is not None and parts.name not in families:
            continue
        settings = genbound.settings(parts.spec)
        try:
            family = genbound.family(parts.spec)
        except (OSError, ValueError):
            continue
        order = instance.get_dynamic_partitions(parts.step.name)
        registered = set(order)
        models = instance.get_dynamic_partitions(parts.model.name)
        status = real_checkpoints(engine, models)
        steps, bounded = {}, {}
        for model in models:
            try:
                listed = {r.step for r in family.source.list_checkpoints(model)} if model in \
                    family.source.list_models() else set()
            except ValueError:
                continue   # cannot be listed (e.g. contradicting token counts): the sensor says why
            intact = {s for s, st in status.get(model, {}).items()
                      if st == "ok" and str(s) in registered and s in listed}
            # never inventoried yet (sensor tick missed): the checkpoint asset checks it
            fresh = {s for s in listed if s not in status.get(model, {}) and str(s) in registered}
            steps[model] = intact | fresh
            d = {s: train_tokens(family.order, s) for s in intact}
            info = family.source.model_info(model)
            bounded[model] = selected_steps(info.n_params, d, settings.selection,
                                            settings.tokens_per_param, family.source.final_step(model))
        needs = needs_for(instance, parts, steps, bounded, in_flight(instance, parts, order))
        out += requests_for_needs(parts, order, needs, tags={"genbound/trigger": "checkpoint_backfill"},
                                  key_prefix=key_prefix)
    return out
