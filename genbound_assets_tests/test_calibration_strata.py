"""Calibration windows fixed first, bound pairs uniform over the rest, exact stratum added back.

This is the valid way to keep the bound's sample disjoint from the quantizer's calibration data
without making the quantized model depend on the sample (docs/data.md).
"""

import numpy as np
import pytest

from genbound_assets.bounds.freedman import v
from genbound_assets.bounds.subsample import subsampled_freedman_bound
from genbound_assets.data.sampler import calibration_windows, excluded_targets, positions_for
from genbound_assets.data.stream import build_stream


def _stream(seed=0, n_docs=40):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(1, 50, size=int(rng.integers(5, 120))) for _ in range(n_docs)]
    return build_stream(docs, separator_id=0)


def test_positions_for_excluding_windows_matches_brute_force():
    stream = _stream()
    prefix = len(stream) - 7
    w = 16
    windows = calibration_windows(stream, prefix, n_windows=12, window_len=w, seed=3)
    targets = stream.target_positions(prefix)
    inside = np.zeros(len(stream), dtype=bool)
    for s in windows:
        inside[s:s + w] = True
    kept = targets[~inside[targets]]
    u = np.random.default_rng(1).random(5000)
    got = positions_for(u, stream, prefix, exclude_windows=windows, window_len=w)
    np.testing.assert_array_equal(got, kept[np.floor(u * len(kept)).astype(int)])
    assert not inside[got].any()
    np.testing.assert_array_equal(np.sort(excluded_targets(stream, windows, w)), targets[inside[targets]])


def test_positions_for_rejects_overlapping_windows():
    stream = _stream()
    with pytest.raises(ValueError, match="non-overlapping"):
        positions_for(np.array([0.5]), stream, len(stream), exclude_windows=[0, 4], window_len=8)
    with pytest.raises(ValueError, match="window_len"):
        positions_for(np.array([0.5]), stream, len(stream), exclude_windows=[0])


def _z_mean(x, y, s, rng_):
    return float((x + rng_ / s * v(s * (y - x) / rng_)).mean())


def test_stratified_certificate_covers_full_data_mean():
    """The exact stratum (fit by the quantizer: much lower loss) enters with weight n_exact/D.

    Ignoring it (certifying only the sampled stratum's mean) over-states the mean here, while
    mis-weighting it as if sampled would under-cover; the check is on the full-data Z mean.
    """
    rng = np.random.default_rng(0)
    d, n_exact, m, delta = 20_000, 4_000, 400, 0.2
    hi = np.log(200.0)
    x_full = np.clip(rng.gamma(2.0, 0.8, size=d), 0, hi)
    x_full[:n_exact] *= 0.1                      # calibration tokens: fit by the quantizer
    y_full = np.clip(x_full + rng.normal(0, 0.3, size=d), 0, hi)
    rest = np.arange(n_exact, d)
    misses, trials = 0, 300
    for t in range(trials):
        idx = rest[rng.integers(0, len(rest), size=m)]
        b = subsampled_freedman_bound(
            x_full[idx], y_full[idx], loss_range=hi, delta=delta, n_tokens=d, loss_bounds=(0.0, hi),
            exact_losses=x_full[:n_exact], exact_proxies=y_full[:n_exact], split_seed=t)
        assert b.n_exact == n_exact
        truth = _z_mean(x_full, y_full, b.s_hat, hi)
        certified_mean = b.bound - b.complexity_term
        misses += certified_mean < truth
    # delta_subsample = 0.9 * delta; allow generous binomial slack at 300 trials
    assert misses / trials <= 0.9 * delta


def test_exact_stratum_validation():
    x = np.full(10, 0.5)
    with pytest.raises(ValueError, match="given together"):
        subsampled_freedman_bound(x, x, 2.0, 0.1, 100, (0.0, 2.0), exact_losses=x)
    with pytest.raises(ValueError, match="smaller than n_tokens"):
        subsampled_freedman_bound(x, x, 2.0, 0.1, 5, (0.0, 2.0), exact_losses=x, exact_proxies=x)


def test_azuma_exact_stratum_weights_strata_by_size():
    from genbound_assets.bounds.azuma import azuma_bound
    from genbound_assets.bounds.smoothing import smoothed_losses

    rng = np.random.default_rng(2)
    p_sample, p_exact = rng.uniform(0.01, 0.5, 300), rng.uniform(0.5, 0.99, 100)
    plain = azuma_bound(p_sample, 64, 1000, 0.1, alpha_grid=(0.05,))
    strat = azuma_bound(p_sample, 64, 1000, 0.1, alpha_grid=(0.05,), exact_probs_of_target=p_exact)
    expected_mean = 0.1 * smoothed_losses(p_exact, 0.05, 64).mean() + 0.9 * plain.smoothed_mean
    assert strat.smoothed_mean == pytest.approx(expected_mean, rel=1e-12)
    assert strat.subsample_correction == pytest.approx(0.9 * plain.subsample_correction, rel=1e-12)
    assert strat.azuma_term == pytest.approx(plain.azuma_term, rel=1e-12)
