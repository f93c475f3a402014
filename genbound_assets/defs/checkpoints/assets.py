"""Checkpoint-level inventory and loss curve (partitions: model × step of each family).

* ``<family>/checkpoint``: the inventory row of each checkpoint: tokens seen, D, fingerprint,
  integrity status and reason (table ``checkpoints``, and the model's row in ``models``).
* ``<family>/checkpoint_loss``: the loss-curve point (eq. 5 inputs, table ``checkpoint_losses``).

No ``from __future__ import annotations``: Dagster reads the annotations at definition time.
"""

import dataclasses
import re
from pathlib import Path

import dagster as dg

from genbound_assets import deploy
from genbound_assets.defs.families.partitions import FamilyParts, all_family_parts
from genbound_assets.defs.families.resources import GenboundResource
from genbound_assets.defs.families.retry import POSTGRES_RETRY, retry_transient
from genbound_assets.defs.families.runtime import partitions_by_model
from genbound_assets.defs.store.resources import PostgresResource
from genbound_assets.families.integrity import IntegrityReport, check_checkpoint
from genbound_assets.families.inventory import checkpoint_record, model_record, vocab_problem
from genbound_assets.families.sources import CheckpointRef
from genbound_assets.pipeline.curve import checkpoint_loss_rows
from genbound_assets.storage import read_frame
from genbound_assets.storage.records import write_checkpoint_losses, write_checkpoints

BATCHED = dg.BackfillPolicy.single_run()


def _refs(family, model: str, steps: list[int], status: dict | None = None):
    """The refs of ``steps``.  A step that is no longer a complete checkpoint (its folder was
    removed, or lost its manifest) fails the run naming why -- unless ``status`` (the
    inventory's) says it is not ok: the callers skip those, so they are left out."""
    refs = {r.step: r for r in family.source.list_checkpoints(model)}
    missing = [s for s in steps if s not in refs and (status is None or status.get((model, s)) == "ok")]
    if missing:
        more = f" (and step(s) {missing[1:10]})" if len(missing) > 1 else ""
        raise dg.Failure(f"{family.name}: {model} step {missing[0]}: "
                         f"{_gone_reason(family, model, missing[0])}{more}")
    return [refs[s] for s in steps if s in refs]


def _gone_reason(family, model: str, step: int, folder: bool = False):
    """Why ``step`` is not a complete checkpoint of ``model`` (any more); with ``folder``,
    (its half-written folder or '', why)."""
    for where, reason in family.source.incomplete(model):
        if re.search(rf"(?:^|[^0-9]){int(step)}$", Path(where).name):
            return (where, reason) if folder else reason
    why = "no complete checkpoint at this step (folder removed or never finished?)"
    return ("", why) if folder else why


def _gone(family, model: str, step: int):
    """A placeholder ref and a quarantine report for a checkpoint that vanished after it was
    registered: recorded like any quarantine, so the other partitions of the run complete."""
    info = family.source.model_info(model)
    where, why = _gone_reason(family, model, step, folder=True)
    ref = CheckpointRef(model, int(step), int(step) * info.tokens_per_step, where)
    return ref, IntegrityReport(model, int(step), False, why, None)


def _fingerprints(engine, model: str) -> dict[tuple[str, int], str]:
    df = read_frame(engine, "SELECT step, fingerprint FROM checkpoints WHERE model = :m "
                            "AND fingerprint IS NOT NULL", {"m": model})
    return {(model, int(s)): fp for s, fp in df.iter_rows()}


