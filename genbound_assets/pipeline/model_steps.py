"""Model-level steps: the compute-optimal selection (Sec. 2.2 / 4), the prequential complexity
(eq. 5, Sec. 5.2) and the Hessian spectrum's bits estimate (App. B).  None of their numbers is a
certified bound: interpolated rows, eq. 5 estimates and App. B predictions are stored with
``certified = false``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from genbound_assets.bounds.compute_optimal import select_compute_optimal
from genbound_assets.bounds.freedman import freedman_complexity
from genbound_assets.bounds.hessian_bits import bits_for_quantization_gap
from genbound_assets.bounds.prequential import prequential_complexity

__all__ = ["compute_optimal_rows", "prequential_rows", "hessian_row", "INTERPOLATED_FIELDS"]

# numeric bound columns interpolated linearly in N/D between the bracketing checkpoints
INTERPOLATED_FIELDS = ("bound", "empirical_risk", "complexity", "random_guess_term",
                       "loss_variation_term", "smoothing_term", "quantization_gap",
                       "subsample_term", "sigma", "alpha", "code_length_bits", "loss_range")


def compute_optimal_rows(model: str, n_params: int, d_by_step: dict[int, int],
                         bounds_by_step: dict[int, list[dict[str, Any]]],
                         tokens_per_param: float = 20.0, tolerance: float = 0.05
                         ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(compute_optimal row, interpolated bound rows).

    Among the checkpoints that have bounds: one within ``tolerance`` of D* = tokens_per_param · N
    is the compute-optimal checkpoint (its rows are the certified ones); otherwise every method
    present at both bracketing checkpoints is interpolated linearly in N/D to N/D = 1/20
    (the paper's Sec. 4 for Pythia's smallest models), certified = false.
    """
    steps = sorted(s for s in bounds_by_step if d_by_step.get(s, 0) > 0 and bounds_by_step[s])
    d_star = math.ceil(tokens_per_param * n_params)
    row: dict[str, Any] = {"model": model, "n_params": int(n_params),
                           "tokens_per_param": float(tokens_per_param), "d_star": d_star,
                           "certified": False}
    if not steps:
        row["note"] = "no bounded checkpoint yet"
        return row, []
    d = np.array([d_by_step[s] for s in steps], dtype=np.float64)
    try:
        sel = select_compute_optimal(n_params, d, tolerance=tolerance, target_ratio=1.0 / tokens_per_param)
    except ValueError as e:
        row["note"] = f"not bracketed: {e}"
        return row, []
    if sel.certified:
        s = steps[sel.index]
        row.update(step=s, n_train_tokens=int(d_by_step[s]), certified=True, note=sel.note)
        return row, []
    lo, hi = steps[sel.lo_index], steps[sel.hi_index]
    row.update(step_lo=lo, step_hi=hi, d_lo=int(d_by_step[lo]), d_hi=int(d_by_step[hi]),
               weight_hi=sel.weight_hi, note=sel.note)
    w = sel.weight_hi
    out = []
    by_method_lo = {r["method"]: r for r in bounds_by_step[lo]}
    for r_hi in bounds_by_step[hi]:
        r_lo = by_method_lo.get(r_hi["method"])
        if r_lo is None:
            continue
        r = dict(r_hi)
        for k in INTERPOLATED_FIELDS:
            a, b = r_lo.get(k), r_hi.get(k)
            r[k] = None if a is None or b is None else (1.0 - w) * float(a) + w * float(b)
        r.update(interpolated=True, certified=False, role="estimate", n_train_tokens=d_star,
                 step=hi)
        out.append(r)
    return row, out


