"""The certificate of each checkpoint, in three steps (docs/pipeline.md):

* ``<family>/quantized_model``: calibration windows -> every configuration of the declared grid
  quantized (artifact under the data dir) -> code lengths -> the priced choice (``quantized_models``);
* ``<family>/token_losses``: the bound's data -> per-target X, Y of h, h_q, smoothed h_q
  (``token_loss_sets`` + ``token_loss_arrays``; the paper-recipe pairs as rows of ``token_losses``);
* ``<family>/checkpoint_bounds``: every certificate from those stored rows, no model loaded
  (``bounds``).

Which checkpoints the automation runs them on is the ``selection`` setting; a person can
materialize any real checkpoint.  No ``from __future__ import annotations`` (Dagster).
"""

import hashlib
import math
import os
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from genbound_assets import deploy
from genbound_assets.defs.checkpoints.assets import BATCHED, _refs, _statuses
from genbound_assets.defs.families.partitions import FamilyParts, all_family_parts
from genbound_assets.defs.families.resources import GenboundResource
from genbound_assets.defs.families.retry import POSTGRES_RETRY, retry_transient
from genbound_assets.defs.families.runtime import (
    DagsterLog,
    model_size,
    partitions_by_model,
    problems_check,
    sample_name,
)
from genbound_assets.defs.store.resources import PostgresResource
from genbound_assets.families.inventory import train_tokens
from genbound_assets.measure.quantize import load_quantized
from genbound_assets.pipeline.bounds_step import (
    CodeChoice,
    ReferenceAccounting,
    certify_from_losses,
)
from genbound_assets.pipeline.design import calibration_windows, evaluation_design
from genbound_assets.pipeline.losses_step import ARRAY_DTYPES, TokenLossSet, evaluate_design
from genbound_assets.pipeline.quantize_step import quantize_checkpoint
from genbound_assets.storage import read_frame
from genbound_assets.storage.records import (
    read_token_loss_set,
    write_bounds,
    write_quantization,
    write_token_loss_set,
    write_token_sample,
)


def _save_artifact(q, path: Path) -> str:
    """Write h_q's stored tensors atomically (tmp + rename); return the file's sha256."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        save_file(q.state, str(tmp), metadata=q.metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:   # disk full, quota, permissions: no half-written file is left
        tmp.unlink(missing_ok=True)
        raise dg.Failure(f"cannot write the quantized model artifact {path}: "
                         f"{getattr(e, 'strerror', None) or e}", allow_retries=False) from e
    return _sha256(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _quant_rows(engine, model: str, step: int) -> pl.DataFrame:
    return read_frame(engine, "SELECT * FROM quantized_models WHERE model = :m AND step = :s",
                      {"m": model, "s": int(step)})


def _load_hq(row: dict, template):
    path = Path(row["artifact_path"] or "")
    if not path.is_file():
        raise dg.Failure(f"quantized model artifact {path} is missing: re-materialize quantized_model")
    if row.get("artifact_sha256") and _sha256(path) != row["artifact_sha256"]:
        raise dg.Failure(f"quantized model artifact {path} does not match its recorded sha256")
    model, _, _, _ = load_quantized(path, template)
    p = next(template.parameters())
    return model.to(device=p.device, dtype=p.dtype)


def _uniforms(engine, family: str, n: int, seed: int) -> np.ndarray:
    """The family's stored uniforms (drawn once, prefix-stable in n), extended when needed."""
    from genbound_assets.pipeline.design import draw_uniforms

    name = sample_name(family)
    df = read_frame(engine, "SELECT i, u, seed FROM token_samples WHERE sample = :s ORDER BY i", {"s": name})
    if df.height >= n and (df.height == 0 or int(df["seed"][0]) == seed):
        return df["u"].to_numpy()[:n]
    u = draw_uniforms(n, seed)
    write_token_sample(engine, name, u, seed)
    return u


