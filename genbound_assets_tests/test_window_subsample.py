"""Subsample step on sampled *windows* (docs/bounds.md, "Subsampling windows").

A draw is a training window drawn with probability proportional to its number of targets (a
uniform target of the sampled population, then the window holding it), evaluated whole.  The
certificate works on the draws' window means.  Monte-Carlo coverage on a population with strong
within-window correlation, with the negative control the design must avoid: the m*T targets of
the drawn windows treated as m*T independent draws.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta, binomtest

from genbound_assets.bounds.azuma import azuma_bound
from genbound_assets.bounds.freedman import freedman_grid, v
from genbound_assets.bounds.smoothing import smoothed_losses
from genbound_assets.bounds.subsample import (
    check_groups,
    split_sample,
    subsampled_freedman_bound,
)

V, ALPHA = 50_000, 0.05
W = math.log(V / ALPHA)      # smoothed worst-case loss: X in [0, W]
LOG_V = math.log(V)          # smoothed entropy: Y in [0, log V]; Delta = W >= X - Y
LEVEL = 1e-3                 # one-sided Clopper-Pearson level of every coverage check


def _cp_lower(k: int, n: int, level: float = LEVEL) -> float:
    return 0.0 if k == 0 else float(beta.ppf(level, k, n - k + 1))


class Population:
    """D targets in windows; the first n_exact_windows windows are the exact stratum.

    Window difficulty is shared by all its targets (strong within-window correlation), and
    short windows are harder (window size correlates with the loss, so the draw must be
    proportional to size for the window mean to be unbiased).
    """

    def __init__(self, rng, n_windows=1500, t_max=64, n_exact_windows=60):
        sizes = rng.integers(t_max // 4, t_max + 1, n_windows)
        hard = rng.random(n_windows) < np.where(sizes < t_max // 2, 0.5, 0.15)
        level = np.where(hard, rng.uniform(0.35, 0.6, n_windows), rng.uniform(0.02, 0.15, n_windows))
        w_of = np.repeat(np.arange(n_windows), sizes)
        x = np.clip(level[w_of] * W + rng.normal(0, 0.4, len(w_of)), 0, W)
        # proxy: the window's "entropy", also shared within the window
        ent = np.clip(level * LOG_V * 0.9 + rng.normal(0, 0.5, n_windows), 0, LOG_V)
        y = np.clip(ent[w_of] + rng.normal(0, 0.2, len(w_of)), 0, LOG_V)
        self.sizes, self.x, self.y, self.w_of, self.hard = sizes, x, y, w_of, hard
        self.start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.n_exact_windows = n_exact_windows
        self.n_exact = int(sizes[:n_exact_windows].sum())
        self.d = len(x)

    def draw(self, rng, m):
        """m windows drawn prop. to size outside the exact stratum: (token index, draw id)."""
        k = rng.integers(self.n_exact, self.d, m)        # a uniform sampled-population target
        win = self.w_of[k]                              # ... and the window holding it
        n = self.sizes[win]
        first = np.repeat(self.start[win] - np.concatenate([[0], np.cumsum(n)[:-1]]), n)
        return first + np.arange(int(n.sum())), np.repeat(np.arange(m), n)

    def mean_z(self, s):
        a = (self.y - self.x) / W
        return float((self.x + W / s * v(s * a)).mean())


@pytest.fixture(scope="module")
def pop():
    return Population(np.random.default_rng(11))


def _bound(pop, tok, gid, **kw):
    args = dict(loss_range=W, delta=0.1, n_tokens=pop.d, loss_bounds=(0, W),
                proxy_bounds=(0, LOG_V), complexity_nats=20.0, grid_size=30, delta_split=0.5,
                exact_losses=pop.x[:pop.n_exact], exact_proxies=pop.y[:pop.n_exact])
    args.update(kw)
    return subsampled_freedman_bound(pop.x[tok], pop.y[tok], groups=gid, **args)


def test_window_mean_is_unbiased_for_the_population_mean(pop):
    """E[window mean of a size-proportional draw] = sampled-population mean, exactly."""
    z = pop.x + W / 0.3 * v(0.3 * (pop.y - pop.x) / W)
    rest = np.arange(pop.n_exact_windows, len(pop.sizes))
    wmean = np.bincount(pop.w_of, weights=z) / pop.sizes
    p = pop.sizes[rest] / pop.sizes[rest].sum()
    assert float(p @ wmean[rest]) == pytest.approx(float(z[pop.n_exact:].mean()), rel=1e-12)
    # uniform-over-windows weighting is biased here (short windows are harder)
    assert abs(float(wmean[rest].mean()) - float(z[pop.n_exact:].mean())) > 0.2


def test_monte_carlo_coverage_and_token_iid_negative_control(pop):
    """Windows drawn prop. to size: z_upper >= the full-data mean Z(s_hat) w.p. >= 1 - delta_sub.

    Control: the same draws' m*T targets passed as m*T independent draws (no groups).  The
    window design makes them strongly dependent, so the control's Bernstein variance term is
    ~sqrt(T) too small and it misses far more often than delta_sub.
    """
    rng = np.random.default_rng(2025)
    grid = freedman_grid(30)
    truth = {float(s): pop.mean_z(s) for s in grid}
    trials, m = 300, 300
    viol = viol_ctrl = 0
    methods = []
    for t in range(trials):
        tok, gid = pop.draw(rng, m)
        b = _bound(pop, tok, gid, split_seed=t)
        ctrl = _bound(pop, tok, None, split_seed=t)
        assert b.unit == "window" and b.n_draws == m and b.n_sample_tokens == len(tok)
        assert ctrl.unit == "token" and ctrl.n_draws == len(tok)
        methods.append(b.method)
        viol += b.z_upper < truth[b.s_hat]
        viol_ctrl += ctrl.z_upper < truth[ctrl.s_hat]
    delta_sub = b.delta_subsample
    assert binomtest(viol, trials, delta_sub, alternative="greater").pvalue >= LEVEL, viol
    assert _cp_lower(viol_ctrl, trials) > 1.5 * delta_sub, viol_ctrl
    assert "bernstein" in methods  # the variance-adaptive branch is exercised


def test_stratified_identity_and_nonnegative_correction(pop):
    """Review finding (a): Sigma, the empirical mean and z_mean are one stratified estimator, so
    bound = empirical_mean + Delta C + Sigma sqrt(C) + correction with correction >= 0."""
    rng = np.random.default_rng(3)
    for t in range(5):
        tok, gid = pop.draw(rng, 120)
        for groups in (gid, None):
            b = _bound(pop, tok, groups, split_seed=t, complexity_nats=1e3)
            c = b.complexity
            assert b.correction >= 0 and b.correction == min(b.hoeffding_correction,
                                                             b.bernstein_correction)
            assert b.range_term == pytest.approx(W * c, rel=1e-14)
            assert b.loss_variation_term == pytest.approx(b.sigma * math.sqrt(c), rel=1e-14)
            assert b.bound == pytest.approx(b.empirical_mean + b.range_term
                                            + b.loss_variation_term + b.correction, rel=1e-12)
            assert b.z_mean == pytest.approx(b.empirical_mean + W / b.s_hat * b.mean_v, rel=1e-12)
            xe, ye = pop.x[:pop.n_exact], pop.y[:pop.n_exact]
            assert b.sample_mean(pop.x[tok], xe) == pytest.approx(b.empirical_mean, rel=1e-12)
            ve = v(b.s_hat * (ye - xe) / W)
            vs = v(b.s_hat * (pop.y[tok] - pop.x[tok]) / W)
            assert b.sample_mean(vs, ve) == pytest.approx(b.mean_v, rel=1e-12)
            assert b.token_weights.sum() == pytest.approx(1.0)
            # Thm 3.4's decomposed row assembled from the same estimator: with R_h, R_q and R_sq
            # all taken with sample_mean, the leftover (the "subsample term") is the correction
            # plus Lemma 3.3's slack, never negative
            xq = np.clip(pop.x[tok] + 0.05, 0, None)             # a stand-in R_q sample
            r_q, r_sq = b.sample_mean(xq, xe + 0.05), b.empirical_mean
            slack = (r_q - r_sq) + c * LOG_V - c * W + math.sqrt(2 * c)
            assert slack >= 0
            terms = r_q + c * LOG_V + b.loss_variation_term + math.sqrt(2 * c)
            assert (b.bound + slack) - terms == pytest.approx(b.correction, abs=1e-9)


def test_sigma_is_stratified_not_certification_half_only(pop):
    """The exact stratum enters Sigma: changing its proxies moves Sigma (it did not before)."""
    rng = np.random.default_rng(4)
    tok, gid = pop.draw(rng, 100)
    b1 = _bound(pop, tok, gid, s_hat=float(freedman_grid(30)[10]))
    ye = np.clip(pop.y[:pop.n_exact] + 1.0, 0, LOG_V)
    b2 = _bound(pop, tok, gid, s_hat=float(freedman_grid(30)[10]), exact_proxies=ye)
    assert b1.sigma != b2.sigma
    assert b1.correction == b2.correction   # the correction is about the sampled stratum only


def test_singleton_groups_equal_the_token_version():
    rng = np.random.default_rng(5)
    x = rng.uniform(0, W, 300)
    y = rng.uniform(0, LOG_V, 300)
    kw = dict(loss_range=W, delta=0.05, n_tokens=10**6, loss_bounds=(0, W),
              proxy_bounds=(0, LOG_V), complexity_nats=100.0, grid_size=100, split_seed=9,
              exact_losses=x[:20], exact_proxies=y[:20])
    a = subsampled_freedman_bound(x[20:], y[20:], **kw)
    b = subsampled_freedman_bound(x[20:], y[20:], groups=np.arange(280), **kw)
    assert a.s_hat == b.s_hat and a.unit == "token" and b.unit == "window"
    for f in ("bound", "sigma", "correction", "z_mean", "z_variance", "empirical_mean"):
        assert getattr(a, f) == pytest.approx(getattr(b, f), rel=1e-13), f


def test_draws_are_equally_weighted_window_means_and_repeats_count_twice():
    """Hand computation: the estimator is the mean of the draws' window means (not the pooled
    token mean), and a window drawn twice is two draws."""
    x = np.array([1.0, 1.0, 1.0, 1.0, 5.0, 2.0, 2.0, 5.0, 3.0, 3.0, 3.0])
    gid = np.array([0, 0, 0, 0, 1, 2, 2, 3, 4, 4, 4])   # draws 1 and 3: one window, twice
    y = x.copy()                                         # A = 0: Z = X
    b = subsampled_freedman_bound(x, y, 10.0, 0.1, 10**4, (0, 10.0), groups=gid, grid_size=10,
                                  selection_fraction=0.4, split_seed=1)
    sel, cert = split_sample(5, 0.4, 1)
    means = np.array([1.0, 5.0, 2.0, 5.0, 3.0])
    assert b.n_selection == 2 and b.n_certification == 3 and b.n_draws == 5
    assert b.z_mean == pytest.approx(means[cert].mean())
    assert b.z_variance == pytest.approx(means[cert].var(ddof=1))
    pooled = x[np.isin(gid, cert)].mean()
    assert abs(pooled - means[cert].mean()) > 1e-3 or np.all(np.bincount(gid)[cert] == 1)
    assert b.n_certification_tokens == int(np.isin(gid, cert).sum())


def test_s_hat_depends_only_on_selection_draws(pop):
    rng = np.random.default_rng(6)
    tok, gid = pop.draw(rng, 80)
    b1 = _bound(pop, tok, gid, grid_size=100)
    _, cert = split_sample(80)
    x2, y2 = pop.x[tok].copy(), pop.y[tok].copy()
    in_cert = np.isin(gid, cert)
    x2[in_cert] = 0.01
    y2[in_cert] = 0.01
    b2 = subsampled_freedman_bound(x2, y2, W, 0.1, pop.d, (0, W), (0, LOG_V), complexity_nats=20.0,
                                   grid_size=100, delta_split=0.5, groups=gid,
                                   exact_losses=pop.x[:pop.n_exact],
                                   exact_proxies=pop.y[:pop.n_exact])
    assert b1.s_hat == b2.s_hat and b1.z_mean != b2.z_mean


def test_large_selection_uses_a_search_that_lands_on_k(pop, monkeypatch):
    """Above the exhaustive-work limit s_hat comes from a ternary search: still a point of K."""
    import genbound_assets.bounds.subsample as sub

    rng = np.random.default_rng(7)
    tok, gid = pop.draw(rng, 60)
    full = _bound(pop, tok, gid, grid_size=200)
    monkeypatch.setattr(sub, "_EXHAUSTIVE_WORK", 1)
    fast = _bound(pop, tok, gid, grid_size=200)
    grid = freedman_grid(200)
    assert np.isclose(grid, fast.s_hat, rtol=0, atol=1e-12).any()
    assert fast.bound <= full.bound * 1.01   # the search finds (nearly) the same minimum


@pytest.mark.parametrize("groups, match", [
    (np.array([0.0, 1.0, 1.0]), "integer"),
    (np.array([0, 2, 2]), "draw id 1"),
    (np.array([0, -1, 1]), "negative"),
    (np.array([0, 1]), "2 entries"),
    (np.array([[0, 1, 1]]), "one-dimensional"),
    (np.array([True, False, True]), "integer"),
])
def test_bad_groups_name_the_problem(groups, match):
    x = np.array([0.5, 1.0, 2.0])
    with pytest.raises(ValueError, match=match):
        subsampled_freedman_bound(x, x, 3.0, 0.1, 100, (0, 3.0), groups=groups)
    with pytest.raises(ValueError, match=match):
        check_groups(groups, 3)


def test_certification_needs_two_window_draws():
    x = np.full(6, 0.5)
    with pytest.raises(ValueError, match="certification draws"):
        subsampled_freedman_bound(x, x, 1.0, 0.1, 100, (0, 1.0), groups=np.array([0, 0, 0, 1, 1, 1]))


def test_sample_mean_validation(pop):
    rng = np.random.default_rng(8)
    tok, gid = pop.draw(rng, 20)
    b = _bound(pop, tok, gid)
    with pytest.raises(ValueError, match="exact_values is required"):
        b.sample_mean(pop.x[tok])
    with pytest.raises(ValueError, match="entries"):
        b.sample_mean(pop.x[tok][:-1], pop.x[:pop.n_exact])
    plain = _bound(pop, tok, gid, exact_losses=None, exact_proxies=None)
    with pytest.raises(ValueError, match="no exact stratum"):
        plain.sample_mean(pop.x[tok], pop.x[:3])


# ---------------------------------------------------------------- Azuma baseline on windows

class ProbPopulation(Population):
    """The same window structure, with the model's probability of each target instead."""

    def __init__(self, rng, vocab=1000, **kw):
        super().__init__(rng, **kw)
        hard = self.hard[self.w_of]
        self.p = np.where(hard, rng.uniform(0, 2e-3, self.d), rng.uniform(0.6, 1.0, self.d))
        self.vocab = vocab


