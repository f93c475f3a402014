"""A tighter loss range for the smoothed model (beyond the paper; docs/bounds.md, "Tight range").

Thm 3.1 needs X_k - Y_k <= Delta.  For the smoothed model with X_k = -log p_s(x_k) and
Y_k = H(p_s(. | context)), the paper uses Delta = log(V/alpha) (Y_k >= 0).  Since H is concave,
its minimum over the smoothed simplex {(1-alpha) p + alpha/V} sits at a vertex, so
Y_k >= H_min and the exact supremum of X_k - Y_k is log(V/alpha) - H_min (attained: vertex at
y, observed token x != y).  With this Delta, A_k = (Y_k - X_k)/Delta may exceed 1; only A_k >= -1
is required.
"""

from __future__ import annotations

import math

from .smoothing import _alpha, _vocab, smoothed_worst_case_loss

__all__ = ["smoothed_min_entropy", "tight_loss_range"]


def _xlogx(x: float) -> float:
    return 0.0 if x == 0.0 else x * math.log(x)


def smoothed_min_entropy(alpha: float, vocab_size: int) -> float:
    """H_min = H((1-alpha) e_x + alpha/V): one mass 1 - alpha + alpha/V, V-1 masses alpha/V
    (min of the concave entropy over the smoothed simplex, at a vertex)."""
    a = _alpha(alpha)
    v = _vocab(vocab_size)
    small = a / v
    big = 1.0 - a + small
    return -_xlogx(big) - (v - 1) * small * math.log(small)


def tight_loss_range(alpha: float, vocab_size: int) -> float:
    """Delta_tight = log(V/alpha) - H_min = sup (X_k - Y_k) for the smoothed model with Y_k its entropy."""
    a = _alpha(alpha)
    v = _vocab(vocab_size)
    d = smoothed_worst_case_loss(a, v) - smoothed_min_entropy(a, v)
    if d <= 0.0:
        # alpha = 1: the smoothed model is uniform, X_k = Y_k = log V.
        raise ValueError(f"alpha = {alpha!r} leaves no loss range (the smoothed model is uniform)")
    return d