def build(parts: FamilyParts) -> list:
    fam = parts.name
    qkey, lkey, bkey = parts.key("quantized_model"), parts.key("token_losses"), parts.key("checkpoint_bounds")

    @dg.asset(
        retry_policy=POSTGRES_RETRY,
        key=qkey, partitions_def=parts.checkpoint, group_name=fam, backfill_policy=BATCHED,
        deps=[parts.key("checkpoint")], kinds={"pytorch", "postgres"},
        pool=deploy.GPU_POOL, op_tags=deploy.gpu_op_tags(),
        metadata={"genbound/writes": ["quantized_models"]},
        check_specs=[dg.AssetCheckSpec("honest_code_length", asset=qkey, blocking=True, description=
                     "every usable configuration records its stored bits, and its bits/param are "
                     ">= the nominal b (side information is counted)")],
        description="Quantizes each checkpoint at every configuration of the declared grid (and "
        "the paper-recipe reference) on its calibration windows; records stored/lzma/entropy code "
        "lengths and the choice, priced log|grid| + log #codes; h_q artifacts under the data dir.")
    @retry_transient
    def quantized_model(context: dg.AssetExecutionContext, postgres: PostgresResource,
                        genbound: GenboundResource) -> dg.MaterializeResult:
        engine, s = postgres.get_engine(), genbound.settings(parts.spec)
        family = genbound.family(parts.spec)
        by_model = partitions_by_model(context)
        status = _statuses(engine, by_model)
        chosen, problems = {}, []
        for model, steps in by_model.items():
            for ref in _refs(family, model, steps, status):
                if status.get((model, ref.step)) != "ok":
                    context.log.warning(f"{model} step {ref.step}: skipped (checkpoint not ok)")
                    continue
                log = DagsterLog(context, f"{model}@{ref.step}: ")
                m = family.source.load_model(model, ref.step, **s.load_kwargs())
                d = train_tokens(family.order, ref.step)
                kind = "exact" if d <= s.exact_max_targets else "windows"
                cal = calibration_windows(family.order.trained_windows(ref.step),
                                          s.n_calibration_windows, s.calibration_seed)
                res = quantize_checkpoint(m, family.order, cal, d, kind, s, log=log)
                rows = []
                for o in res.outcomes:
                    path, sha = None, None
                    if o.q is not None:
                        p = genbound.artifact_dir(fam, model, ref.step, o.config.key) / "hq.safetensors"
                        sha, path = _save_artifact(o.q, p), str(p)
                    row = o.row(model, ref.step, s, o is res.chosen, len(cal), path,
                                res.reference.alpha if res.reference else None)
                    row["artifact_sha256"] = sha
                    rows.append(row)
                    if o.status == "ok" and o.in_grid and (
                            o.q.stored_bits is None or o.q.stored_bits / o.q.n_params < o.config.bits):
                        problems.append(f"{model}@{ref.step} {o.config}: stored bits below b·N")
                write_quantization(engine, model, ref.step, rows)
                chosen[f"{model}@{ref.step}"] = (str(res.chosen.config) if res.chosen else
                                                 f"failed: {res.failure_reason()}")
        return dg.MaterializeResult(
            metadata={"chosen": dg.MetadataValue.json(chosen), "grid": [str(c) for c in s.quant_grid]},
            check_results=[problems_check("honest_code_length", problems)])

    @dg.asset(
        retry_policy=POSTGRES_RETRY,
        key=lkey, partitions_def=parts.checkpoint, group_name=fam, backfill_policy=BATCHED,
        deps=[qkey], kinds={"pytorch", "postgres"},
        pool=deploy.GPU_POOL, op_tags=deploy.gpu_op_tags(),
        metadata={"genbound/writes": ["token_loss_sets", "token_loss_arrays", "token_losses", "token_samples"]},
        check_specs=[dg.AssetCheckSpec("complete_and_finite", asset=lkey, blocking=True, description=
                     "every design target evaluated (count = the design's) and every value finite")],
        description="Per-target losses and entropies of h, h_q and smoothed h_q on the bound's "
        "data: every training target when D <= exact_max_targets, else sampled windows; plus the "
        "paper recipe's single-target pairs.")
    @retry_transient
    def token_losses(context: dg.AssetExecutionContext, postgres: PostgresResource,
                     genbound: GenboundResource) -> dg.MaterializeResult:
        from genbound_assets.pipeline.design import sample_uniforms_needed

        engine, s = postgres.get_engine(), genbound.settings(parts.spec)
        family = genbound.family(parts.spec)
        u = _uniforms(engine, fam, sample_uniforms_needed(s.n_windows, s.n_reference_pairs), s.sample_seed)
        problems, summary = [], {}
        for model, steps in partitions_by_model(context).items():
            for ref in _refs(family, model, steps):
                q = _quant_rows(engine, model, ref.step)
                chosen = q.filter(pl.col("chosen"))
                if chosen.height != 1:
                    why = "; ".join(f"{r['quantizer']}:{r['bits']}:{r['group_size']}: {r['failure_reason']}"
                                    for r in q.iter_rows(named=True) if r["in_grid"] and r["failure_reason"])
                    raise dg.Failure(f"{model} step {ref.step}: no chosen quantization ("
                                     + (f"every configuration failed: {why}" if why else
                                        "materialize quantized_model first") + ")")
                crow = chosen.row(0, named=True)
                refrow = q.filter(pl.col("is_reference") & (pl.col("status") == "ok"))
                refrow = refrow.row(0, named=True) if refrow.height else None
                h = family.source.load_model(model, ref.step, **s.load_kwargs())
                hq = _load_hq(crow, h)
                with_ref = refrow is not None and (s.reference_at == "all" or ref.step in
                                                   _compute_optimal_steps(engine, model, s))
                if not with_ref:
                    refrow = None
                same = refrow is not None and refrow["artifact_path"] == crow["artifact_path"]
                hq_ref = hq if same else (_load_hq(refrow, h) if refrow else None)
                design = evaluation_design(
                    family.order, ref.step, u, n_calibration_windows=s.n_calibration_windows,
                    calibration_seed=s.calibration_seed, exact_max_targets=s.exact_max_targets,
                    n_windows=s.n_windows, n_reference_pairs=s.n_reference_pairs if with_ref else 0)
                log = DagsterLog(context, f"{model}@{ref.step}: ")
                log(f"{design.kind} design: {len(design.windows) + len(design.exact_windows)} windows, "
                    f"D = {design.n_train_tokens:,}")
                status, reason = "ok", None
                try:
                    tl = evaluate_design(h, hq, crow["alpha"], family.order, design, q_ref=hq_ref,
                                         alpha_ref=refrow["reference_alpha"] if refrow else None,
                                         batch_size=s.batch_size)
                    tl.check()
                except (FloatingPointError, ValueError) as e:
                    status, reason, tl = "failed", f"{type(e).__name__}: {e}".splitlines()[0], None
                    problems.append(f"{model}@{ref.step}: {reason}")
                expected = _expected_targets(family.order, design)
                if tl is not None and len(tl["window"]) != expected:
                    problems.append(f"{model}@{ref.step}: {len(tl['window'])} targets, design has {expected}")
                row = _summary(tl, design, crow, refrow, status, reason, s, fam)
                pairs = (_pair_rows(model, ref.step, tl, crow, sample_name(fam),
                                    family.order.context_length) if tl else None)
                write_token_loss_set(engine, model, ref.step, row,
                                     tl.arrays if tl else None, ARRAY_DTYPES, pairs)
                summary[f"{model}@{ref.step}"] = {"design": design.kind, "targets": row["n_targets"],
                                                  "mean_sq_loss": row["mean_sq_loss"]}
        return dg.MaterializeResult(
            metadata={"sets": dg.MetadataValue.json(summary)},
            check_results=[problems_check("complete_and_finite", problems)])

    @dg.asset(
        retry_policy=POSTGRES_RETRY,
        key=bkey, partitions_def=parts.checkpoint, group_name=fam, backfill_policy=BATCHED,
        deps=[lkey], kinds={"postgres"}, metadata={"genbound/writes": ["bounds"]},
        check_specs=[dg.AssetCheckSpec("certified_bounds_sane", asset=bkey, blocking=True, description=
                     "every certified bound finite and >= its empirical risk; headline <= Thm 3.4 "
                     "decomposed; exactly one headline row per bounded checkpoint")],
        description="Every certificate of each checkpoint from its stored token losses and code "
        "length (no model is loaded): the headline bound, Thm 3.4 decomposed and Azuma "
        "diagnostics, and the paper's recipe as a reference row (not certified).")
    @retry_transient
    def checkpoint_bounds(context: dg.AssetExecutionContext, postgres: PostgresResource,
                          genbound: GenboundResource) -> dg.MaterializeResult:
        engine, s = postgres.get_engine(), genbound.settings(parts.spec)
        problems, headline = [], {}
        for model, steps in partitions_by_model(context).items():
            n_params, _ = model_size(engine, model)
            for step in steps:
                summary, arrays = read_token_loss_set(engine, model, step)
                if summary is None:
                    raise dg.Failure(f"{model} step {step}: no token losses (materialize token_losses first)")
                if summary["status"] != "ok":
                    context.log.warning(f"{model}@{step}: no bound: {summary['failure_reason']}")
                    write_bounds(engine, model, step, sample_name(fam), [])
                    continue
                q = _quant_rows(engine, model, step)
                crow = q.filter(pl.col("chosen")).row(0, named=True)
                refq = q.filter(pl.col("is_reference"))
                code = CodeChoice(crow["quantizer"], crow["bits"], crow["group_size"],
                                  crow["code_length_method"], crow["code_length_bits"], crow["choice_nats"])
                reference = None
                if refq.height and summary["alpha_ref"] is not None:
                    r = refq.row(0, named=True)
                    reference = ReferenceAccounting(r["quantizer"], r["bits"], r["group_size"],
                                                    float(r["bits"]) * n_params)
                tl = TokenLossSet(summary["design"], summary["n_train_tokens"], summary["n_draws"],
                                  summary["alpha"], summary["alpha_ref"], arrays, summary["vocab_size"])
                rows = certify_from_losses(tl, code, reference, model=model, step=step,
                                           n_params=n_params, settings=s)
                for r in rows:
                    r.update(family=fam, sample=sample_name(fam))
                problems += _sanity(model, step, rows)
                write_bounds(engine, model, step, sample_name(fam), rows)
                head = next(r for r in rows if r["method"] == "headline")
                headline[f"{model}@{step}"] = round(head["bound"], 4)
                context.log.info(f"{model}@{step}: headline {head['bound']:.4f} nats/token "
                                 f"(R_sq {head['empirical_risk']:.4f}, {summary['design']} design)")
        return dg.MaterializeResult(
            metadata={"headline": dg.MetadataValue.json(headline)},
            check_results=[problems_check("certified_bounds_sane", problems)])

    return [quantized_model, token_losses, checkpoint_bounds]


