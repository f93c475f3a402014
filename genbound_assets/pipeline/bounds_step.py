"""Step (c): certificates from stored rows only (no model is loaded).

Inputs: a checkpoint's ``TokenLossSet`` (per-target X, Y), the chosen configuration's code
length and choice prices, the reference configuration's nominal accounting, N, V, D and the
statement's constants (δ, its split, |K|).  Changing δ, |K|, the δ split or a method therefore
recomputes every bound of a family in seconds.  α is the one the token losses were smoothed at
(fixed from the code length before the sample was seen); with changed constants it is still a
valid, fixed-in-advance weight, though no longer the eq. 20 optimum (re-materialize the token
losses to re-optimize it).

Rows (table ``bounds``, docs/pipeline.md):

* ``headline`` (role headline, certified): the bound to quote.  Lemma 3.2 with Freedman
  (Thm 3.1) on the smoothed chosen h_q with the tight range Δ = log(V/α) − H_min; every choice
  paid in the code (log|grid| for the configuration, log #codes for the code).  Exact design:
  over all D targets at the whole δ.  Windows design: the certified subsample step on window
  means (bounds/subsample.py) with δ split.
* ``freedman_decomposed`` (diagnostic, certified at its own δ): Thm 3.4's five terms, valid as
  the direct bound at the worst-case range Δ_s = log(V/α) plus Lemma 3.3's non-negative slack.
* ``azuma`` (diagnostic, certified at its own δ): Lotfi et al.'s baseline on the same code.
* ``paper_recipe`` (reference, NOT certified): Thm 3.4 as the paper computes it: nominal b·N
  bits at the reference configuration (b = 4), worst-case Δ, R̂ and Σ on m = 10^4 uniform
  single-target pairs, a Hoeffding correction for the subsample; δ/2 each.

Quoting the minimum of several rows is a choice that holds only at the sum of their δ's: the
headline row is the one pre-declared statement (docs/pipeline.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genbound_assets.bounds.azuma import azuma_bound
from genbound_assets.bounds.freedman import freedman_bound, freedman_complexity
from genbound_assets.bounds.loss_range import smoothed_min_entropy, tight_loss_range
from genbound_assets.bounds.smoothing import smoothed_worst_case_loss
from genbound_assets.bounds.subsample import hoeffding_correction, subsampled_freedman_bound

from .losses_step import TokenLossSet
from .settings import CertifySettings

__all__ = ["CodeChoice", "ReferenceAccounting", "certify_from_losses", "split_seed"]

METHODS = ("headline", "freedman_decomposed", "azuma", "paper_recipe")


@dataclass(frozen=True)
class CodeChoice:
    """The chosen configuration's certified code (from ``quantized_models``)."""

    quantizer: str
    bits: int
    group_size: int
    code_length_method: str
    code_length_bits: float
    choice_nats: float              # log|grid| + log #codes


@dataclass(frozen=True)
class ReferenceAccounting:
    """The paper recipe's configuration and nominal b·N bits (not a code length here)."""

    quantizer: str
    bits: int
    group_size: int
    nominal_bits: float


@dataclass(frozen=True)
class Certificate:
    """One Freedman certificate and the estimator of full-data means that goes with it."""

    bound: float
    mean: float                 # the certificate's estimate of the smoothed risk R_sq
    sigma: float
    s_star: float
    complexity: float
    correction: float           # the subsample step (0 when every target is evaluated)
    method: str
    split: dict
    estimate: Callable[[np.ndarray], float]


def split_seed(sample_seed: int) -> int:
    """The subsample step's split seed: an independent stream of the sample's SeedSequence
    (review: the sample and the split must not share a generator seed)."""
    child = np.random.SeedSequence(int(sample_seed)).spawn(2)[1]
    return int(child.generate_state(1)[0])


def _mean(values: np.ndarray) -> float:
    return float(np.asarray(values, dtype=np.float64).mean())


