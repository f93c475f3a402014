"""Prediction smoothing (Finzi et al. 2025, Lemma 3.3 / Theorem A.6, eqs. 3, 19, 20).

The smoothed model is p_s = (1 - alpha) p + alpha / V.  Its loss is at most log(V/alpha), and
token by token -log p_s(x) <= -log p(x) - log(1 - alpha + alpha/V), so

    R_s_hat + C log(V/alpha) <= R_h_hat + [-log(1 - alpha + alpha/V) + C log(V/alpha)]      (eq. 20)
                             <= R_h_hat + C log V + sqrt(2C)      at alpha = VC/((V-1)(1+C)).

V is the dimension the softmax is taken over (the logit dimension, e.g. 50304 for Pythia), not
the tokenizer's nominal vocabulary.  Derivation: docs/bounds.md.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import finite_array, finite_scalar, positive

__all__ = [
    "smoothing_alpha",
    "smoothed_losses",
    "smoothed_entropies",
    "smoothed_worst_case_loss",
    "smoothing_excess",
    "smoothing_cost_bound",
]


def _vocab(vocab_size) -> int:
    if isinstance(vocab_size, bool):
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    try:
        v = int(vocab_size)
        ok = v == vocab_size and v >= 2
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    return v


def _alpha(alpha) -> float:
    a = finite_scalar("alpha", alpha)
    if not 0.0 < a <= 1.0:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha!r}")
    return a


def _complexity(complexity, vocab_size: int) -> float:
    c = positive("complexity", complexity)
    if c >= vocab_size - 1:
        # alpha* >= 1: no proper mixture; the bound is vacuous anyway (C log V > log V).
        raise ValueError(
            f"complexity must be < vocab_size - 1 = {vocab_size - 1} for a smoothing "
            f"weight in (0, 1), got {complexity!r}"
        )
    return c


def smoothing_alpha(complexity: float, vocab_size: int) -> float:
    """alpha* = V C / ((V - 1)(1 + C)): the minimiser of eq. (20) over alpha (App. A.3)."""
    v = _vocab(vocab_size)
    c = _complexity(complexity, v)
    return v * c / ((v - 1) * (1.0 + c))


def smoothed_losses(probs_of_target, alpha: float, vocab_size: int) -> np.ndarray:
    """-log((1 - alpha) p + alpha/V) per token (Lemma 3.3's p_s), from p = model prob. of the observed token."""
    p = finite_array("probs_of_target", probs_of_target)
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probs_of_target must lie in [0, 1]")
    a = _alpha(alpha)
    v = _vocab(vocab_size)
    return -np.log((1.0 - a) * p + a / v)


def smoothed_entropies(probs, alpha: float) -> np.ndarray:
    """H((1 - alpha) p + alpha/V) per row of a (tokens, V) probability matrix (the proxy Y_k of Thm 3.1
    for the smoothed model, computed in float64).  V is the number of columns."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 2:
        raise ValueError(f"probs must be a non-empty (tokens, V >= 2) matrix, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or p.min() < 0.0:
        raise ValueError("probs must be finite and non-negative")
    if np.abs(p.sum(axis=1) - 1.0).max() > 1e-6:
        raise ValueError("probs rows must sum to 1")
    a = _alpha(alpha)
    ps = (1.0 - a) * p + a / p.shape[1]
    return -(ps * np.log(ps)).sum(axis=1)


def smoothed_worst_case_loss(alpha: float, vocab_size: int) -> float:
    """Delta_s = log(V/alpha): the worst-case loss of the smoothed model (Lemma 3.3)."""
    a = _alpha(alpha)
    v = _vocab(vocab_size)
    return math.log(v) - math.log(a)


def smoothing_excess(complexity: float, vocab_size: int, alpha: float | None = None) -> float:
    """-log(1 - alpha + alpha/V) + C log(V/alpha) - C log V: the exact excess in eq. (20) over the
    random-guess term C log V (alpha defaults to alpha*).  Theorem A.6: <= sqrt(2C) at alpha*."""
    v = _vocab(vocab_size)
    c = _complexity(complexity, v)
    a = smoothing_alpha(c, v) if alpha is None else _alpha(alpha)
    return -math.log1p(-a * (1.0 - 1.0 / v)) - c * math.log(a)


def smoothing_cost_bound(complexity: float, vocab_size: int) -> float:
    """sqrt(2C): Lemma 3.3's (eq. 3) bound on smoothing_excess at alpha*.

    Proof (docs/bounds.md): at alpha*, excess = log(1+C) + C log((V-1)(1+C)/(VC))
    <= (1+C) log(1+C) - C log C <= sqrt(2C), using log(1+u) <= u/sqrt(1+u).
    """
    v = _vocab(vocab_size)
    c = _complexity(complexity, v)
    return math.sqrt(2.0 * c)
