"""Checkpoint-level inventory and loss curve (partitions: model × step of each family).

* ``<family>/checkpoint``: the inventory row of each checkpoint: tokens seen, D, fingerprint,
  integrity status and reason (table ``checkpoints``, and the model's row in ``models``).
* ``<family>/checkpoint_loss``: the loss-curve point (eq. 5 inputs, table ``checkpoint_losses``).

No ``from __future__ import annotations``: Dagster reads the annotations at definition time.
"""

import dagster as dg

from genbound_assets import deploy
from genbound_assets.defs.families.partitions import FamilyParts, all_family_parts
from genbound_assets.defs.families.resources import GenboundResource
from genbound_assets.defs.families.retry import POSTGRES_RETRY, retry_transient
from genbound_assets.defs.families.runtime import partitions_by_model
from genbound_assets.defs.store.resources import PostgresResource
from genbound_assets.families.integrity import check_checkpoint
from genbound_assets.families.inventory import checkpoint_record, model_record
from genbound_assets.pipeline.curve import checkpoint_loss_rows
from genbound_assets.storage import read_frame
from genbound_assets.storage.records import write_checkpoint_losses, write_checkpoints

BATCHED = dg.BackfillPolicy.single_run()


def _refs(family, model: str, steps: list[int]):
    refs = {r.step: r for r in family.source.list_checkpoints(model)}
    missing = [s for s in steps if s not in refs]
    if missing:
        raise dg.Failure(f"{family.name}: {model} has no complete checkpoint at step(s) "
                         f"{missing[:10]} (folder removed or never finished?)")
    return [refs[s] for s in steps]


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
            for ref in _refs(family, model, steps):
                known.pop((model, ref.step), None)   # a rerun is not its own duplicate
                rep = check_checkpoint(ref, family.source, known)
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
            for ref in _refs(family, model, steps):
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
