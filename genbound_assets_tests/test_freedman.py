"""Theorem 3.1 / Lemmas A.1-A.3 / Theorem A.5: identities, search, coverage, validation."""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import beta, binomtest

from genbound_assets.bounds.closed_form import OCTAVE_PRIOR_Z, freedman_closed_form_bound
from genbound_assets.bounds.freedman import (
    freedman_bound,
    freedman_complexity,
    freedman_grid,
    gap_at,
    v,
)

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _v_decimal(x: float) -> float:
    getcontext().prec = 60
    d = Decimal(x)
    return float(d - (1 + d).ln())


# ---------------------------------------------------------------- v and Lemmas A.1 / A.2

def test_v_matches_high_precision_across_scales():
    xs = [-0.999, -0.5, -1e-2, -1e-3, -9.99e-4, -1e-6, -1e-12, 0.0, 1e-12, 1e-6, 9.99e-4,
          1e-3, 1e-2, 0.5, 3.0, 1e6]
    got = v(np.array(xs))
    for x, g in zip(xs, got, strict=True):
        want = _v_decimal(x)
        assert g == pytest.approx(want, rel=1e-13, abs=1e-300), x


def test_lemma_a1_identity_on_discrete_z():
    # Z in {-0.4, 0.1, 0.9} with E[Z] = 0; Z - mu > -1 for every mu below.
    z = np.array([-0.4, 0.1, 0.9])
    p_last = 0.2
    p_mid = (0.4 - 1.3 * p_last) / 0.5   # solves E[Z] = 0 with p_first = 1 - p_mid - p_last
    p = np.array([1 - p_mid - p_last, p_mid, p_last])
    assert abs(p @ z) < 1e-15 and p.min() > 0
    for mu in (-2.0, -0.3, 0.0, 0.25, 0.55):
        assert (z - mu).min() > -1
        lhs = float(p @ np.exp(z - v(z - mu)))
        assert lhs == pytest.approx((1 - mu) * math.exp(mu), rel=1e-12)
        assert lhs <= 1 + 1e-12


def test_lemma_a2_v_below_quadratic_ratio():
    a = np.concatenate([np.linspace(-0.999, 5, 5001), np.logspace(-8, 6, 200)])
    assert np.all(v(a) <= a * a / (1 + a) * (1 + 1e-12) + 1e-300)


# ---------------------------------------------------------------- Theorem 3.1 bookkeeping

def _random_sample(rng, n, loss_range):
    x = rng.uniform(0, loss_range, n)
    y = np.maximum(rng.gamma(2.0, 0.8, n), x - loss_range)
    return x, y


def test_gap_equals_paper_decomposition_and_lemma_a3_form():
    rng = np.random.default_rng(3)
    x, y = _random_sample(rng, 500, 6.0)
    fb = freedman_bound(x, y, 6.0, 0.05, complexity_nats=3.0, grid_size=200, n_tokens=2000)
    c = (3.0 + math.log(200 / 0.05)) / 2000
    assert fb.complexity == pytest.approx(c, rel=1e-14)
    assert fb.gap == pytest.approx(6.0 * c + fb.sigma * math.sqrt(c), rel=1e-12)
    s = fb.s_star
    a = (y - x) / 6.0
    direct = (6.0 / s) * (c + float(np.mean(a * s - np.log1p(a * s))))
    assert fb.gap == pytest.approx(direct, rel=1e-9)
    assert fb.bound == pytest.approx(x.mean() + fb.gap, rel=1e-14)


def _brute_gap(x, y, loss_range, c, grid_size):
    """Independent brute force: min over K = {i/(G+1)} of (Delta/s)(C + mean(sA - log(1+sA)))."""
    a = (np.asarray(y) - np.asarray(x)) / loss_range
    best = math.inf
    for i in range(1, grid_size + 1):
        s = i / (grid_size + 1)
        sa = s * a
        val = loss_range / s * (c + float(np.mean(sa - np.log1p(sa))))
        best = min(best, val)
    return best


