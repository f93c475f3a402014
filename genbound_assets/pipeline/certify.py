"""One checkpoint -> its certified bounds (Thm 3.4 decomposed, direct, Azuma baseline).

The order is fixed by what each step may depend on (docs/pipeline.md):

1. calibration windows, chosen first with their own seed (data/sampler.calibration_windows);
2. quantize h -> h_q on those windows (measure/quantize);
3. code length L(h_q) -> C -> alpha (bounds/): nothing here looks at the bound's sample;
4. the bound's m pairs, uniform over the targets outside the windows, and the windows' targets
   evaluated exactly (the exact stratum);
5. per-token losses/entropies of h and of the smoothed h_q at that alpha (measure/token_losses);
6. certificates: sample-split Freedman + Hoeffding/Bernstein (bounds/subsample), the paper's
   decomposition made valid by a non-negative slack, Lotfi et al.'s Azuma bound.

No Dagster and no database: the result is plain rows for the `bounds`, `token_losses` and
`quantized_models` tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from genbound_assets.bounds.azuma import azuma_bound
from genbound_assets.bounds.choices import choice_cost_nats
from genbound_assets.bounds.code_length import (
    compressed_code_length,
    nominal_code_length,
    stored_code_length,
)
from genbound_assets.bounds.freedman import freedman_complexity
from genbound_assets.bounds.loss_range import smoothed_min_entropy, tight_loss_range
from genbound_assets.bounds.smoothing import smoothed_worst_case_loss, smoothing_alpha
from genbound_assets.bounds.subsample import SubsampledBound, subsampled_freedman_bound
from genbound_assets.data.sampler import calibration_windows, excluded_targets, positions_for
from genbound_assets.data.stream import TokenStream
from genbound_assets.measure.quantize import (
    QuantizationFailed,
    QuantizedModel,
    check_quantization,
    quantize_model,
)
from genbound_assets.measure.token_losses import TokenLosses, token_losses


@dataclass(frozen=True)
class BoundSettings:
    """Everything fixed before any data is looked at (so none of it costs union-bound nats)."""

    quantizer: str = "gptq"
    bits: int = 4
    group_size: int = 32
    quantize_embeddings: bool = True   # tiny models: embeddings are most of N
    delta: float = 0.01                # the paper's
    delta_split: float = 0.1           # share of delta for the martingale statement
    grid_size: int = 1000              # |K|, the paper's
    n_calibration_windows: int = 16
    calibration_seed: int = 1
    batch_size: int = 64
    max_gap_nats: float = 2.0          # a larger quantization gap is a failed quantization

    def __post_init__(self):
        for name in ("delta", "delta_split"):
            x = getattr(self, name)
            if not 0.0 < x < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {x!r}")
        if self.n_calibration_windows < 1:
            raise ValueError("n_calibration_windows must be >= 1")


@dataclass
class CheckpointCertificate:
    model: str
    step: int
    n_params: int
    vocab_size: int
    n_train_tokens: int                 # D: targets the checkpoint trained on
    n_sample: int                       # m
    n_exact: int
    status: str                         # "ok" | "failed" (quantization) | "vacuous" (C >= V - 1)
    failure_reason: str | None
    quantized: dict[str, Any]           # row for quantized_models
    bounds: list[dict[str, Any]] = field(default_factory=list)
    token_rows: dict[str, np.ndarray] = field(default_factory=dict)
    quantized_model: torch.nn.Module | None = None   # h_q (decoded), only if asked for

    def bound(self, method: str, code_length_method: str | None = None) -> dict[str, Any]:
        for row in self.bounds:
            if row["method"] == method and code_length_method in (None, row["code_length_method"]):
                return row
        raise KeyError(f"no {method!r} bound ({code_length_method!r}) for {self.model}@{self.step}")


def _stratified_mean(values: np.ndarray, n_sample: int, weight_exact: float) -> float:
    """Full-data mean estimate: exact stratum (tail of the array) weighted by its share of D."""
    sampled, exact = values[:n_sample], values[n_sample:]
    if len(exact) == 0:
        return float(sampled.mean())
    return weight_exact * float(exact.mean()) + (1.0 - weight_exact) * float(sampled.mean())


def certify_checkpoint(model: torch.nn.Module, stream: TokenStream, prefix_len: int, uniforms,
                       context_length: int, settings: BoundSettings = BoundSettings(), *,
                       model_name: str, step: int, sample_name: str = "bound",
                       progress: bool = False, keep_quantized: bool = False
                       ) -> CheckpointCertificate:
    """Certified bounds for the checkpoint that trained on ``stream.tokens[:prefix_len]``.

    uniforms: the stored u_i of `token_samples` (seeded, drawn once for the whole family).
    """
    s = settings
    n_train = stream.n_targets(prefix_len)
    vocab = int(model.config.vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    window_len = int(context_length)

    # 1-2. calibration windows first (own seed), then quantize on them
    windows = calibration_windows(stream, prefix_len, s.n_calibration_windows, window_len,
                                  s.calibration_seed)
    calib = torch.as_tensor(np.stack([stream.tokens[a:a + window_len] for a in windows]))
    q: QuantizedModel = quantize_model(model, s.quantizer, s.bits, s.group_size, calib,
                                       quantize_embeddings=s.quantize_embeddings,
                                       seed=s.calibration_seed)

    # 3. code lengths -> C -> alpha, all before the sample is touched
    stored = stored_code_length(q.code_length_rows())
    compressed = compressed_code_length(math.ceil(q.compressed_bits / 8))
    nominal = nominal_code_length(n_params, s.bits, all_tensors_quantized=False)
    choice_nats = choice_cost_nats(2)   # the shorter of stored/compressed, chosen after seeing h_q
    chosen = min((stored, compressed), key=lambda c: c.bits)
    delta_m = s.delta * s.delta_split

    def complexity_for(code_bits: float, extra_nats: float) -> tuple[float, float]:
        nats = code_bits * math.log(2.0) + extra_nats
        return nats, freedman_complexity(delta_m, n_train, s.grid_size, nats)

    cert_nats, cert_c = complexity_for(chosen.bits, choice_nats)
    nom_nats, nom_c = complexity_for(nominal.bits, 0.0)
    if cert_c >= vocab - 1:
        # no smoothing weight in (0, 1) exists: every bound would exceed log V (the uniform model)
        reason = (f"vacuous: complexity C = {cert_c:.4g} >= V - 1 = {vocab - 1}; "
                  f"the code length ({chosen.bits} bits) is too long for D = {n_train} tokens")
        return CheckpointCertificate(
            model=model_name, step=int(step), n_params=n_params, vocab_size=vocab,
            n_train_tokens=n_train, n_sample=0, n_exact=0, status="vacuous",
            failure_reason=reason, quantized=_quantized_row(model_name, step, s, q, len(windows)),
            quantized_model=q.model if keep_quantized else None)
    alpha = smoothing_alpha(cert_c, vocab)
    # the paper's b*N accounting, shown for comparison only (skipped if even it is vacuous)
    alpha_nominal = smoothing_alpha(nom_c, vocab) if nom_c < vocab - 1 else None

    # 4. the bound's pairs, uniform outside the windows, plus the exact stratum
    positions = positions_for(np.asarray(uniforms), stream, prefix_len,
                              exclude_windows=windows, window_len=window_len)
    exact = excluded_targets(stream, windows, window_len)
    m, n_exact = len(positions), len(exact)
    all_pos = np.concatenate([positions, exact])
    w_exact = n_exact / n_train

    # 5. per-token losses of h and of smoothed h_q
    with torch.no_grad():
        th: TokenLosses = token_losses(model, stream, all_pos, context_length,
                                       batch_size=s.batch_size, progress=progress)
        tq: TokenLosses = token_losses(q.model, stream, all_pos, context_length,
                                       alphas=tuple(a for a in (alpha, alpha_nominal) if a),
                                       batch_size=s.batch_size,
                                       progress=progress)
    r_h = _stratified_mean(th.loss, m, w_exact)
    r_q = _stratified_mean(tq.loss, m, w_exact)
    quant_row = _quantized_row(model_name, step, s, q, len(windows))
    quant_row["quantization_gap"] = r_q - r_h
    cert = CheckpointCertificate(
        model=model_name, step=int(step), n_params=n_params, vocab_size=vocab,
        n_train_tokens=n_train, n_sample=m, n_exact=n_exact, status="ok", failure_reason=None,
        quantized=quant_row,
        token_rows={"position": all_pos, "exact": np.arange(len(all_pos)) >= m,
                    "h_loss": th.loss, "h_entropy": th.entropy, "q_loss": tq.loss,
                    "q_entropy": tq.entropy, "sq_loss": tq.smoothed_loss[alpha],
                    "sq_entropy": tq.smoothed_entropy[alpha], "alpha": np.full(len(all_pos), alpha)},
        quantized_model=q.model if keep_quantized else None,
    )
    failure = check_quantization(r_h, r_q, s.max_gap_nats, raise_on_failure=False)
    if failure is not None:
        cert.status, cert.failure_reason = "failed", failure.reason
        quant_row.update(status="failed", failure_reason=failure.reason, quantization_gap=None)
        return cert

    # 6. certificates
    common = dict(model=model_name, step=int(step), quantizer=s.quantizer, bits=s.bits,
                  group_size=s.group_size, grid_size=s.grid_size, delta=s.delta,
                  n_params=n_params, n_train_tokens=n_train, sample=sample_name, n_sample=m,
                  interpolated=False)
    split = {"martingale": delta_m, "subsample": s.delta - delta_m,
             "subsample_per_method": (s.delta - delta_m) / 2}

    def subsampled(a: float, loss_range: float, nats: float) -> SubsampledBound:
        x, y = tq.smoothed_loss[a], tq.smoothed_entropy[a]
        return subsampled_freedman_bound(
            x[:m], y[:m], loss_range, s.delta, n_train,
            loss_bounds=(0.0, smoothed_worst_case_loss(a, vocab)),
            proxy_bounds=(smoothed_min_entropy(a, vocab), math.log(vocab)),
            complexity_nats=nats, grid_size=s.grid_size,
            delta_split=s.delta_split, exact_losses=x[m:], exact_proxies=y[m:])

    direct = subsampled(alpha, tight_loss_range(alpha, vocab), cert_nats)
    cert.bounds.append({
        **common, "method": "freedman_direct", "code_length_method": chosen.method,
        "code_length_bits": float(chosen.bits), "alpha": alpha, "loss_range": direct.loss_range,
        "loss_range_method": "tight", "sigma": direct.sigma, "s_star": direct.s_hat,
        "delta_split": split, "empirical_risk": _stratified_mean(tq.smoothed_loss[alpha], m, w_exact),
        "complexity": direct.complexity, "random_guess_term": None,
        "loss_variation_term": direct.sigma * math.sqrt(direct.complexity),
        "smoothing_term": None, "quantization_gap": r_q - r_h,
        "subsample_term": direct.correction, "subsample_method": direct.method,
        "choice_cost_nats": choice_nats, "bound": direct.bound, "certified": True,
    })
    variants = [(alpha, cert_nats, chosen, True)]
    if alpha_nominal is not None:
        variants.append((alpha_nominal, nom_nats, nominal, False))
    for a, c_nats, code, certified in variants:
        cert.bounds.append({**common, **_decomposed_row(
            subsampled(a, smoothed_worst_case_loss(a, vocab), c_nats), tq, a, vocab, m, w_exact, r_h, r_q,
            code, certified, choice_nats if certified else 0.0, split)})

    probs_q = np.exp(-tq.loss)
    az = azuma_bound(probs_q[:m], vocab, n_train, s.delta, complexity_nats=cert_nats,
                     delta_split=s.delta_split, exact_probs_of_target=probs_q[m:])
    cert.bounds.append({
        **common, "method": "azuma", "code_length_method": chosen.method,
        "code_length_bits": float(chosen.bits), "alpha": az.alpha, "loss_range": az.loss_range,
        "loss_range_method": "azuma_width", "sigma": None, "s_star": None,
        "delta_split": {"martingale": az.delta_martingale, "subsample": az.delta_subsample},
        "empirical_risk": az.smoothed_mean, "complexity": cert_c, "random_guess_term": None,
        "loss_variation_term": az.azuma_term, "smoothing_term": None,
        "quantization_gap": r_q - r_h, "subsample_term": az.subsample_correction,
        "subsample_method": "hoeffding", "choice_cost_nats": choice_nats + az.union_cost,
        "bound": az.bound, "certified": True,
    })
    return cert


def _quantized_row(model_name: str, step: int, s: BoundSettings, q: QuantizedModel,
                   n_windows: int) -> dict[str, Any]:
    """Row for `quantized_models` (the gap is filled in once the losses are known)."""
    return {
        "model": model_name, "step": int(step), "quantizer": s.quantizer, "bits": s.bits,
        "group_size": s.group_size, "quantize_embeddings": s.quantize_embeddings,
        "calibration_sample": f"calibration-windows:seed={s.calibration_seed}:n={n_windows}",
        "n_params": int(q.n_params), "nominal_bits": int(q.nominal_bits),
        "stored_bits": int(q.stored_bits), "compressed_bits": int(q.compressed_bits),
        "bits_per_param": q.effective_bits_per_param, "status": "ok", "failure_reason": None,
        "quantization_gap": None, "wall_s": q.wall_s, "artifact_path": None,
    }


def _decomposed_row(sub: SubsampledBound, tq: TokenLosses, alpha: float, vocab: int, m: int,
                    w_exact: float, r_h: float, r_q: float, code, certified: bool,
                    choice_nats: float, split: dict) -> dict[str, Any]:
    """Thm 3.4's five terms, certified from a sample.

    sub certifies R_sq <= B_direct (Delta_s = log(V/alpha)).  Token by token (Lemma 3.3)
    X_q - X_sq >= log(1 - alpha + alpha/V), so the sample slack
        mean(X_q - X_sq) + C log V - C Delta_s + sqrt(2C)  >=  sqrt(2C) - (eq. 20 excess)  >= 0,
    and B_direct + slack is still a certified upper bound on R_sq; algebraically it equals the
    sum of the five terms plus a subsample term (reported as such).
    """
    c = sub.complexity
    r_sq = _stratified_mean(tq.smoothed_loss[alpha], m, w_exact)
    slack = (r_q - r_sq) + c * math.log(vocab) - c * sub.loss_range + math.sqrt(2.0 * c)
    if slack < -1e-9:
        raise AssertionError(f"Lemma 3.3 slack is negative ({slack}); smoothing inconsistent")
    bound = sub.bound + max(slack, 0.0)
    terms = {
        "empirical_risk": r_h, "random_guess_term": c * math.log(vocab),
        "loss_variation_term": sub.sigma * math.sqrt(c), "smoothing_term": math.sqrt(2.0 * c),
        "quantization_gap": r_q - r_h,
    }
    return {
        "method": "freedman_decomposed", "code_length_method": code.method,
        "code_length_bits": float(code.bits), "alpha": alpha, "loss_range": sub.loss_range,
        "loss_range_method": "worst_case", "sigma": sub.sigma, "s_star": sub.s_hat,
        "delta_split": split, "complexity": c, **terms,
        "subsample_term": bound - sum(terms.values()), "subsample_method": sub.method,
        "choice_cost_nats": choice_nats, "bound": bound, "certified": certified,
    }


__all__ = ["BoundSettings", "CheckpointCertificate", "QuantizationFailed", "certify_checkpoint"]
