import math

import numpy as np
import pytest

from genbound_assets.bounds.hessian_bits import (
    bits_for_quantization_gap,
    incoherence_mu2,
    quantization_gap_bound,
    trace_sqrt_from_spectrum,
)


@pytest.mark.parametrize("tr, n, q, delta", [
    (1e4, 70_000_000, 0.1, 0.01),
    (3.5e6, 12_000_000_000, 0.02, 1e-6),
    (10.0, 1000, 1.0, 0.5),
])
def test_plugging_b_back_gives_exactly_q(tr, n, q, delta):
    b = bits_for_quantization_gap(tr, n, q, delta)
    assert quantization_gap_bound(b, tr, n, delta) == pytest.approx(q, rel=1e-12)
    # b* suffices and is the least that does: more bits -> smaller gap, fewer -> larger
    assert quantization_gap_bound(b + 0.5, tr, n, delta) < q < quantization_gap_bound(b - 0.5, tr, n,
                                                                                         delta)


def test_matches_independent_solution_of_eq21():
    tr, n, q, delta = 2.0e5, 4 * 10**8, 0.05, 0.01
    mu2 = 2 * math.log(2 * n**2 / delta)
    assert incoherence_mu2(n, delta) == pytest.approx(mu2)
    # solve mu2 * sigma2 * tr^2 / n = q with sigma2 = 2^(-2b-2), by bisection
    lo, hi = -50.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if mu2 * 2 ** (-2 * mid - 2) * tr**2 / n > q:
            lo = mid
        else:
            hi = mid
    assert bits_for_quantization_gap(tr, n, q, delta) == pytest.approx(lo, abs=1e-9)


def test_sublinear_trace_means_fewer_bits_with_scale():
    """Tr(H^1/2) ~ N^0.4 (slower than sqrt N): b* decreases with N at fixed Q (App. B.2)."""
    bs = [bits_for_quantization_gap(n**0.4, n, 0.01, 0.01) for n in (10**7, 10**8, 10**9, 10**10)]
    assert all(a > b for a, b in zip(bs, bs[1:], strict=False))
    # with Tr ~ sqrt(N) only the log log term grows
    b1 = bits_for_quantization_gap(math.sqrt(1e7), 10**7, 0.01, 0.01)
    b2 = bits_for_quantization_gap(math.sqrt(1e10), 10**10, 0.01, 0.01)
    growth = 0.5 * math.log2(math.log(2e20 / 0.01) / math.log(2e14 / 0.01))
    assert b2 - b1 == pytest.approx(growth)


def test_trace_sqrt_from_spectrum():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(30, 30))
    h = a @ a.T
    lam = np.linalg.eigvalsh(h)
    w, vecs = np.linalg.eigh(h)
    sqrt_h = vecs @ np.diag(np.sqrt(np.clip(w, 0, None))) @ vecs.T
    assert trace_sqrt_from_spectrum(lam) == pytest.approx(np.trace(sqrt_h), rel=1e-8)
    # quadrature form: dim * sum w_j sqrt(theta_j)
    assert trace_sqrt_from_spectrum(lam, np.full(30, 1 / 30), dim=30) == pytest.approx(
        np.trace(sqrt_h), rel=1e-8)
    # negative eigenvalues: shifted by |lambda_min| (paper) -> an upper bound on the PSD part
    lam2 = np.array([-1.0, 0.0, 3.0])
    assert trace_sqrt_from_spectrum(lam2) == pytest.approx(0 + 1 + 2)
    with pytest.raises(ValueError, match="not PSD"):
        trace_sqrt_from_spectrum(lam2, shift_negative=False)
    with pytest.raises(ValueError, match="weights"):
        trace_sqrt_from_spectrum(lam2, [0.5, 0.5, 0.5], dim=3)
    with pytest.raises(ValueError, match="dim"):
        trace_sqrt_from_spectrum(lam2, dim=3)


@pytest.mark.parametrize("args, match", [
    ((0.0, 10, 0.1, 0.01), "trace_sqrt_h"),
    ((1.0, 0, 0.1, 0.01), "n_params"),
    ((1.0, 10, 0.0, 0.01), "target_gap"),
    ((1.0, 10, 0.1, 1.0), "delta"),
    ((np.nan, 10, 0.1, 0.01), "trace_sqrt_h"),
])
def test_validation(args, match):
    with pytest.raises(ValueError, match=match):
        bits_for_quantization_gap(*args)