@SETTINGS
@given(
    n=st.integers(1, 60),
    loss_range=st.floats(0.1, 20),
    spread=st.floats(0.0, 30.0),
    grid_size=st.sampled_from([1, 2, 7, 65, 300, 1000]),
    delta=st.floats(1e-6, 0.9),
    nats=st.floats(0.0, 50.0),
    scale=st.integers(1, 10**6),
    seed=st.integers(0, 2**31),
)
def test_fast_search_equals_brute_force(n, loss_range, spread, grid_size, delta, nats, scale, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, loss_range, n)
    y = np.maximum(rng.uniform(0, spread, n), x - loss_range)
    fb = freedman_bound(x, y, loss_range, delta, nats, grid_size, n * scale)
    c = (nats + math.log(grid_size / delta)) / (n * scale)
    brute = _brute_gap(x, y, loss_range, c, grid_size)
    assert fb.gap == pytest.approx(brute, rel=1e-9, abs=1e-15)
    # the reported s* realises the reported gap
    assert fb.gap == pytest.approx(gap_at(fb.s_star, (y - x) / loss_range, c, loss_range), rel=1e-12)


@SETTINGS
@given(seed=st.integers(0, 2**31), n=st.integers(2, 200))
def test_sigma_below_lemma_a2_relaxation(seed, n):
    # Sigma sqrt(C) <= Delta C (1-s)/s + Delta s W/(1-s) at every grid s (W = mean A^2); the
    # paper's Sigma <= 2 sqrt(mean (X-Y)^2) is the continuous minimum of the right side.
    rng = np.random.default_rng(seed)
    x, y = _random_sample(rng, n, 4.0)
    fb = freedman_bound(x, y, 4.0, 0.01, grid_size=1000)
    s = freedman_grid(1000)
    w = float(np.mean(((y - x) / 4.0) ** 2))
    c = fb.complexity
    relaxed = 4.0 * c * (1 - s) / s + 4.0 * s * w / (1 - s)
    assert fb.sigma * math.sqrt(c) <= relaxed.min() * (1 + 1e-12)


@SETTINGS
@given(seed=st.integers(0, 2**31), d1=st.floats(1e-4, 0.5), d2=st.floats(1e-4, 0.5))
def test_bound_monotone_in_delta_and_above_empirical_mean(seed, d1, d2):
    rng = np.random.default_rng(seed)
    x, y = _random_sample(rng, 50, 5.0)
    lo, hi = sorted((d1, d2))
    b_lo = freedman_bound(x, y, 5.0, lo)
    b_hi = freedman_bound(x, y, 5.0, hi)
    assert b_lo.bound >= b_hi.bound - 1e-12
    assert b_hi.bound > x.mean()


def test_grid_override_counts_its_size():
    rng = np.random.default_rng(0)
    x, y = _random_sample(rng, 300, 5.0)
    grid = np.array([0.05, 0.2, 0.45])
    fb = freedman_bound(x, y, 5.0, 0.1, grid=grid)
    assert fb.grid_size == 3
    assert fb.complexity == pytest.approx(math.log(3 / 0.1) / 300)
    assert fb.s_star in grid
    # identical t = s/Delta grids give identical bounds whatever Delta is
    wide = freedman_bound(x, y, 10.0, 0.1, grid=grid * 2.0)
    assert wide.gap == pytest.approx(fb.gap, rel=1e-12)
    assert wide.s_star == pytest.approx(2 * fb.s_star)


# ---------------------------------------------------------------- Monte-Carlo coverage

