"""Bits per parameter that suffice for a target quantization gap, from the Hessian (App. B.1-B.3).

Eq. (21) (scalar LDLQ after a random rotation, Tseng et al. / Chee et al. Thm 4.1, block size 1):

    L(w_hat) - L(w) <= mu^2 sigma^2 Tr(H^1/2)^2 / N,
    mu^2 = 2 log(2 N^2 / delta)   (Gaussian-rotation incoherence, prob. >= 1 - delta),
    sigma^2 = 2^(-2b-2)            (uniform b-bit grid on [0, 1], App. B.2's illustration).

Setting the right-hand side equal to the target gap Q and solving for b:

    2^(-2b-2) = Q N / (2 log(2N^2/delta) Tr(H^1/2)^2)
    b* = log2(Tr(H^1/2) / sqrt(N Q)) + (1/2) log2 log(2 N^2 / delta) - 1/2.

The gap bound decreases in b, so every b >= b* achieves gap <= Q: b* is the number of bits that
*suffices* (App. B writes "b <=" for it).  Illustrative only: it assumes PSD H, the x in [0, 1]
range and an impractical full-size LDLQ; it certifies nothing about a real quantized model.
"""

from __future__ import annotations

import math

import numpy as np

from ._validate import finite_array, finite_scalar, positive, positive_int, probability


def incoherence_mu2(n_params: int, delta: float) -> float:
    """mu^2 = 2 log(2 N^2 / delta): Gaussian-rotation incoherence (App. B.1)."""
    n = positive_int("n_params", n_params)
    delta = probability("delta", delta)
    return 2.0 * (math.log(2.0) + 2.0 * math.log(n) - math.log(delta))


def quantization_gap_bound(bits: float, trace_sqrt_h: float, n_params: int, delta: float) -> float:
    """Q(b) = 2 log(2N^2/delta) 2^(-2b-2) Tr(H^1/2)^2 / N: the right-hand side of eq. (21)."""
    b = finite_scalar("bits", bits)
    tr = positive("trace_sqrt_h", trace_sqrt_h)
    n = positive_int("n_params", n_params)
    return incoherence_mu2(n, delta) * 2.0 ** (-2.0 * b - 2.0) * tr * tr / n


def bits_for_quantization_gap(trace_sqrt_h: float, n_params: int, target_gap: float,
                              delta: float) -> float:
    """b* = log2(Tr(H^1/2)/sqrt(N Q)) + (1/2) log2 log(2N^2/delta) - 1/2  (App. B.2).

    The smallest b for which eq. (21) guarantees a quantization gap <= target_gap = Q; any
    b >= b* suffices.  May be below 1 (or negative) for a small Tr(H^1/2): the formula is then
    outside the regime where sigma^2 = 2^(-2b-2) describes a real quantizer.
    """
    tr = positive("trace_sqrt_h", trace_sqrt_h)
    n = positive_int("n_params", n_params)
    q = positive("target_gap", target_gap)
    delta = probability("delta", delta)
    log_term = math.log(2.0) + 2.0 * math.log(n) - math.log(delta)  # log(2N^2/delta)
    return (math.log2(tr) - 0.5 * (math.log2(n) + math.log2(q))
            + 0.5 * math.log2(log_term) - 0.5)


def trace_sqrt_from_spectrum(eigenvalues, weights=None, dim: int | None = None,
                             shift_negative: bool = True) -> float:
    """Tr(H^1/2) = sum_i sqrt(lambda_i) (App. B.3), from eigenvalues or an SLQ quadrature.

    eigenvalues only: the full spectrum.  With weights (quadrature weights summing to 1, e.g. the
    averaged stochastic Lanczos nodes/weights) and dim = N: N * sum_j w_j sqrt(theta_j).
    Negative eigenvalues: like the paper, shift the whole spectrum by |lambda_min| (a PSD upper
    bound), or raise if shift_negative=False.
    """
    lam = finite_array("eigenvalues", eigenvalues)
    shift = 0.0
    if lam.min() < 0:
        if not shift_negative:
            raise ValueError(f"eigenvalues has negative values (min {lam.min():.6g}); "
                             "H is not PSD")
        shift = -float(lam.min())
    roots = np.sqrt(lam + shift)
    if weights is None:
        if dim is not None:
            raise ValueError("dim is only used together with weights")
        return float(roots.sum())
    w = finite_array("weights", weights)
    if len(w) != len(lam):
        raise ValueError(f"mismatched lengths: eigenvalues={len(lam)}, weights={len(w)}")
    if (w < 0).any() or not math.isclose(float(w.sum()), 1.0, rel_tol=1e-6):
        raise ValueError("weights must be non-negative and sum to 1")
    n = positive_int("dim", dim)
    return float(n * np.dot(w, roots))