def test_azuma_window_coverage_and_token_iid_negative_control():
    rng = np.random.default_rng(31)
    pop = ProbPopulation(rng)
    grid, delta, split = (0.01, 0.1, 0.3), 0.1, 0.5
    truth = {a: float(smoothed_losses(pop.p, a, pop.vocab).mean()) for a in grid}
    pe = pop.p[:pop.n_exact]
    trials, m = 400, 400
    viol = viol_ctrl = 0
    methods = set()
    for _ in range(trials):
        tok, gid = pop.draw(rng, m)
        kw = dict(vocab_size=pop.vocab, n_tokens=pop.d, delta=delta, complexity_nats=10.0,
                  alpha_grid=grid, delta_split=split, exact_probs_of_target=pe)
        b = azuma_bound(pop.p[tok], groups=gid, **kw)
        ctrl = azuma_bound(pop.p[tok], **kw)   # m*T targets as if m*T independent draws
        assert b.unit == "window" and b.n_sample == m and b.n_sample_tokens == len(tok)
        methods.add(b.subsample_method)
        viol += b.smoothed_mean + b.subsample_correction < truth[b.alpha]
        viol_ctrl += ctrl.smoothed_mean + ctrl.subsample_correction < truth[ctrl.alpha]
    delta_sub = delta * (1 - split)
    assert binomtest(viol, trials, delta_sub, alternative="greater").pvalue >= LEVEL, viol
    assert _cp_lower(viol_ctrl, trials) > 1.5 * delta_sub, viol_ctrl
    assert methods <= {"hoeffding", "bernstein"}