def _martingale_trials(rng, trials, n, classes=20, bank=4096, beta_mix=0.05, noise=0.3):
    """Per step a (p_k, q_k) pair drawn from a fixed random bank (independent of the past):
    token ~ p_k, X_k = -log q_k(token), Y_k = H(q_k), E[X_k | F_{k-1}] = sum_x p_k(x)(-log q_k(x))."""
    p = rng.dirichlet(np.full(classes, 0.5), size=bank)
    q = p * np.exp(noise * rng.standard_normal((bank, classes)))
    q = (1 - beta_mix) * q / q.sum(1, keepdims=True) + beta_mix / classes
    nlq = -np.log(q)
    cond_mean = (p * nlq).sum(1)
    entropy = (q * nlq).sum(1)
    cdf = np.cumsum(p, 1)
    cdf[:, -1] = 1.0
    idx = rng.integers(0, bank, (trials, n))
    tok = (rng.random((trials, n))[..., None] > cdf[idx]).sum(-1)
    x = nlq[idx, tok]
    y = entropy[idx]
    gap_true = (cond_mean[idx] - x).mean(1)
    return x, y, gap_true, math.log(classes / beta_mix)  # X <= log(m/beta), Y >= 0


def _cp_lower(k, n, level):
    return 0.0 if k == 0 else float(beta.ppf(level, k, n - k + 1))


def test_monte_carlo_coverage_and_negative_control():
    rng = np.random.default_rng(20250417)
    trials, n, delta, grid_size = 1000, 2000, 0.1, 20
    x, y, true_gap, loss_range = _martingale_trials(rng, trials, n)
    assert (x - y).max() <= loss_range
    viol = viol_ctrl = viol_cf = 0
    for i in range(trials):
        fb = freedman_bound(x[i], y[i], loss_range, delta, grid_size=grid_size)
        # negative control: the same bound with C divided by 20 (n_tokens = 20 n)
        ctrl = freedman_bound(x[i], y[i], loss_range, delta, grid_size=grid_size, n_tokens=20 * n)
        cf = freedman_closed_form_bound(x[i], y[i], loss_range, delta)
        assert ctrl.complexity == pytest.approx(fb.complexity / 20)
        viol += true_gap[i] > fb.gap
        viol_ctrl += true_gap[i] > ctrl.gap
        viol_cf += true_gap[i] > cf.gap
    level = 1e-3
    # H0: violation rate <= delta is not rejected at level 1e-3 (one-sided Clopper-Pearson).
    assert binomtest(viol, trials, delta, alternative="greater").pvalue >= level
    assert binomtest(viol_cf, trials, delta, alternative="greater").pvalue >= level
    # The control must be violated far more often than delta: its CP lower bound exceeds 1.5 delta.
    assert _cp_lower(viol_ctrl, trials, level) > 1.5 * delta, viol_ctrl


# ---------------------------------------------------------------- Theorem A.5 (closed form)

def test_octave_prior_normaliser_is_an_upper_bound():
    m = np.arange(3, 10**6 + 1, dtype=np.float64)
    partial = float(np.sum(1.0 / (m * np.log2(m) ** 2)))
    tail = math.log(2) ** 2 / math.log(10**6)  # integral of the decreasing summand beyond 1e6
    assert partial + tail <= OCTAVE_PRIOR_Z
    assert partial >= 0.47  # the constant is not absurdly loose


def _closed_form_prior_cost(b, k, log_inv_delta):
    """log(1/(delta P(k) P(b))) with P(b) = 1/(Z (b+2) log2(b+2)^2)."""
    return log_inv_delta + math.log(k) + math.log(OCTAVE_PRIOR_Z) + math.log(b + 2) \
        + 2 * math.log(math.log2(b + 2))