def prequential_rows(model: str, n_params: int, points: list[tuple[int, int, float]],
                     bounded: dict[int, tuple[int, float]], *, vocab_size: int, delta: float,
                     grid_size: int, family: str, sample: str = "loss_curve"
                     ) -> list[dict[str, Any]]:
    """Eq. 5 estimates of K(h_t) for each bounded checkpoint t (certified = false).

    points: (step, tokens_seen, next-tokens loss) of the loss curve, step 0 included;
    bounded: step -> (D_t, R̂_h of h_t on its D_t training targets).  Stored as ``bounds`` rows
    with method 'prequential': code_length_bits = K(h) bits, complexity = C from K(h), and
    nominal_bits_param = 16·N for the parameter-counting comparison (Fig. 3).
    """
    pts = sorted(points)
    if not pts or pts[0][1] != 0:
        return []
    t = np.array([p[1] for p in pts], dtype=np.float64)
    losses = np.array([p[2] for p in pts], dtype=np.float64)
    rows = []
    for step, (d, r_h) in sorted(bounded.items()):
        try:
            k = prequential_complexity(t, losses, int(d), float(r_h))
        except ValueError:
            continue
        c = freedman_complexity(delta, int(d), grid_size, k.nats)
        rows.append({"model": model, "step": int(step), "method": "prequential", "role": "estimate",
                     "quantizer": "none", "bits": 0, "group_size": 0,
                     "code_length_method": "prequential", "code_length_bits": float(k.bits),
                     "alpha": 0.0, "loss_range_method": "none", "grid_size": grid_size,
                     "delta": delta, "n_params": int(n_params), "n_train_tokens": int(d),
                     "sample": sample, "n_sample": k.n_intervals, "design": "pairs",
                     "empirical_risk": float(r_h), "complexity": c,
                     "random_guess_term": c * math.log(vocab_size), "bound": None,
                     "certified": False, "interpolated": False, "family": family,
                     "subsample_method": "none"})
    return rows


def hessian_row(model: str, step: int, summary: dict[str, Any], result, *, n_lanczos: int,
                n_vectors: int, seed: int, n_batch_tokens: int, target_gap: float, delta: float
                ) -> dict[str, Any]:
    """Row of ``hessian_spectra`` with App. B's bits-needed at ``target_gap`` (an estimate)."""
    n = int(summary.get("n_params") or summary["dim"])
    tr_pos = summary.get("trace_sqrt_positive")
    bits = (bits_for_quantization_gap(tr_pos, n, target_gap, delta)
            if tr_pos and tr_pos > 0 and target_gap > 0 else None)
    nodes, weights = result.pooled() if hasattr(result, "pooled") else (None, None)
    grid, dens = _density(nodes, weights)
    return {"model": model, "step": int(step), "n_lanczos": n_lanczos, "n_vectors": n_vectors,
            "seed": seed, "n_batch_tokens": n_batch_tokens, "sample": "slq-windows",
            "trace_slq": summary.get("trace"), "trace_hutchinson": summary.get("hutchinson_trace"),
            "trace_hutchinson_se": summary.get("hutchinson_stderr"),
            "lambda_min": summary.get("lambda_min"), "lambda_max": summary.get("lambda_max"),
            "trace_sqrt_shifted": summary.get("trace_sqrt_shifted"),
            "trace_sqrt_abs": summary.get("trace_sqrt_abs"), "trace_sqrt_positive": tr_pos,
            "n_params": n, "bits_needed": bits,
            "ritz_nodes": None if nodes is None else [float(x) for x in nodes],
            "ritz_weights": None if weights is None else [float(x) for x in weights],
            "density_grid": grid, "density": dens}


def _density(nodes, weights, n_grid: int = 200, width_frac: float = 0.02):
    """Gaussian-broadened spectral density of the pooled quadrature (Fig. 4 style)."""
    if nodes is None or len(nodes) == 0:
        return None, None
    x = np.asarray(nodes, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    span = max(hi - lo, 1e-12)
    sigma = width_frac * span
    grid = np.linspace(lo - 3 * sigma, hi + 3 * sigma, n_grid)
    dens = (w[None, :] * np.exp(-0.5 * ((grid[:, None] - x[None, :]) / sigma) ** 2)).sum(1)
    dens /= sigma * math.sqrt(2 * math.pi)
    return [float(g) for g in grid], [float(v) for v in dens]