def test_azuma_window_terms():
    rng = np.random.default_rng(32)
    p = rng.uniform(0.01, 0.9, 50)
    gid = np.repeat(np.arange(10), 5)
    pe = rng.uniform(0.2, 0.9, 30)
    grid = (0.05, 0.2)
    b = azuma_bound(p, 100, 1000, 0.1, 5.0, alpha_grid=grid, delta_split=0.2, groups=gid,
                    exact_probs_of_target=pe)
    a = b.alpha
    width = math.log1p((1 - a) * 100 / a)
    means = smoothed_losses(p, a, 100).reshape(10, 5).mean(1)
    dm = 0.08 / (2 * len(grid))
    hoeff = width * math.sqrt(math.log(1 / dm) / 20)
    lt = math.log(2 / dm)
    bern = math.sqrt(2 * means.var(ddof=1) * lt / 10) + 7 * width * lt / 27
    assert b.subsample_correction == pytest.approx(0.97 * min(hoeff, bern), rel=1e-12)
    assert b.subsample_method == ("bernstein" if bern < hoeff else "hoeffding")
    assert b.smoothed_mean == pytest.approx(
        0.03 * smoothed_losses(pe, a, 100).mean() + 0.97 * means.mean(), rel=1e-12)
    assert b.bound == pytest.approx(b.smoothed_mean + b.subsample_correction + b.azuma_term)
    with pytest.raises(ValueError, match="sampled=True"):
        azuma_bound(p, 100, 50, 0.1, sampled=False, groups=gid)
    with pytest.raises(ValueError, match=">= 2 window draws"):
        azuma_bound(p, 100, 1000, 0.1, groups=np.zeros(50, dtype=int))
    with pytest.raises(ValueError, match="draw id"):
        azuma_bound(p, 100, 1000, 0.1, groups=gid * 2)