@SETTINGS
@given(
    n=st.integers(1, 200),
    loss_range=st.floats(0.1, 20),
    spread=st.floats(0.0, 60.0),
    delta=st.floats(1e-8, 0.6),
    nats=st.floats(0.0, 30.0),
    scale=st.integers(1, 10**5),
    k=st.one_of(st.none(), st.integers(6, 40)),
    seed=st.integers(0, 2**31),
)
def test_closed_form_is_implied_by_some_grid_point(n, loss_range, spread, delta, nats, scale, k,
                                                  seed):
    # Independent check of the derivation: some t in Q (octave <= the reported one) already gives
    # Lemma A.3 + A.2's bound C_t/t + t V/(1 - t Delta) <= Delta Cc + 2 sqrt(V Cc).
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, loss_range, n)
    y = np.maximum(rng.uniform(0, spread, n), x - loss_range)
    if rng.random() < 0.1:
        y = x.copy()
    cf = freedman_closed_form_bound(x, y, loss_range, delta, nats, n * scale, k_mantissa=k)
    kk = cf.k_mantissa
    assert kk == (math.floor(16 * (math.log(1 / delta) + nats)) if k is None else k)
    var = float(np.mean((x - y) ** 2))
    assert cf.variance == pytest.approx(var, rel=1e-12, abs=1e-300)
    best = math.inf
    for b in range(1, cf.octave + 1):
        c_b = (_closed_form_prior_cost(b, kk, math.log(1 / delta)) + nats) / (n * scale)
        u = 2.0 ** -b * (1 + np.arange(kk) / kk)  # u = t Delta
        g = loss_range * c_b / u + var * u / (loss_range * (1 - u))
        best = min(best, float(g.min()))
    assert best <= cf.gap * (1 + 1e-12)
    assert cf.grid_gap <= cf.gap * (1 + 1e-12)
    # the paper's 16/K inflation is looser but also valid
    paper = freedman_closed_form_bound(x, y, loss_range, delta, nats, n * scale, k_mantissa=k,
                                       inflation="paper")
    assert paper.gap >= cf.gap


def test_closed_form_needs_k_at_least_6():
    with pytest.raises(ValueError, match="delta"):
        freedman_closed_form_bound([1.0], [1.0], 1.0, 0.7)
    with pytest.raises(ValueError, match="k_mantissa"):
        freedman_closed_form_bound([1.0], [1.0], 1.0, 0.1, k_mantissa=5)
    with pytest.raises(ValueError, match="inflation"):
        freedman_closed_form_bound([1.0], [1.0], 1.0, 0.1, inflation="loose")


# ---------------------------------------------------------------- validation

GOOD = dict(losses=[1.0, 2.0], proxies=[1.5, 1.0], loss_range=3.0, delta=0.1)


@pytest.mark.parametrize("fn", [freedman_bound, freedman_closed_form_bound])
@pytest.mark.parametrize(
    "override, name",
    [
        (dict(losses=[1.0, float("nan")]), "losses"),
        (dict(losses=[1.0, float("inf")]), "losses"),
        (dict(proxies=[float("nan"), 1.0]), "proxies"),
        (dict(losses=[], proxies=[]), "losses"),
        (dict(proxies=[1.0]), "losses=2, proxies=1"),
        (dict(loss_range=0.0), "loss_range"),
        (dict(loss_range=-1.0), "loss_range"),
        (dict(loss_range=float("nan")), "loss_range"),
        (dict(delta=0.0), "delta"),
        (dict(delta=1.0), "delta"),
        (dict(delta=float("nan")), "delta"),
        (dict(losses=[5.0, 2.0], proxies=[0.0, 1.0]), "A_k"),   # X - Y > Delta: A_k < -1
        (dict(complexity_nats=-1.0), "complexity_nats"),
        (dict(n_tokens=0), "n_tokens"),
        (dict(n_tokens=float("nan")), "n_tokens"),
        (dict(n_tokens=2.5), "n_tokens"),
        (dict(losses="ab"), "losses"),
    ],
)
def test_bad_inputs_name_the_argument(fn, override, name):
    kwargs = {**GOOD, **override}
    with pytest.raises(ValueError, match=name):
        fn(**kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(grid_size=0), "grid_size"),
        (dict(grid_size=float("inf")), "grid_size"),
        (dict(grid=[0.0, 0.5]), "grid"),
        (dict(grid=[0.5, 1.0]), "grid"),
        (dict(grid=[0.5, 0.2]), "grid"),
        (dict(grid=[]), "grid"),
    ],
)
def test_bad_grid_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        freedman_bound(**GOOD, **kwargs)


def test_complexity_validation():
    with pytest.raises(ValueError, match="delta"):
        freedman_complexity(1.5, 10)
    with pytest.raises(ValueError, match="n_tokens"):
        freedman_complexity(0.1, -3)
    assert freedman_complexity(0.1, 10, 5, 2.0) == pytest.approx((2.0 + math.log(50)) / 10)