def _compute_optimal_steps(engine, model: str, s) -> set[int]:
    """The model's compute-optimal checkpoint(s) among its intact ones (the D* checkpoint, or the
    bracket when none is within 5 % of D*), where the paper-recipe row is computed."""
    from genbound_assets.families.inventory import selected_steps

    d = read_frame(engine, "SELECT step, n_train_tokens FROM checkpoints WHERE model = :m AND status = 'ok'",
                   {"m": model})
    d_by_step = {int(a): int(b or 0) for a, b in d.iter_rows()}
    return selected_steps(model_size(engine, model)[0], d_by_step, "compute_optimal", s.tokens_per_param)


def _expected_targets(order, design) -> int:
    counts = order.target_counts()
    return int(counts[design.windows].sum() + counts[design.exact_windows].sum())


def _summary(tl, design, crow, refrow, status, reason, s, fam) -> dict:
    return {
        "design": design.kind, "status": status, "failure_reason": reason,
        "n_train_tokens": design.n_train_tokens, "n_draws": design.draws,
        "n_targets": None if tl is None else len(tl["window"]),
        "n_exact": None if tl is None else tl.n_exact,
        "n_reference_pairs": len(design.reference_windows),
        "quantizer": crow["quantizer"], "bits": crow["bits"], "group_size": crow["group_size"],
        "alpha": crow["alpha"],
        "ref_quantizer": refrow["quantizer"] if refrow else None,
        "ref_bits": refrow["bits"] if refrow else None,
        "ref_group_size": refrow["group_size"] if refrow else None,
        "alpha_ref": refrow["reference_alpha"] if refrow else None,
        "vocab_size": None if tl is None else tl.vocab_size,
        "mean_h_loss": None if tl is None else float(tl["h_loss"].mean()),
        "mean_q_loss": None if tl is None else float(tl["q_loss"].mean()),
        "mean_sq_loss": None if tl is None else float(tl["q_sq_loss"].mean()),
        "sample": sample_name(fam), "settings": s.as_record(),
        "wall_s": None if tl is None else tl.wall_s,
    }


