import math

import numpy as np
import pytest

from genbound_assets.bounds.azuma import DEFAULT_ALPHA_GRID, azuma_bound, azuma_width


def _smoothed(p, alpha, v):
    return -np.log((1 - alpha) * np.asarray(p) + alpha / v)


def test_width_is_exact_range_of_smoothed_loss():
    for v in (2, 100, 50304):
        for a in (1e-4, 0.01, 0.5, 0.99):
            lo, hi = _smoothed([1.0, 0.0], a, v)
            assert azuma_width(a, v) == pytest.approx(hi - lo, rel=1e-12)
            assert hi == pytest.approx(math.log(v / a))


def test_terms_and_union_cost():
    rng = np.random.default_rng(0)
    p = rng.beta(2, 5, 1000)
    v, d, delta, l_h = 50304, 10**8, 0.05, 2e6
    b = azuma_bound(p, v, d, delta, l_h, delta_split=0.3)
    assert b.delta_martingale == pytest.approx(0.015)
    assert b.delta_subsample == pytest.approx(0.035)
    k = len(DEFAULT_ALPHA_GRID)
    assert b.union_cost == pytest.approx(math.log(k))
    w = math.log1p((1 - b.alpha) * v / b.alpha)
    assert b.loss_range == pytest.approx(w)
    assert b.smoothed_mean == pytest.approx(_smoothed(p, b.alpha, v).mean())
    assert b.azuma_term == pytest.approx(w * math.sqrt((l_h + math.log(k) + math.log(1 / 0.015))
                                                       / (2 * d)))
    assert b.subsample_correction == pytest.approx(w * math.sqrt((math.log(k) + math.log(1 / 0.035))
                                                                 / 2000))
    assert b.bound == pytest.approx(b.smoothed_mean + b.subsample_correction + b.azuma_term)
    assert b.bound == min(b.per_alpha.values())
    # a single-alpha grid pays no union cost
    one = azuma_bound(p, v, d, delta, l_h, alpha_grid=[b.alpha], delta_split=0.3)
    assert one.union_cost == 0 and one.bound < b.bound


def test_full_data_mode_has_no_subsample_term():
    p = np.full(50, 0.3)
    b = azuma_bound(p, 100, 50, 0.1, sampled=False)
    assert b.subsample_correction == 0 and b.delta_martingale == 0.1
    with pytest.raises(ValueError, match="n_tokens"):
        azuma_bound(p, 100, 51, 0.1, sampled=False)


def test_monte_carlo_validity_fixed_model_iid_tokens():
    """Fixed model (L = 0), IID tokens: the bound on the true smoothed risk holds w.p. >= 1 - delta."""
    rng = np.random.default_rng(1)
    v, n, delta = 20, 60, 0.3
    q = rng.dirichlet(np.ones(v))            # data distribution
    model = rng.dirichlet(np.ones(v) * 0.3)  # fixed predictor
    grid = (0.01, 0.1, 0.5)
    true = {a: float((q * _smoothed(model, a, v)).sum()) for a in grid}
    misses = naive = 0
    reps = 1500
    for _ in range(reps):
        tok = rng.choice(v, size=n, p=q)
        b = azuma_bound(model[tok], v, n, delta, alpha_grid=grid, sampled=False)
        misses += b.bound < true[b.alpha]
        # the same bound without the Azuma term fails often: the test can fail
        naive += b.smoothed_mean < true[b.alpha]
    assert misses / reps <= delta
    assert naive / reps > delta


@pytest.mark.parametrize("kwargs, match", [
    (dict(probs_of_target=[1.2]), "probs_of_target"),
    (dict(probs_of_target=[]), "probs_of_target"),
    (dict(probs_of_target=[np.nan]), "probs_of_target"),
    (dict(delta=1.0), "delta"),
    (dict(complexity_nats=-1.0), "complexity_nats"),
    (dict(alpha_grid=[0.1, 0.1]), "duplicate"),
    (dict(alpha_grid=[0.0]), "alpha_grid"),
    (dict(alpha_grid=[]), "alpha_grid"),
    (dict(n_tokens=0), "n_tokens"),
    (dict(delta_split=0.0), "delta_split"),
])
def test_validation(kwargs, match):
    args = dict(probs_of_target=[0.5, 0.2], vocab_size=100, n_tokens=1000, delta=0.05)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        azuma_bound(**args)
