"""The bound's paired uniform pairs and calibration windows disjoint from them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from genbound_assets.data.sampler import calibration_windows, contexts, draw_uniforms, positions_for
from genbound_assets.data.stream import build_stream

SEP = 50


def make_stream(seed=0, n_docs=25, max_len=9):
    rng = np.random.default_rng(seed)
    return build_stream(
        [rng.integers(0, SEP, size=rng.integers(1, max_len + 1)) for _ in range(n_docs)], SEP
    )


def test_draw_uniforms_deterministic_by_seed():
    a, b, c = draw_uniforms(1000, 1), draw_uniforms(1000, 1), draw_uniforms(1000, 2)
    assert a.dtype == np.float64 and a.shape == (1000,)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all((a >= 0) & (a < 1))
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="m must"):
            draw_uniforms(bad, 1)
    with pytest.raises(ValueError, match="seed"):
        draw_uniforms(5, -1)


def test_positions_for_matches_definition_and_stays_in_prefix():
    s = make_stream()
    u = draw_uniforms(5000, 3)
    for n in (2, 10, 57, len(s) // 2, len(s)):
        if s.n_targets(n) == 0:
            continue
        pos = positions_for(u, s, n)
        tp = s.target_positions(n)
        assert np.array_equal(pos, tp[np.floor(u * len(tp)).astype(int)])
        assert np.all(pos < n) and not np.any(np.isin(pos, s.doc_starts))
        assert np.array_equal(positions_for(u, s, n), pos)  # deterministic
    assert np.array_equal(positions_for(u, s), positions_for(u, s, len(s)))
    with pytest.raises(ValueError, match="no targets"):
        positions_for(u, s, 1)  # tokens[:1] is just the opening separator
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        positions_for(np.array([0.5, 1.0]), s, len(s))
    with pytest.raises(ValueError, match="prefix_len"):
        positions_for(u, s, len(s) + 1)


def test_positions_are_uniform_over_each_prefix_targets():
    s = make_stream(seed=5)
    u = draw_uniforms(60_000, 11)
    for n in (len(s) // 3, len(s)):
        tp = s.target_positions(n)
        pos = positions_for(u, s, n)
        counts = np.bincount(np.searchsorted(tp, pos), minlength=len(tp))
        assert counts.sum() == len(u)
        chi2 = stats.chisquare(counts)
        assert chi2.pvalue > 1e-4, (n, chi2)
        # and the target index / D is U(0,1) (KS)
        ks = stats.kstest((np.searchsorted(tp, pos) + 0.5) / len(tp), "uniform")
        assert ks.statistic < 2.0 / len(tp) + 0.01


def test_chi_square_catches_a_biased_sampler():
    """The uniformity check above is able to fail: biasing towards document starts is caught."""
    s = make_stream(seed=5)
    tp = s.target_positions()
    u = draw_uniforms(60_000, 11)
    biased_u = np.where(u < 0.1, 0.0, u)  # 10% extra mass on the first target
    idx = np.searchsorted(tp, positions_for(biased_u, s))
    assert stats.chisquare(np.bincount(idx, minlength=len(tp))).pvalue < 1e-6


def test_pairs_are_shared_across_checkpoints():
    s = make_stream(seed=2, n_docs=200)
    u = draw_uniforms(2000, 0)
    p_small, p_big = positions_for(u, s, len(s) // 2), positions_for(u, s, len(s))
    # the same u_i maps to (about) the same relative place in each checkpoint's targets
    frac_small = np.searchsorted(s.target_positions(len(s) // 2), p_small) / s.n_targets(len(s) // 2)
    frac_big = np.searchsorted(s.target_positions(), p_big) / s.n_targets()
    assert np.max(np.abs(frac_small - frac_big)) < 0.01


def test_contexts_never_cross_documents():
    s = make_stream(seed=9)
    pos = positions_for(draw_uniforms(500, 4), s)
    for T in (1, 3, 100):
        for p, ctx in zip(pos, contexts(s, pos, T), strict=True):
            d = s.doc_start_of([p])[0]
            assert 1 <= len(ctx) <= T
            want = s.tokens[max(d, p - T): p]
            assert np.array_equal(ctx, want)
            assert np.all(ctx[1:] != SEP)
    with pytest.raises(ValueError, match="T"):
        contexts(s, pos, 0)
    with pytest.raises(ValueError, match="separator is not a target"):
        contexts(s, [s.doc_starts[1]], 4)


def test_calibration_windows_avoid_bound_positions():
    s = make_stream(seed=1, n_docs=400)
    n = len(s) - 37
    bound = positions_for(draw_uniforms(100, 7), s, n)
    W = 16
    starts = calibration_windows(s, n, 40, W, seed=3, exclude_positions=bound)
    assert len(starts) == 40 and len(np.unique(starts)) == 40
    assert np.all(starts >= 0) and np.all(starts + W <= n)
    for a in starts:
        assert not np.any((bound >= a) & (bound < a + W))
    assert np.array_equal(starts, calibration_windows(s, n, 40, W, seed=3, exclude_positions=bound))
    assert not np.array_equal(starts, calibration_windows(s, n, 40, W, 4, bound))
    # without exclusions some window would have hit a bound position (so the rule does work)
    free = calibration_windows(s, n, (n - W) // W + 1, W, 3, [])
    assert any(np.any((bound >= a) & (bound < a + W)) for a in free)
    with pytest.raises(ValueError, match="avoid"):
        calibration_windows(s, n, (n - W) // W + 1, W, 3, bound)
    with pytest.raises(ValueError, match="window_len"):
        calibration_windows(s, 10, 1, 11, 0, [])
