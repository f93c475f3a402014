"""A small, internally consistent store for view and report tests, written through the real
write paths (storage.replace_partition, storage.records.write_model_rows, the compute-optimal
step of pipeline/model_steps.py and the scaling-fit writer).

Four model sizes of one family with V = 257.  Three sizes have a checkpoint at D = 20 N (the
certified compute-optimal one) and one at D = 5 N; the smallest has checkpoints at D = 15 N and
25 N only, so its compute-optimal rows are interpolated (certified = false).  Per bounded step
the five rows the pipeline writes: headline (R̂_sq + Δ·C + Σ√C + subsample, exactly),
freedman_decomposed (Thm 3.4's five terms + subsample), azuma, paper_recipe (nominal b·N, not
certified) and prequential (K(h) bits, no bound).  Plus loss curves, Hessian spectra,
checkpoints (one quarantined) and the family's scaling fits.  The numbers are made up; their
relations are what the tests check.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl

from genbound_assets import storage

V = 257
FAMILY = "sample"
SIZES = {"neox-12k": 12_000, "neox-29k": 29_000, "neox-60k": 60_000, "neox-133k": 133_000}
BRACKETED = "neox-12k"
TOKENS_PER_STEP = 4096
QUARANTINED = ("neox-29k", 2, "fingerprint mismatch: weights changed since registration")
METHODS = ("headline", "freedman_decomposed", "azuma", "paper_recipe", "prequential")


def _steps(model: str, n: int) -> dict[str, int]:
    """Bounded steps: D = step * TOKENS_PER_STEP about 5 N and 20 N (15 N and 25 N for the
    bracketed model)."""
    if model == BRACKETED:
        return {"lo": round(15 * n / TOKENS_PER_STEP), "hi": round(25 * n / TOKENS_PER_STEP)}
    return {"early": max(1, round(5 * n / TOKENS_PER_STEP)),
            "optimal": max(2, round(20 * n / TOKENS_PER_STEP))}


def bound_rows(model: str, n: int, step: int) -> list[dict]:
    d = step * TOKENS_PER_STEP
    scale = math.log10(n / 12_000)
    r_h = 2.7 - 0.25 * scale
    gap_q = 0.05 * (12_000 / n) ** 0.3
    c = 0.004 * (12_000 / n) ** 0.1 * (20 * n / d)
    sigma = 0.27 + 30.0 * n ** -0.5
    common = dict(model=model, step=step, quantizer="gptq", bits=4, group_size=128, alpha=0.01,
                  delta=0.01, sample=f"{FAMILY}:bound", n_sample=0, grid_size=1000, n_params=n,
                  n_train_tokens=d, interpolated=False, complexity=c, sigma=sigma, family=FAMILY,
                  design="exact", delta_split=json.dumps({"martingale": 0.01}),
                  delta_split_share=1.0, code_length_method="entropy",
                  code_length_bits=4.6 * n, choice_cost_nats=math.log(6))
    dec_terms = dict(empirical_risk=r_h, random_guess_term=c * math.log(V),
                     loss_variation_term=sigma * math.sqrt(c), smoothing_term=math.sqrt(2 * c),
                     quantization_gap=gap_q, subsample_term=0.0)
    decomposed = dict(common, method="freedman_decomposed", role="diagnostic", certified=True,
                      loss_range_method="worst_case", loss_range=math.log(V / 0.01),
                      subsample_method="none", **dec_terms, bound=sum(dec_terms.values()))
    r_sq = r_h + gap_q + 0.12
    loss_range = 3.5 + 100 * c      # the tight range depends on alpha, hence on C
    head_sigma = sigma * 1.2
    headline = dict(common, method="headline", role="headline", certified=True,
                    loss_range_method="tight", loss_range=loss_range, sigma=head_sigma,
                    subsample_method="none", empirical_risk=r_sq, random_guess_term=None,
                    loss_variation_term=head_sigma * math.sqrt(c), smoothing_term=None,
                    quantization_gap=gap_q, subsample_term=0.0)
    headline["bound"] = r_sq + loss_range * c + headline["loss_variation_term"]
    azuma = dict(common, method="azuma", role="diagnostic", certified=True,
                 loss_range_method="azuma_width", loss_range=6.0, sigma=None,
                 subsample_method="none", empirical_risk=r_sq + 0.02, random_guess_term=None,
                 loss_variation_term=6.0 * math.sqrt(c), smoothing_term=None,
                 quantization_gap=gap_q, subsample_term=0.0, choice_cost_nats=math.log(6) + 1.0)
    azuma["bound"] = azuma["empirical_risk"] + azuma["loss_variation_term"]
    c_ref = 0.9 * c
    ref_terms = dict(empirical_risk=r_h + 0.01, random_guess_term=c_ref * math.log(V),
                     loss_variation_term=sigma * math.sqrt(c_ref),
                     smoothing_term=math.sqrt(2 * c_ref), quantization_gap=gap_q,
                     subsample_term=0.12)
    recipe = dict(common, method="paper_recipe", role="reference", certified=False,
                  design="pairs", n_sample=10_000, code_length_method="nominal",
                  code_length_bits=4.0 * n, loss_range_method="worst_case",
                  subsample_method="hoeffding", complexity=c_ref, choice_cost_nats=0.0,
                  delta_split=json.dumps({"martingale": 0.005, "subsample": 0.005}),
                  **ref_terms, bound=sum(ref_terms.values()))
    k_bits = 6e3 * n ** 0.5 * (d / (20 * n)) ** 0.5
    prequential = dict(common, method="prequential", role="estimate", certified=False,
                       quantizer="none", bits=0, group_size=0, alpha=0.0,
                       code_length_method="prequential", code_length_bits=k_bits,
                       loss_range_method="none", subsample_method="none", design="pairs",
                       sample="loss_curve", empirical_risk=r_h,
                       random_guess_term=c * math.log(V), bound=None, choice_cost_nats=None)
    return [headline, decomposed, azuma, recipe, prequential]


def fill_store(engine) -> dict:
    """Write the sample rows; returns facts the tests compare against."""
    from genbound_assets.defs.scaling.assets import family_fits, write_fits
    from genbound_assets.pipeline.model_steps import compute_optimal_rows
    from genbound_assets.storage.records import write_model_rows

    facts = {"bounds": [], "steps": {}, "compute_optimal": {}, "interpolated": []}
    for model, n in SIZES.items():
        steps = _steps(model, n)
        facts["steps"][model] = steps
        all_steps = sorted({0, 1, 2, *steps.values(), max(steps.values()) + 3})
        storage.replace_partition(engine, "models", {"model": model}, pl.DataFrame([{
            "family": FAMILY, "source_kind": "local", "location": f"/suite/{model}",
            "n_params": n, "vocab_size": V, "context_length": 128,
            "tokens_per_step": TOKENS_PER_STEP}]))
        ck = pl.DataFrame([{
            "step": s, "tokens_seen": s * TOKENS_PER_STEP, "n_train_tokens": s * TOKENS_PER_STEP,
            "location": f"/suite/{model}/step{s}",
            "status": "quarantined" if (model, s) == QUARANTINED[:2] else "ok",
            "quarantine_reason": QUARANTINED[2] if (model, s) == QUARANTINED[:2] else None,
        } for s in all_steps], infer_schema_length=None)
        storage.replace_partition(engine, "checkpoints", {"model": model}, ck)
        by_step = {s: bound_rows(model, n, s) for s in steps.values()}
        rows = [r for rs in by_step.values() for r in rs]
        facts["bounds"] += rows
        storage.replace_partition(engine, "bounds", {"model": model},
                                  pl.DataFrame(rows, infer_schema_length=None))
        co, interp = compute_optimal_rows(
            model, n, {s: s * TOKENS_PER_STEP for s in all_steps},
            {s: [r for r in rs if r["method"] != "prequential"] for s, rs in by_step.items()})
        write_model_rows(engine, model, compute_optimal=co, interpolated=interp)
        facts["compute_optimal"][model] = co
        facts["interpolated"] += interp
        losses = pl.DataFrame([{
            "step": s, "tokens_seen": s * TOKENS_PER_STEP, "eval_kind": "next_tokens",
            "n_tokens": 1024, "mean_loss": 5.5 - 2.6 * (1 - math.exp(-s / 8)) - 0.1 * math.log10(n / 12_000),
        } for s in all_steps])
        storage.replace_partition(engine, "checkpoint_losses", {"model": model}, losses)
        grid = np.linspace(-2.0, 30.0, 200)
        dens = 0.9 * np.exp(-0.5 * (grid / 0.4) ** 2) / (0.4 * math.sqrt(2 * math.pi))
        dens += 0.1 * np.exp(-0.5 * ((grid - 8 - 10 * math.log10(n / 12_000)) / 1.5) ** 2) / (1.5 * math.sqrt(2 * math.pi))
        opt = steps.get("optimal", steps.get("hi"))
        storage.replace_partition(engine, "hessian_spectra", {"model": model}, pl.DataFrame([{
            "step": opt, "n_lanczos": 80, "n_vectors": 1, "seed": 0,
            "n_batch_tokens": 8192, "sample": "hessian", "lambda_min": -1.0, "lambda_max": 28.0,
            "bits_needed": 3.5 - 0.2 * math.log10(n / 12_000),
            "density_grid": grid.tolist(), "density": dens.tolist()}]))
    fits, points = family_fits(engine, FAMILY)
    write_fits(engine, FAMILY, fits)
    facts["fits"], facts["points"] = fits, points
    return facts
