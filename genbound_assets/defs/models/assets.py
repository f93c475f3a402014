"""Model-level assets (partitions: the family's ``model`` dimension), recomputed by declarative
automation when any checkpoint of their model changes (docs/dagster.md, "Automation"):

* ``loss_curve``: every loss-curve point of the model, plotted;
* ``compute_optimal``: the D* = 20 N selection, or the interpolated row (certified = false);
* ``prequential_complexity``: eq. 5's K(h) at each bounded checkpoint (certified = false);
* ``hessian_spectrum``: SLQ at the compute-optimal checkpoint, App. B's bits-needed;
* ``model_bounds``: the model's bounds at a glance (the Fig. 2 breakdown and the bound over
  training), read from the tables the other assets wrote.

No ``from __future__ import annotations`` (Dagster reads the annotations).
"""

import json

import dagster as dg
import numpy as np
import torch

from genbound_assets import deploy
from genbound_assets.defs.families.partitions import FamilyParts, all_family_parts
from genbound_assets.defs.families.resources import GenboundResource
from genbound_assets.defs.families.retry import POSTGRES_RETRY, retry_transient
from genbound_assets.defs.families.runtime import model_size, sample_name
from genbound_assets.defs.sql.figures import MODEL_FIGURES, figure_metadata
from genbound_assets.defs.store.resources import PostgresResource
from genbound_assets.measure.hessian import hessian_spectrum as slq_spectrum
from genbound_assets.pipeline.model_steps import compute_optimal_rows, hessian_row, prequential_rows
from genbound_assets.storage import read_frame
from genbound_assets.storage.records import write_model_rows

AUTO = dg.AutomationCondition.eager().without(~dg.AutomationCondition.any_deps_missing())


def _bounded(engine, model: str, sample: str) -> dict[int, list[dict]]:
    df = read_frame(engine, "SELECT * FROM bounds WHERE model = :m AND sample = :s AND NOT interpolated",
                    {"m": model, "s": sample})
    out: dict[int, list[dict]] = {}
    for r in df.iter_rows(named=True):
        out.setdefault(int(r["step"]), []).append(r)
    return out


def _d_by_step(engine, model: str) -> dict[int, int]:
    df = read_frame(engine, "SELECT step, n_train_tokens FROM checkpoints WHERE model = :m "
                            "AND status = 'ok'", {"m": model})
    return {int(s): int(d or 0) for s, d in df.iter_rows()}


