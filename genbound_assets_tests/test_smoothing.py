"""Lemma 3.3 / Theorem A.6 smoothing and the tight loss range."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from genbound_assets.bounds.loss_range import smoothed_min_entropy, tight_loss_range
from genbound_assets.bounds.smoothing import (
    smoothed_entropies,
    smoothed_losses,
    smoothed_worst_case_loss,
    smoothing_alpha,
    smoothing_cost_bound,
    smoothing_excess,
)

SETTINGS = settings(max_examples=80, deadline=None)


def _eq20_excess(alpha, c, vocab):
    """-log(1 - alpha + alpha/V) + C log(V/alpha) - C log V, written out independently."""
    return -math.log1p(-alpha + alpha / vocab) + c * math.log(vocab / alpha) - c * math.log(vocab)


@pytest.mark.parametrize(
    "vocab, c",
    [(v, c) for v in (2, 3, 50, 50304) for c in (1e-9, 1e-4, 0.01, 0.104, 0.5, 1.0, 1.3)
     if c < v - 1],  # C >= V - 1 has no proper mixture
)
def test_alpha_minimises_eq20(vocab, c):
    a = smoothing_alpha(c, vocab)
    assert 0 < a < 1
    res = minimize_scalar(lambda t: _eq20_excess(t, c, vocab), bounds=(a * 1e-3, min(1.0, a * 10)),
                          method="bounded", options={"xatol": a * 1e-10})
    assert res.x == pytest.approx(a, rel=1e-4)
    assert _eq20_excess(a, c, vocab) <= res.fun + 1e-13 * abs(res.fun) + 1e-300
    assert smoothing_excess(c, vocab) == pytest.approx(_eq20_excess(a, c, vocab), rel=1e-12)


@SETTINGS
@given(log_c=st.floats(-12, 3), vocab=st.integers(2, 10**6))
def test_smoothing_excess_below_sqrt_2c(log_c, vocab):
    c = 10.0**log_c
    if c >= vocab - 1:
        return
    assert smoothing_excess(c, vocab) <= smoothing_cost_bound(c, vocab) * (1 + 1e-12)
    assert smoothing_cost_bound(c, vocab) == pytest.approx(math.sqrt(2 * c))
    # the intermediate step of App. A.3: excess <= (1+C)log(1+C) - C log C <= sqrt(2C)
    mid = (1 + c) * math.log1p(c) - c * math.log(c)
    assert smoothing_excess(c, vocab) <= mid * (1 + 1e-12) + 1e-300
    assert mid <= math.sqrt(2 * c)


def test_alpha_close_to_c_over_1_plus_c_for_large_vocab():
    assert smoothing_alpha(0.1, 50304) == pytest.approx(0.1 / 1.1, rel=1e-4)
    assert smoothing_alpha(0.5, 3) == pytest.approx(3 * 0.5 / (2 * 1.5))


@SETTINGS
@given(seed=st.integers(0, 2**31), vocab=st.integers(2, 300), alpha=st.floats(1e-6, 1.0))
def test_tokenwise_smoothing_inequality(seed, vocab, alpha):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(vocab, 0.3), size=20)
    p[0] = 0.0
    p[0, 0] = 1.0  # a vertex: the other tokens have probability exactly 0
    tok = rng.integers(0, vocab, 20)
    pt = p[np.arange(20), tok]
    loss = smoothed_losses(pt, alpha, vocab)
    assert np.allclose(loss, -np.log((1 - alpha) * pt + alpha / vocab), rtol=1e-14)
    worst = smoothed_worst_case_loss(alpha, vocab)
    assert worst == pytest.approx(math.log(vocab / alpha))
    assert loss.max() <= worst * (1 + 1e-14)
    with np.errstate(divide="ignore"):
        raw = -np.log(pt)
    assert np.all(loss <= raw - math.log(1 - alpha + alpha / vocab) + 1e-12)
    ent = smoothed_entropies(p, alpha)
    ps = (1 - alpha) * p + alpha / vocab
    assert np.allclose(ent, [-(r * np.log(r)).sum() for r in ps], rtol=1e-12)
    h_min = smoothed_min_entropy(alpha, vocab)
    assert ent.min() >= h_min - 1e-12
    assert ent[0] == pytest.approx(h_min, rel=1e-12, abs=1e-15)
    if alpha <= 0.999:  # nearer 1 the range rounds to 0 and is refused
        rngd = tight_loss_range(alpha, vocab)
        assert np.all(loss - ent <= rngd * (1 + 1e-12) + 1e-13)
        # attained: vertex at token 0, observed token 1 (probability 0 under the model)
        x_worst = smoothed_losses([0.0], alpha, vocab)[0]
        assert x_worst - ent[0] == pytest.approx(rngd, rel=1e-12, abs=1e-13)


def test_min_entropy_by_hand():
    # V = 4, alpha = 0.2: masses 0.85, 0.05, 0.05, 0.05
    want = -(0.85 * math.log(0.85) + 3 * 0.05 * math.log(0.05))
    assert smoothed_min_entropy(0.2, 4) == pytest.approx(want, rel=1e-14)
    assert tight_loss_range(0.2, 4) == pytest.approx(math.log(20) - want, rel=1e-14)
    assert tight_loss_range(0.2, 4) < smoothed_worst_case_loss(0.2, 4)
    # alpha = 1 is the uniform model: no range left
    assert smoothed_min_entropy(1.0, 7) == pytest.approx(math.log(7))
    with pytest.raises(ValueError, match="alpha"):
        tight_loss_range(1.0, 7)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: smoothing_alpha(0.0, 10), "complexity"),
        (lambda: smoothing_alpha(-1.0, 10), "complexity"),
        (lambda: smoothing_alpha(float("nan"), 10), "complexity"),
        (lambda: smoothing_alpha(9.0, 10), "complexity"),
        (lambda: smoothing_alpha(0.1, 1), "vocab_size"),
        (lambda: smoothing_alpha(0.1, 10.5), "vocab_size"),
        (lambda: smoothing_alpha(0.1, float("inf")), "vocab_size"),
        (lambda: smoothing_alpha(0.1, True), "vocab_size"),
        (lambda: smoothed_losses([0.5, float("nan")], 0.1, 10), "probs_of_target"),
        (lambda: smoothed_losses([], 0.1, 10), "probs_of_target"),
        (lambda: smoothed_losses([1.5], 0.1, 10), "probs_of_target"),
        (lambda: smoothed_losses([0.5], 0.0, 10), "alpha"),
        (lambda: smoothed_losses([0.5], 1.5, 10), "alpha"),
        (lambda: smoothed_worst_case_loss(float("nan"), 10), "alpha"),
        (lambda: smoothed_entropies([[0.5, 0.6]], 0.1), "probs"),
        (lambda: smoothed_entropies([0.5, 0.5], 0.1), "probs"),
        (lambda: smoothing_excess(0.1, 10, alpha=0.0), "alpha"),
        (lambda: smoothing_cost_bound(-0.1, 10), "complexity"),
        (lambda: smoothed_min_entropy(0.1, 0), "vocab_size"),
    ],
)
def test_bad_inputs_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()