def build(parts: FamilyParts) -> list:
    fam = parts.name
    ckpt_key, loss_key = parts.key("checkpoint"), parts.key("checkpoint_loss")

    @dg.asset(
        retry_policy=POSTGRES_RETRY,
        key=ckpt_key, partitions_def=parts.checkpoint, group_name=fam, backfill_policy=BATCHED,
        kinds={"postgres"}, metadata={"genbound/writes": ["models", "checkpoints"]},
        check_specs=[dg.AssetCheckSpec("integrity_clean", asset=ckpt_key, description=
                     "every checkpoint of the run passed integrity (files, hashes, shapes, "
                     "finite weights, no duplicate of another step)")],
        description="Inventory of each checkpoint: tokens seen, D (targets trained on), weight "
        "fingerprint, integrity status and the reason of a quarantine.")
    @retry_transient
    def checkpoint(context: dg.AssetExecutionContext, postgres: PostgresResource,
                   genbound: GenboundResource) -> dg.MaterializeResult:
        engine = postgres.get_engine()
        family = genbound.family(parts.spec)
        quarantined, n = {}, 0
        for model, steps in partitions_by_model(context).items():
            known = _fingerprints(engine, model)
            rows = []
            present = {r.step: r for r in _refs(family, model, steps, status={})}
            for step in steps:
                if step not in present:
                    ref, rep = _gone(family, model, step)
                    rows.append(checkpoint_record(family, ref, rep))
                    quarantined[f"{model}@{step}"] = rep.reason
                    context.log.warning(f"{model} step {step} quarantined: {rep.reason}")
                    continue
                ref = present[step]
                known.pop((model, ref.step), None)   # a rerun is not its own duplicate
                rep = check_checkpoint(ref, family.source, known)
                if rep.ok and (why := vocab_problem(family, ref)):
                    rep = dataclasses.replace(rep, ok=False, reason=why)
                if rep.fingerprint:
                    known[(model, ref.step)] = rep.fingerprint
                rows.append(checkpoint_record(family, ref, rep))
                if not rep.ok:
                    quarantined[f"{model}@{ref.step}"] = rep.reason
                    context.log.warning(f"{model} step {ref.step} quarantined: {rep.reason}")
            write_checkpoints(engine, model_record(family, model), rows)
            n += len(rows)
        return dg.MaterializeResult(
            metadata={"checkpoints": n, "quarantined": len(quarantined)},
            check_results=[dg.AssetCheckResult(
                check_name="integrity_clean", passed=not quarantined,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"quarantined": dg.MetadataValue.json(quarantined)})])

    @dg.asset(
        retry_policy=POSTGRES_RETRY,
        key=loss_key, partitions_def=parts.checkpoint, group_name=fam, backfill_policy=BATCHED,
        deps=[ckpt_key], kinds={"pytorch", "postgres"},
        pool=deploy.GPU_POOL, op_tags=deploy.gpu_op_tags(),
        metadata={"genbound/writes": ["checkpoint_losses"]},
        description="Loss-curve point of each checkpoint: mean loss on the next update's windows "
        "(not yet trained on: the eq. 5 input) and on a fixed held sample of windows.")
    @retry_transient
    def checkpoint_loss(context: dg.AssetExecutionContext, postgres: PostgresResource,
                        genbound: GenboundResource) -> dg.MaterializeResult:
        engine = postgres.get_engine()
        s = genbound.settings(parts.spec)
        family = genbound.family(parts.spec)
        status = _statuses(engine, partitions_by_model(context))
        points = []
        for model, steps in partitions_by_model(context).items():
            rows = []
            for ref in _refs(family, model, steps, status):
                if status.get((model, ref.step)) != "ok":
                    context.log.warning(f"{model} step {ref.step}: not scored ("
                                        f"{status.get((model, ref.step), 'no inventory row')})")
                    continue
                m = family.source.load_model(model, ref.step, **s.load_kwargs())
                rows += checkpoint_loss_rows(m, family.order, ref.step, ref.tokens_seen,
                                             s.curve_tokens, batch_size=s.batch_size)
            write_checkpoint_losses(engine, model, rows)
            points += rows
        nxt = [r for r in points if r["eval_kind"] == "next_tokens"]
        return dg.MaterializeResult(metadata={
            "points": len(points),
            "mean_next_tokens_loss": float(sum(r["mean_loss"] for r in nxt) / len(nxt)) if nxt else None})

    return [checkpoint, checkpoint_loss]


def _statuses(engine, by_model: dict[str, list[int]]) -> dict[tuple[str, int], str]:
    out = {}
    for model, steps in by_model.items():
        df = read_frame(engine, "SELECT step, status FROM checkpoints WHERE model = :m "
                                "AND step = ANY(:s)", {"m": model, "s": steps})
        out.update({(model, int(st)): status for st, status in df.iter_rows()})
    return out


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[a for p in all_family_parts() for a in build(p)])