def build(parts: FamilyParts) -> list:
    fam = parts.name
    sample = sample_name(fam)
    mp = parts.model_mapping

    def dep(name):
        return dg.AssetDep(parts.key(name), partition_mapping=mp)

    @dg.asset(retry_policy=POSTGRES_RETRY, key=parts.key("loss_curve"), partitions_def=parts.model, group_name=fam,
              deps=[dep("checkpoint_loss")], automation_condition=AUTO, kinds={"postgres"},
              description="The model's loss curve: next-update loss (eq. 5 input) and held-sample "
              "loss against tokens seen.")
    @retry_transient
    def loss_curve(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
        model = context.partition_key
        df = read_frame(postgres.get_engine(), "SELECT step, tokens_seen, eval_kind, mean_loss "
                        "FROM checkpoint_losses WHERE model = :m ORDER BY tokens_seen", {"m": model})
        nxt = df.filter(df["eval_kind"] == "next_tokens")
        return dg.MaterializeResult(metadata={
            "points": nxt.height, "final_next_tokens_loss": float(nxt["mean_loss"][-1]) if nxt.height else None,
            **figure_metadata(postgres.get_engine(), [model],
                              (("loss_curves", "loss curve against tokens seen"),), log=context.log)})

    @dg.asset(retry_policy=POSTGRES_RETRY, key=parts.key("compute_optimal"), partitions_def=parts.model, group_name=fam,
              deps=[dep("checkpoint_bounds"), dep("checkpoint")], automation_condition=AUTO,
              kinds={"postgres"}, metadata={"genbound/writes": ["compute_optimal", "bounds"]},
              description="The compute-optimal checkpoint (D* = 20 N, Sec. 2.2) among the bounded "
              "ones, or rows interpolated in N/D between its bracket (certified = false).")
    @retry_transient
    def compute_optimal(context: dg.AssetExecutionContext, postgres: PostgresResource,
                        genbound: GenboundResource) -> dg.MaterializeResult:
        model, engine = context.partition_key, postgres.get_engine()
        s = genbound.settings(parts.spec)
        n, _ = model_size(engine, model)
        row, interp = compute_optimal_rows(model, n, _d_by_step(engine, model),
                                           _bounded(engine, model, sample), s.tokens_per_param)
        for r in interp:
            r.pop("computed_at", None)
        write_model_rows(engine, model, compute_optimal=row, interpolated=interp)
        return dg.MaterializeResult(metadata={
            "step": row.get("step"), "certified": row["certified"], "d_star": row["d_star"],
            "n_interpolated_rows": len(interp), "note": row.get("note", "")})

    @dg.asset(retry_policy=POSTGRES_RETRY, key=parts.key("prequential_complexity"), partitions_def=parts.model, group_name=fam,
              deps=[dep("checkpoint_loss"), dep("token_losses")], automation_condition=AUTO,
              kinds={"postgres"}, metadata={"genbound/writes": ["bounds"]},
              description="Eq. 5: K(h) from the area under the next-update loss curve, at each "
              "bounded checkpoint (an estimate: certified = false).")
    @retry_transient
    def prequential_complexity(context: dg.AssetExecutionContext, postgres: PostgresResource,
                               genbound: GenboundResource) -> dg.MaterializeResult:
        model, engine = context.partition_key, postgres.get_engine()
        s = genbound.settings(parts.spec)
        n, vocab = model_size(engine, model)
        pts = read_frame(engine, "SELECT step, tokens_seen, mean_loss FROM checkpoint_losses "
                         "WHERE model = :m AND eval_kind = 'next_tokens'", {"m": model})
        sets = read_frame(engine, "SELECT step, n_train_tokens, mean_h_loss, design FROM token_loss_sets "
                          "WHERE model = :m AND status = 'ok'", {"m": model})
        bounded = {int(r["step"]): (int(r["n_train_tokens"]), float(r["mean_h_loss"]))
                   for r in sets.iter_rows(named=True)}
        rows = prequential_rows(model, n, [(int(a), int(b), float(c)) for a, b, c in pts.iter_rows()],
                                bounded, vocab_size=vocab, delta=s.delta, grid_size=s.grid_size,
                                family=fam)
        write_model_rows(engine, model, prequential=rows)
        return dg.MaterializeResult(metadata={
            "K_bits": dg.MetadataValue.json({r["step"]: round(r["code_length_bits"]) for r in rows}),
            "bits_per_param": dg.MetadataValue.json(
                {r["step"]: round(r["code_length_bits"] / n, 3) for r in rows})})

    @dg.asset(retry_policy=POSTGRES_RETRY, key=parts.key("hessian_spectrum"), partitions_def=parts.model, group_name=fam,
              deps=[parts.key("compute_optimal")], automation_condition=AUTO,
              kinds={"pytorch", "postgres"}, metadata={"genbound/writes": ["hessian_spectra"]},
              pool=deploy.GPU_POOL, op_tags=deploy.gpu_op_tags(),
              description="SLQ spectral density and Tr(H^1/2) of the training-NLL Hessian at the "
              "compute-optimal checkpoint (App. B), with the bits that suffice for the measured "
              "quantization gap (an estimate).")
    @retry_transient
    def hessian_spectrum(context: dg.AssetExecutionContext, postgres: PostgresResource,
                         genbound: GenboundResource) -> dg.MaterializeResult:
        model, engine = context.partition_key, postgres.get_engine()
        s = genbound.settings(parts.spec)
        co = read_frame(engine, "SELECT step, step_hi FROM compute_optimal WHERE model = :m", {"m": model})
        step = None if co.height == 0 else (co["step"][0] if co["step"][0] is not None else co["step_hi"][0])
        if step is None:
            raise dg.Failure(f"{model}: no compute-optimal checkpoint yet (materialize compute_optimal)")
        family = genbound.family(parts.spec)
        m = family.source.load_model(model, int(step), **s.load_kwargs("eager"))   # HVPs need eager
        w = family.order.trained_windows(int(step))
        n_win = max(1, s.slq_batch_tokens // family.order.context_length)
        rng = np.random.default_rng(np.random.SeedSequence([s.slq_seed, 0x68657373]))
        idx = np.sort(rng.choice(w, size=min(n_win, w), replace=False))
        ids = torch.as_tensor(family.order.batch(idx).inputs)
        res = slq_spectrum(m, ids, n_steps=s.slq_lanczos, n_vectors=s.slq_vectors, seed=s.slq_seed,
                           hutchinson_vectors=0)
        gap = read_frame(engine, "SELECT quantization_gap FROM quantized_models WHERE model = :m "
                         "AND step = :s AND chosen", {"m": model, "s": int(step)})
        target = float(gap["quantization_gap"][0]) if gap.height and gap["quantization_gap"][0] else 0.1
        row = hessian_row(model, int(step), res["summary"], res["slq"], n_lanczos=s.slq_lanczos,
                          n_vectors=s.slq_vectors, seed=s.slq_seed, n_batch_tokens=int(ids.numel()),
                          target_gap=max(target, 1e-3), delta=s.delta)
        write_model_rows(engine, model, hessian=row)
        return dg.MaterializeResult(metadata={
            "step": int(step), "trace_sqrt_positive": row["trace_sqrt_positive"],
            "trace_sqrt_shifted": row["trace_sqrt_shifted"], "lambda_min": row["lambda_min"],
            "lambda_max": row["lambda_max"], "bits_needed": row["bits_needed"],
            **figure_metadata(engine, [model], (("hessian_spectra", "SLQ spectral density (Fig. 4)"),),
                              log=context.log)})

    @dg.asset(retry_policy=POSTGRES_RETRY, key=parts.key("model_bounds"), partitions_def=parts.model, group_name=fam,
              deps=[parts.key("compute_optimal"), dep("checkpoint_bounds"),
                    parts.key("prequential_complexity"), parts.key("loss_curve")],
              automation_condition=AUTO, kinds={"postgres"},
              description="The model's bounds at a glance: the headline at the compute-optimal "
              "checkpoint with its Thm 3.4 breakdown (Fig. 2 right) and every bounded checkpoint's "
              "headline, diagnostics and paper recipe against tokens seen.")
    @retry_transient
    def model_bounds(context: dg.AssetExecutionContext, postgres: PostgresResource) -> dg.MaterializeResult:
        model, engine = context.partition_key, postgres.get_engine()
        b = read_frame(engine, "SELECT step, method, bound, empirical_risk, random_guess_term, "
                       "loss_variation_term, smoothing_term, quantization_gap, subsample_term "
                       "FROM bounds WHERE model = :m AND sample = :s AND NOT interpolated",
                       {"m": model, "s": sample})
        co = read_frame(engine, "SELECT step FROM compute_optimal WHERE model = :m", {"m": model})
        metadata: dict = {"bounded_checkpoints": int(b.filter(b["method"] == "headline").height)}
        step = co["step"][0] if co.height and co["step"][0] is not None else None
        if step is not None:
            at = {r["method"]: r for r in b.filter(b["step"] == step).iter_rows(named=True)}
            if "headline" in at:
                metadata.update(compute_optimal_step=int(step), headline_bound=float(at["headline"]["bound"]),
                                empirical_risk_sq=float(at["headline"]["empirical_risk"]))
            if "freedman_decomposed" in at:
                r = at["freedman_decomposed"]
                names = ["empirical_risk", "random_guess_term", "loss_variation_term",
                         "smoothing_term", "quantization_gap", "subsample_term"]
                metadata["decomposed_terms"] = dg.MetadataValue.json(
                    {k: round(float(r[k] or 0.0), 4) for k in names})
            if "paper_recipe" in at:
                metadata["paper_recipe_bound"] = float(at["paper_recipe"]["bound"])
        # the report's figures (bound over training, the Thm 3.4 breakdown), as in `genbound report`
        metadata.update(figure_metadata(engine, [model], MODEL_FIGURES, log=context.log))
        context.log.info(json.dumps({k: v for k, v in metadata.items() if isinstance(v, int | float)}))
        return dg.MaterializeResult(metadata=metadata)

    return [loss_curve, compute_optimal, prequential_complexity, hessian_spectrum, model_bounds]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[a for p in all_family_parts() for a in build(p)])
