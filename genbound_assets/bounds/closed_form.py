"""Closed-form empirical Freedman bound (Finzi et al. 2025, Theorem A.5, eq. 11), re-derived.

With probability >= 1 - delta,

    (1/n) sum_k (E[X_k | F_{k-1}] - X_k) <= Delta Cc + 2 sqrt(V Cc),    V = mean (X_k - Y_k)^2,

    Cc = (1 + eps) * (L + log K + log Z + log(b+2) + 2 log log2(b+2)) / n,   L = log(1/delta) + L(h),

union over the floating-point grid Q = {2^-b (1 + k/K) / Delta : k < K, b >= 1} with prior
P(k) P(b) = (1/K) / (Z (b+2) log2(b+2)^2), K = floor(16 L) >= 6, and b the smallest octave
whose continuous optimum lies at or above 2^-b (the exact b-range, instead of the paper's
log log n).  eps = 2/K from our derivation (default) or the paper's 16/K (eq. 17; larger, so also
valid).  Derivation and case analysis: docs/bounds.md, "Theorem A.5".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validate import non_negative, positive_int, probability
from .freedman import scaled_differences

__all__ = ["ClosedFormBound", "OCTAVE_PRIOR_Z", "freedman_closed_form_bound"]

# Upper bound on Z = sum_{b>=1} 1/((b+2) log2(b+2)^2): partial sum to 1e8 is 0.48755, integral tail
# (ln 2)^2/ln(1e8) = 0.02608; total <= 0.51364.  Any Z' >= Z keeps sum_b P(b) <= 1.
OCTAVE_PRIOR_Z = 0.514

_MAX_OCTAVE = 1100  # 2^-1100 underflows; u* > 0 always stops the search earlier


@dataclass(frozen=True)
class ClosedFormBound:
    """Theorem A.5: gap = Delta*complexity + 2 sqrt(variance*complexity) bounds mean(E[X|F] - X)."""

    gap: float
    complexity: float          # Cc = (1 + eps) * base_complexity
    variance: float            # V = mean (X - Y)^2
    base_complexity: float     # C_b = log(1/(delta P(h) P(k) P(b))) / n
    octave: int                # b used in the prior cost
    k_mantissa: int            # K of the grid Q
    inflation: float           # eps
    loss_range: float
    empirical_mean: float
    n_sample: int
    n_tokens: int
    delta: float
    complexity_nats: float
    grid_gap: float            # Delta C/t + V t/(1 - t Delta) at the grid point the proof picks (<= gap)

    @property
    def bound(self) -> float:
        return self.empirical_mean + self.gap


def _octave_cost(b: int) -> float:
    """log(1/P(b)) = log Z + log(b+2) + 2 log log2(b+2)."""
    return math.log(OCTAVE_PRIOR_Z) + math.log(b + 2) + 2.0 * math.log(math.log2(b + 2))


def _relaxed_gap(u: float, c: float, var: float, rng: float) -> float:
    """Lemma A.3 + A.2 at t = u/Delta: Delta C/u + (V/Delta) u/(1-u)."""
    return rng * c / u + var * u / (rng * (1.0 - u))


def freedman_closed_form_bound(losses, proxies, loss_range: float, delta: float,
                               complexity_nats: float = 0.0, n_tokens: int | None = None, *,
                               k_mantissa: int | None = None,
                               inflation: str = "derived") -> ClosedFormBound:
    """Theorem A.5 (eq. 11) with the complexity derived from eqs. (14)-(17) (see module docstring).

    losses X_k, proxies Y_k (F_{k-1}-measurable), loss_range Delta >= X_k - Y_k; complexity_nats:
    L(h) of Lemma 3.2 (App. A.2); n_tokens: n (default len(losses)); k_mantissa: K of Q (default
    floor(16 L)); inflation: "derived" (eps = 2/K) or "paper" (eps = 16/K).
    """
    x, a, rng = scaled_differences(losses, proxies, loss_range)
    d = probability("delta", delta)
    nats = non_negative("complexity_nats", complexity_nats)
    n = len(x) if n_tokens is None else positive_int("n_tokens", n_tokens)
    big_l = math.log(1.0 / d) + nats
    k = math.floor(16.0 * big_l) if k_mantissa is None else positive_int("k_mantissa", k_mantissa)
    if k < 6:
        name = "delta" if k_mantissa is None else "k_mantissa"
        raise ValueError(f"{name}: the grid needs K >= 6, got K = {k} (L = {big_l:.4g})")
    if inflation == "derived":
        eps = 2.0 / k
    elif inflation == "paper":
        eps = 16.0 / k
    else:
        raise ValueError(f"inflation must be 'derived' or 'paper', got {inflation!r}")
    var = float(np.mean((a * rng) ** 2))

    head = big_l + math.log(k)
    u_max = 1.0 - 1.0 / (2 * k)
    for b in range(1, _MAX_OCTAVE):
        c_b = (head + _octave_cost(b)) / n
        if var == 0.0:
            u_star = 1.0
            break
        w_star = rng * math.sqrt(c_b / var)
        u_star = w_star / (1.0 + w_star)
        if u_star >= 2.0 ** -b:
            break
    else:  # pragma: no cover - unreachable for finite inputs
        raise ValueError("losses/proxies: variance too large for the octave search")

    # The grid point the proof uses: the top of Q above it, else the point of u*'s octave just below u*.
    if u_star > u_max:
        b_pick, j = 1, k - 1
    else:
        b_pick = max(1, math.floor(-math.log2(u_star)) + 1)
        while b_pick > 1 and 2.0 ** (1 - b_pick) <= u_star:
            b_pick -= 1
        while 2.0 ** -b_pick > u_star:
            b_pick += 1
        j = min(k - 1, max(0, math.floor((u_star * 2.0 ** b_pick - 1.0) * k)))
        while j > 0 and 2.0 ** -b_pick * (1.0 + j / k) > u_star:
            j -= 1
    u_pick = 2.0 ** -b_pick * (1.0 + j / k)
    c_pick = (head + _octave_cost(b_pick)) / n

    complexity = (1.0 + eps) * c_b
    gap = rng * complexity + 2.0 * math.sqrt(var * complexity)
    return ClosedFormBound(
        gap=gap, complexity=complexity, variance=var, base_complexity=c_b, octave=b,
        k_mantissa=k, inflation=eps, loss_range=rng, empirical_mean=float(x.mean()),
        n_sample=len(x), n_tokens=n, delta=d, complexity_nats=nats,
        grid_gap=_relaxed_gap(u_pick, c_pick, var, rng),
    )