def certify_from_losses(tl: TokenLossSet, code: CodeChoice, reference: ReferenceAccounting | None,
                        *, model: str, step: int, n_params: int, settings: CertifySettings
                        ) -> list[dict[str, Any]]:
    """Every bound row of one checkpoint (module docstring).  Raises ValueError on inputs that
    break a certificate's assumptions (e.g. a loss outside its analytic range)."""
    s = settings
    tl.check()
    v, d, alpha = tl.vocab_size, tl.n_train_tokens, tl.alpha
    exact = tl.design == "exact"
    if exact and len(tl["window"]) != d:
        raise ValueError(f"exact design holds {len(tl['window'])} targets, D = {d}")
    code_nats = code.code_length_bits * math.log(2.0) + code.choice_nats
    x, y = tl["q_sq_loss"], tl["q_sq_entropy"]
    common = dict(model=model, step=int(step), grid_size=s.grid_size, delta=s.delta,
                  n_params=int(n_params), n_train_tokens=d, design=tl.design,
                  n_sample=tl.n_draws, quantize_embeddings=s.quantize_embeddings,
                  calibration=f"windows:seed={s.calibration_seed}:n={s.n_calibration_windows}",
                  interpolated=False)
    chosen = dict(quantizer=code.quantizer, bits=code.bits, group_size=code.group_size,
                  code_length_method=code.code_length_method,
                  code_length_bits=float(code.code_length_bits), alpha=alpha,
                  choice_cost_nats=code.choice_nats)
    rows: list[dict[str, Any]] = []
    seed = split_seed(s.sample_seed)
    sampled = tl.sampled

    def freedman(loss_range: float) -> Certificate:
        if exact:
            fb = freedman_bound(x, y, loss_range, s.delta, code_nats, s.grid_size, d)
            return Certificate(fb.bound, fb.empirical_mean, fb.sigma, fb.s_star, fb.complexity,
                               0.0, "none", {"martingale": s.delta}, _mean)
        sb = subsampled_freedman_bound(
            x[sampled], y[sampled], loss_range, s.delta, d,
            loss_bounds=(0.0, smoothed_worst_case_loss(alpha, v)),
            proxy_bounds=(smoothed_min_entropy(alpha, v), math.log(v)),
            complexity_nats=code_nats, grid_size=s.grid_size, delta_split=s.delta_split,
            split_seed=seed, exact_losses=x[tl.exact], exact_proxies=y[tl.exact],
            groups=tl["draw"][sampled])
        # every other mean reported beside it uses the certificate's own draws and weights
        def estimate(values):
            return sb.sample_mean(values[sampled], values[tl.exact] if tl.n_exact else None)
        return Certificate(sb.bound, sb.empirical_mean, sb.sigma, sb.s_hat, sb.complexity,
                           sb.correction, sb.method,
                           {"martingale": sb.delta_martingale, "subsample": sb.delta_subsample,
                            "subsample_per_method": sb.delta_per_method}, estimate)

    # headline: direct Freedman, tight range
    d_tight = tight_loss_range(alpha, v)
    head = freedman(d_tight)
    r_h, r_q = head.estimate(tl["h_loss"]), head.estimate(tl["q_loss"])
    rows.append({**common, **chosen, "method": "headline", "role": "headline",
                 "loss_range": d_tight, "loss_range_method": "tight", "sigma": head.sigma,
                 "s_star": head.s_star, "delta_split": head.split, "empirical_risk": head.mean,
                 "complexity": head.complexity, "random_guess_term": None,
                 "loss_variation_term": head.sigma * math.sqrt(head.complexity),
                 "smoothing_term": None, "quantization_gap": r_q - r_h,
                 "subsample_term": head.correction, "subsample_method": head.method,
                 "bound": head.bound, "certified": True})

    # Thm 3.4 decomposed: direct at the worst-case range + Lemma 3.3's slack
    d_s = smoothed_worst_case_loss(alpha, v)
    dec = freedman(d_s)
    r_h, r_q = dec.estimate(tl["h_loss"]), dec.estimate(tl["q_loss"])
    c_s = dec.complexity
    slack = (r_q - dec.mean) + c_s * math.log(v) - c_s * d_s + math.sqrt(2.0 * c_s)
    terms = {"empirical_risk": r_h, "random_guess_term": c_s * math.log(v),
             "loss_variation_term": dec.sigma * math.sqrt(c_s), "smoothing_term": math.sqrt(2.0 * c_s),
             "quantization_gap": r_q - r_h}
    bound_dec = dec.bound + max(slack, 0.0)
    rows.append({**common, **chosen, "method": "freedman_decomposed", "role": "diagnostic",
                 "loss_range": d_s, "loss_range_method": "worst_case", "sigma": dec.sigma,
                 "s_star": dec.s_star, "delta_split": dec.split, "complexity": c_s, **terms,
                 # bound minus the five terms: the subsample correction, plus -slack if Lemma
                 # 3.3's slack came out negative (a stale alpha); >= 0, and 0 in the exact design
                 "subsample_term": bound_dec - sum(terms.values()), "subsample_method": dec.method,
                 "bound": bound_dec, "certified": True})

    # Azuma baseline (Lotfi et al.) on the same code
    probs = np.exp(-tl["q_loss"])
    if exact:
        az = azuma_bound(probs, v, d, s.delta, complexity_nats=code_nats, sampled=False)
    else:
        az = azuma_bound(probs[tl.sampled], v, d, s.delta, complexity_nats=code_nats,
                         delta_split=s.delta_split, exact_probs_of_target=probs[tl.exact],
                         groups=tl["draw"][tl.sampled])
    rows.append({**common, **chosen, "method": "azuma", "role": "diagnostic",
                 "alpha": az.alpha, "loss_range": az.loss_range, "loss_range_method": "azuma_width",
                 "sigma": None, "s_star": None,
                 "delta_split": {"martingale": az.delta_martingale, "subsample": az.delta_subsample},
                 "empirical_risk": az.smoothed_mean, "complexity": freedman_complexity(
                     az.delta_martingale, d, s.grid_size, code_nats),
                 "random_guess_term": None, "loss_variation_term": az.azuma_term,
                 "smoothing_term": None, "quantization_gap": r_q - r_h,
                 "subsample_term": az.subsample_correction,
                 "subsample_method": "none" if exact else az.subsample_method,
                 "choice_cost_nats": code.choice_nats + az.union_cost, "bound": az.bound,
                 "certified": True})

    if reference is not None and tl.alpha_ref is not None:
        rows.append({**common, **_paper_recipe(tl, reference, s, v, d), "role": "reference",
                     "method": "paper_recipe", "certified": False,
                     "n_sample": len(tl["ref_window"]), "design": "pairs"})
    for r in rows:
        r["delta_split_share"] = float(s.delta_split) if not exact or r["method"] == "paper_recipe" else 1.0
        if r["bound"] is not None and not math.isfinite(r["bound"]):
            raise ValueError(f"{r['method']} bound is not finite ({r['bound']})")
    return rows


