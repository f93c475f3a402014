"""Compute-optimal checkpoint selection (Sec. 2.2, Sec. 4).

Chinchilla with a = b = 1/2 gives N*/D* = G^2 ~ 1/20 (Besiroglu et al.; paper_figures.json), so
the compute-optimal checkpoint of an N-parameter run has seen D* = N / G^2 tokens.  A checkpoint
within a relative tolerance of D* is used as is (a real model: certified row).  Otherwise the
paper (Pythia-70m/160m) interpolates the row's quantities linearly in N/D between the two
checkpoints bracketing D*; such a row certifies no actual model (certified=False).  Choosing the
checkpoint from tokens_seen alone uses no data, so it costs nothing in the bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ._validate import (
    finite_array,
    finite_scalar,
    non_negative,
    positive,
    positive_int,
    probability,
)
from .smoothing import smoothing_alpha

DEFAULT_G2 = 0.05  # G^2 = N/D on the compute-optimal frontier (Sec. 2.2)


@dataclass(frozen=True)
class ComputeOptimalSelection:
    """Either one checkpoint within tolerance of D* (certified) or a bracketing pair with weights.

    Indices refer to the tokens_seen list given.  Weights are for linear interpolation in N/D:
    value(D*) = weight_lo * value(lo) + weight_hi * value(hi).
    """

    n_params: int
    target_ratio: float
    target_tokens: float
    certified: bool
    index: int | None = None
    tokens: float | None = None
    relative_error: float | None = None
    lo_index: int | None = None
    hi_index: int | None = None
    lo_tokens: float | None = None
    hi_tokens: float | None = None
    weight_lo: float | None = None
    weight_hi: float | None = None
    note: str = ""


def _ratio(n_params, target_ratio) -> tuple[int, float]:
    n = positive_int("n_params", n_params)
    g2 = positive("target_ratio", target_ratio)
    return n, g2


def select_compute_optimal(n_params: int, tokens_seen, tolerance: float = 0.05,
                           target_ratio: float = DEFAULT_G2) -> ComputeOptimalSelection:
    """Pick the checkpoint at D* = N / G^2 (Sec. 2.2), or the bracketing pair (Sec. 4).

    tokens_seen: D_t of each checkpoint (any order, distinct, >= 0; D = 0 has N/D = inf and is
    never used for interpolation).  tolerance: largest accepted |D_t - D*| / D*.
    """
    n, g2 = _ratio(n_params, target_ratio)
    d = finite_array("tokens_seen", tokens_seen)
    if (d < 0).any():
        raise ValueError("tokens_seen must be >= 0")
    if len(np.unique(d)) != len(d):
        raise ValueError("tokens_seen has duplicate values")
    tol = non_negative("tolerance", tolerance)
    target = n / g2
    rel = np.abs(d - target) / target
    i = int(np.argmin(rel))
    if rel[i] <= tol:
        return ComputeOptimalSelection(
            n, g2, target, True, index=i, tokens=float(d[i]), relative_error=float(rel[i]),
            note=f"checkpoint within {tol:.3g} of D* = N/G^2")
    below = np.flatnonzero((d < target) & (d > 0))
    above = np.flatnonzero(d > target)
    if len(below) == 0 or len(above) == 0:
        raise ValueError(f"no checkpoint within tolerance and D* = {target:.6g} is not bracketed "
                         "by checkpoints with D > 0; refusing to extrapolate")
    lo = int(below[np.argmax(d[below])])
    hi = int(above[np.argmin(d[above])])
    r_lo, r_hi = n / d[lo], n / d[hi]          # r_lo > g2 > r_hi
    w_hi = float((r_lo - g2) / (r_lo - r_hi))
    return ComputeOptimalSelection(
        n, g2, target, False, lo_index=lo, hi_index=hi, lo_tokens=float(d[lo]),
        hi_tokens=float(d[hi]), weight_lo=1.0 - w_hi, weight_hi=w_hi,
        note="no checkpoint within tolerance: interpolate linearly in N/D (not certified)")


@dataclass(frozen=True)
class InterpolatedRow:
    """A row interpolated linearly in N/D to G^2, with C and alpha recomputed at D* (Sec. 4).

    Certifies no actual model (certified=False).  values["<tokens_key>"] is the linearly
    interpolated D, reported for transparency; C and alpha use target_tokens = N/G^2.
    """

    values: dict[str, float]
    n_params: int
    target_ratio: float
    target_tokens: float
    weight_hi: float
    complexity: float
    alpha: float
    complexity_nats: float
    delta: float
    grid_size: int
    vocab_size: int
    certified: bool = False
    note: str = field(default="interpolated in N/D between two checkpoints; certifies no model")


def interpolate_row(row_lo: Mapping[str, float], row_hi: Mapping[str, float], n_params: int,
                    target_ratio: float = DEFAULT_G2, *, complexity_nats: float, delta: float,
                    vocab_size: int, grid_size: int = 1000, tokens_key: str = "tokens"
                    ) -> InterpolatedRow:
    """Interpolate every quantity of two checkpoint rows linearly in N/D to N/D = G^2 (Sec. 4).

    row_lo/row_hi: mappings name -> value (R_h_hat, R_q_hat, Sigma, ...) for the two bracketing
    checkpoints of one N-parameter run, each with its D under tokens_key.  C is recomputed at
    D* = N/G^2 as (L(h) + log(|K|/delta))/D* with L(h) = complexity_nats, and
    alpha = V C / ((V-1)(1+C)) (Lemma 3.3).
    """
    n, g2 = _ratio(n_params, target_ratio)
    if set(row_lo) != set(row_hi):
        raise ValueError(f"row_lo and row_hi have different keys: "
                         f"{sorted(set(row_lo) ^ set(row_hi))}")
    if tokens_key not in row_lo:
        raise ValueError(f"rows must contain {tokens_key!r} (tokens seen, D)")
    lo = {k: finite_scalar(f"row_lo[{k!r}]", x) for k, x in row_lo.items()}
    hi = {k: finite_scalar(f"row_hi[{k!r}]", x) for k, x in row_hi.items()}
    d_lo = positive(f"row_lo[{tokens_key!r}]", lo[tokens_key])
    d_hi = positive(f"row_hi[{tokens_key!r}]", hi[tokens_key])
    r_lo, r_hi = n / d_lo, n / d_hi
    if r_lo == r_hi:
        raise ValueError("row_lo and row_hi have the same tokens seen")
    w = (g2 - r_lo) / (r_hi - r_lo)
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"target_ratio = {g2!r} is not between the rows' N/D = {r_lo!r}, "
                         f"{r_hi!r}; refusing to extrapolate")
    values = {k: (1.0 - w) * lo[k] + w * hi[k] for k in lo}
    l_h = non_negative("complexity_nats", complexity_nats)
    delta = probability("delta", delta)
    grid_size = positive_int("grid_size", grid_size)
    target = n / g2
    # C = (L(h) + log(|K|/delta)) / D* (Lemma 3.2) at the real-valued D*
    c = (l_h + math.log(grid_size / delta)) / target
    alpha = smoothing_alpha(c, vocab_size)
    return InterpolatedRow(values=values, n_params=n, target_ratio=g2, target_tokens=target,
                           weight_hi=float(w), complexity=c, alpha=alpha, complexity_nats=l_h,
                           delta=delta, grid_size=grid_size, vocab_size=int(vocab_size))
