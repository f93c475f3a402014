"""A small, internally consistent store for view and report tests, written through the real
write path (storage.replace_partition).

Four model sizes of a suite with V = 257; two bound steps per size (D/N = 5 and D/N = 20, the
compute-optimal one); per step the four rows the pipeline writes (freedman_direct,
freedman_decomposed stored and nominal, azuma) with terms that add up the way
pipeline/certify.py builds them; loss curves, Hessian spectra, checkpoints (one quarantined)
and a Σ(N) fit.  The numbers are made up; their relations are what the tests check.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl

from genbound_assets import storage

V = 257
SIZES = {"neox-12k": 12_000, "neox-29k": 29_000, "neox-60k": 60_000, "neox-133k": 133_000}
TOKENS_PER_STEP = 4096
QUARANTINED = ("neox-29k", 2, "fingerprint mismatch: weights changed since registration")


def _steps(n: int) -> dict[str, int]:
    """Steps whose D = step * TOKENS_PER_STEP is about 5 N and 20 N."""
    return {"early": max(1, round(5 * n / TOKENS_PER_STEP)),
            "optimal": max(2, round(20 * n / TOKENS_PER_STEP))}


def bound_rows(model: str, n: int, step: int) -> list[dict]:
    d = step * TOKENS_PER_STEP
    scale = math.log10(n / 12_000)
    r_h = 2.7 - 0.25 * scale
    gap_q = 0.05
    c = 0.004 * (12_000 / n) ** 0.1 * (20 * n / d)
    sigma = 1.2 - 0.1 * scale
    common = dict(model=model, step=step, quantizer="gptq", bits=4, group_size=128, alpha=0.01,
                  delta=0.01, sample="bound", n_sample=2000, grid_size=1000, n_params=n,
                  n_train_tokens=d, interpolated=False, complexity=c, sigma=sigma,
                  delta_split=json.dumps({"martingale": 0.001, "subsample": 0.009}))

    def decomposed(c: float, code_length_method: str, certified: bool) -> dict:
        terms = dict(empirical_risk=r_h, random_guess_term=c * math.log(V),
                     loss_variation_term=sigma * math.sqrt(c), smoothing_term=math.sqrt(2 * c),
                     quantization_gap=gap_q, subsample_term=0.08)
        return dict(common, method="freedman_decomposed", code_length_method=code_length_method,
                    loss_range_method="worst_case", subsample_method="bernstein", complexity=c,
                    choice_cost_nats=math.log(2) if certified else 0.0, certified=certified,
                    **terms, bound=sum(terms.values()))

    # the paper's b*N accounting: a shorter (invalid) code, so a smaller C; not certified
    rows = [decomposed(c, "stored", True), decomposed(0.8 * c, "nominal", False)]
    r_sq = r_h + gap_q + 0.01
    direct = dict(common, method="freedman_direct", code_length_method="stored",
                  loss_range_method="tight", subsample_method="bernstein", certified=True,
                  empirical_risk=r_sq, random_guess_term=None, loss_variation_term=sigma * math.sqrt(c),
                  smoothing_term=None, quantization_gap=gap_q, subsample_term=0.07,
                  choice_cost_nats=math.log(2))
    direct["bound"] = r_sq + direct["loss_variation_term"] + 0.07 + 0.3 * c  # + Delta C / s
    azuma = dict(common, method="azuma", code_length_method="stored",
                 loss_range_method="azuma_width", subsample_method="hoeffding", certified=True,
                 empirical_risk=r_sq + 0.02, random_guess_term=None,
                 loss_variation_term=6.0 * math.sqrt(c), smoothing_term=None,
                 quantization_gap=gap_q, subsample_term=0.1, choice_cost_nats=math.log(2) + 1.0)
    azuma["bound"] = azuma["empirical_risk"] + azuma["loss_variation_term"] + 0.1
    return [*rows, direct, azuma]


def fill_store(engine) -> dict:
    """Write the sample rows; returns facts the tests compare against."""
    facts = {"bounds": [], "steps": {}}
    for model, n in SIZES.items():
        steps = _steps(n)
        facts["steps"][model] = steps
        all_steps = sorted({0, 1, 2, *steps.values(), steps["optimal"] + 3})
        storage.replace_partition(engine, "models", {"model": model}, pl.DataFrame([{
            "family": "genbound-suite", "source_kind": "local", "location": f"/suite/{model}",
            "n_params": n, "vocab_size": V, "context_length": 128,
            "tokens_per_step": TOKENS_PER_STEP}]))
        ck = pl.DataFrame([{
            "step": s, "tokens_seen": s * TOKENS_PER_STEP, "location": f"/suite/{model}/step{s}",
            "status": "quarantined" if (model, s) == QUARANTINED[:2] else "ok",
            "quarantine_reason": QUARANTINED[2] if (model, s) == QUARANTINED[:2] else None,
        } for s in all_steps], infer_schema_length=None)
        storage.replace_partition(engine, "checkpoints", {"model": model}, ck)
        rows = []
        for step in steps.values():
            rows += bound_rows(model, n, step)
        facts["bounds"] += rows
        storage.replace_partition(engine, "bounds", {"model": model},
                                  pl.DataFrame(rows, infer_schema_length=None))
        losses = pl.DataFrame([{
            "step": s, "tokens_seen": s * TOKENS_PER_STEP, "eval_kind": "next_tokens",
            "n_tokens": 1024, "mean_loss": 5.5 - 2.6 * (1 - math.exp(-s / 8)) - 0.1 * math.log10(n / 12_000),
        } for s in all_steps])
        storage.replace_partition(engine, "checkpoint_losses", {"model": model}, losses)
        grid = np.linspace(-2.0, 30.0, 200)
        dens = 0.9 * np.exp(-0.5 * (grid / 0.4) ** 2) / (0.4 * math.sqrt(2 * math.pi))
        dens += 0.1 * np.exp(-0.5 * ((grid - 8 - 10 * math.log10(n / 12_000)) / 1.5) ** 2) / (1.5 * math.sqrt(2 * math.pi))
        storage.replace_partition(engine, "hessian_spectra", {"model": model}, pl.DataFrame([{
            "step": steps["optimal"], "n_lanczos": 80, "n_vectors": 1, "seed": 0,
            "n_batch_tokens": 8192, "sample": "hessian", "lambda_min": -1.0, "lambda_max": 28.0,
            "density_grid": grid.tolist(), "density": dens.tolist()}]))
    storage.replace_partition(engine, "power_law_fits", {}, pl.DataFrame([{
        "quantity": "sigma", "form": "offset_power", "selection": "",
        "params": json.dumps({"a": 0.95, "b": 27.4, "c": 0.5}),
        "std_errors": json.dumps({"a": 0.03, "b": 6.0, "c": 0.06}),
        "ci_low": json.dumps({"a": 0.88, "b": 15.0, "c": 0.37}),
        "ci_high": json.dumps({"a": 1.02, "b": 50.0, "c": 0.63}),
        "r2": 0.98, "n_points": 4, "residuals": [0.01, -0.02, 0.0, 0.01]}]))
    return facts