def _paper_recipe(tl: TokenLossSet, ref: ReferenceAccounting, s: CertifySettings, v: int, d: int
                  ) -> dict[str, Any]:
    """Thm 3.4 the paper's way on the reference pairs (module docstring); not certified."""
    a = tl.alpha_ref
    x, y = tl["ref_sq_loss"], tl["ref_sq_entropy"]
    r_h, r_q = _mean(tl["ref_h_loss"]), _mean(tl["ref_q_loss"])
    d_s = smoothed_worst_case_loss(a, v)
    half = s.delta / 2.0
    nats = ref.nominal_bits * math.log(2.0)
    fb = freedman_bound(x, y, d_s, half, nats, s.grid_size, d)
    c = fb.complexity
    terms = {"empirical_risk": r_h, "random_guess_term": c * math.log(v),
             "loss_variation_term": fb.sigma * math.sqrt(c), "smoothing_term": math.sqrt(2.0 * c),
             "quantization_gap": r_q - r_h}
    hoeff = hoeffding_correction(len(x), d_s, half)
    return {"quantizer": ref.quantizer, "bits": ref.bits, "group_size": ref.group_size,
            "code_length_method": "nominal", "code_length_bits": float(ref.nominal_bits),
            "alpha": a, "loss_range": d_s, "loss_range_method": "worst_case", "sigma": fb.sigma,
            "s_star": fb.s_star, "delta_split": {"martingale": half, "subsample": half},
            "complexity": c, **terms, "subsample_term": hoeff, "subsample_method": "hoeffding",
            "choice_cost_nats": 0.0, "bound": sum(terms.values()) + hoeff}