def _pair_rows(model, step, tl, crow, sample, context_length) -> pl.DataFrame | None:
    """The paper recipe's pairs as plain rows of token_losses (h, and smoothed reference h_q);
    ``position`` = window · T + column (the target's place in the training order)."""
    if tl.alpha_ref is None:
        return None
    n = len(tl["ref_window"])
    i = np.arange(n, dtype=np.int32)
    pos = tl["ref_window"].astype(np.int64) * int(context_length) + tl["ref_column"].astype(np.int64)
    base = {"model": [model] * n, "step": [int(step)] * n, "sample": [sample] * n, "i": i,
            "position": pos}
    h = pl.DataFrame({**base, "quantizer": ["none"] * n, "bits": [0] * n, "group_size": [0] * n,
                      "alpha": [0.0] * n, "loss": tl["ref_h_loss"]})
    sq = pl.DataFrame({**base, "quantizer": [crow["quantizer"]] * n, "bits": [crow["bits"]] * n,
                       "group_size": [crow["group_size"]] * n, "alpha": [float(tl.alpha_ref)] * n,
                       "loss": tl["ref_sq_loss"], "entropy": tl["ref_sq_entropy"]})
    return pl.concat([h, sq], how="diagonal")


def _sanity(model, step, rows) -> list[str]:
    out = []
    heads = [r for r in rows if r["method"] == "headline"]
    if len(heads) != 1:
        out.append(f"{model}@{step}: {len(heads)} headline rows")
    for r in rows:
        if not r["certified"]:
            continue
        if r["bound"] is None or not math.isfinite(r["bound"]):
            out.append(f"{model}@{step} {r['method']}: bound not finite")
        elif r["empirical_risk"] is not None and r["bound"] < r["empirical_risk"]:
            out.append(f"{model}@{step} {r['method']}: bound {r['bound']:.4f} < empirical risk")
    dec = [r for r in rows if r["method"] == "freedman_decomposed"]
    if heads and dec and heads[0]["bound"] > dec[0]["bound"] + 1e-9:
        out.append(f"{model}@{step}: headline {heads[0]['bound']:.4f} > decomposed {dec[0]['bound']:.4f}")
    return out


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(assets=[a for p in all_family_parts() for a in build(p)])

