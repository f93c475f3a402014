"""Theorem 3.4 decomposed, and the direct bound on the smoothed quantized model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genbound_assets.bounds.freedman import freedman_bound
from genbound_assets.bounds.loss_range import tight_loss_range
from genbound_assets.bounds.smoothing import (
    smoothed_entropies,
    smoothed_losses,
    smoothing_alpha,
)
from genbound_assets.bounds.theorem34 import (
    DirectBound,
    Theorem34Terms,
    complexity_from_code_length,
    decomposed_bound,
    direct_bound,
    theorem34_complexity,
    theorem34_terms,
)

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- Sec. 3.4 worked example

def test_section_34_worked_example():
    # V = 50000, b = 3, N/D = 1/20, Sigma = 0.1, quantization gap = 0.1, delta = 0.01, |K| = 1000,
    # D = 1e9 (so log(|K|/delta)/D ~ 1e-8 is negligible).  Expected numbers from the issue text.
    d = 10**9
    c = theorem34_complexity(d // 20, d, 3, 0.01, grid_size=1000)
    assert c == pytest.approx(0.1040, abs=1e-4)
    t = theorem34_terms(2.0, 2.1, 0.1, c, 50000, delta=0.01, grid_size=1000, n_train_tokens=d)
    assert t.random_guess == pytest.approx(1.125, abs=1e-3)
    assert t.loss_variation == pytest.approx(0.032, abs=1e-3)
    assert t.smoothing == pytest.approx(0.456, abs=1e-3)
    assert t.quantization_gap == pytest.approx(0.100, abs=1e-3)
    assert t.gap == pytest.approx(1.713, abs=1e-3)
    assert t.bound == pytest.approx(2.0 + 1.713, abs=1e-3)
    assert t.alpha == pytest.approx(c / (1 + c), rel=1e-4)
    assert t.loss_range == pytest.approx(math.log(50000 / t.alpha))


def test_complexity_formulas():
    n, d, b, delta, k = 70_000_000, 1_400_000_000, 4, 0.01, 1000
    want = (n / d) * b * math.log(2) + math.log(k / delta) / d
    assert theorem34_complexity(n, d, b, delta, k) == pytest.approx(want, rel=1e-14)
    assert complexity_from_code_length(n * b, d, delta, k) == pytest.approx(want, rel=1e-14)
    assert complexity_from_code_length(123.0, 1000, 0.05, 10) == pytest.approx(
        (123 * math.log(2) + math.log(10 / 0.05)) / 1000, rel=1e-14)


# ---------------------------------------------------------------- synthetic model samples

def _sample(seed, vocab, n, noise, conc=0.3):
    """Random next-token distributions p (the 'h' model), tokens drawn from a third distribution,
    and a quantized model q = perturbed p.  Returns p, q and the observed tokens."""
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(vocab, conc), size=n)
    data = rng.dirichlet(np.full(vocab, conc), size=n) * 0.5 + p * 0.5
    tok = np.array([rng.choice(vocab, p=r / r.sum()) for r in data])
    q = p * np.exp(noise * rng.standard_normal(p.shape))
    q /= q.sum(1, keepdims=True)
    return p, q, tok


def _prepare(seed, vocab, n, noise, code_bits, d, delta, grid):
    p, q, tok = _sample(seed, vocab, n, noise)
    rows = np.arange(n)
    c = complexity_from_code_length(code_bits, d, delta, grid)
    alpha = smoothing_alpha(c, vocab)
    x = smoothed_losses(q[rows, tok], alpha, vocab)
    y = smoothed_entropies(q, alpha)
    r_h = float(-np.log(p[rows, tok]).mean())
    r_q = float(-np.log(q[rows, tok]).mean())
    return c, alpha, x, y, r_h, r_q


def test_decomposed_terms_are_consistent():
    vocab, n, d, delta, grid = 64, 400, 10**5, 0.01, 1000
    c, alpha, x, y, r_h, r_q = _prepare(1, vocab, n, 0.5, 5000.0, d, delta, grid)
    t = decomposed_bound(r_h, r_q, x, y, vocab_size=vocab, delta=delta, n_train_tokens=d,
                         code_length_bits=5000.0, grid_size=grid, alpha=alpha)
    assert isinstance(t, Theorem34Terms)
    assert t.complexity == pytest.approx(c, rel=1e-14)
    assert t.alpha == pytest.approx(alpha, rel=1e-14)
    assert t.random_guess == pytest.approx(c * math.log(vocab))
    assert t.smoothing == pytest.approx(math.sqrt(2 * c))
    assert t.quantization_gap == pytest.approx(r_q - r_h)
    # Sigma is Thm 3.1's on (X, Y) with Delta = log(V/alpha), C with L = code length in nats
    fb = freedman_bound(x, y, math.log(vocab / alpha), delta, 5000.0 * math.log(2), grid, d)
    assert t.sigma == pytest.approx(fb.sigma, rel=1e-12)
    assert t.loss_variation == pytest.approx(fb.sigma * math.sqrt(c), rel=1e-12)
    parts = t.empirical_risk + t.random_guess + t.loss_variation + t.smoothing + t.quantization_gap
    assert t.bound == pytest.approx(parts, rel=1e-14)
    assert t.bound == pytest.approx(r_q + c * math.log(vocab) + math.sqrt(2 * c)
                                    + fb.sigma * math.sqrt(c), rel=1e-12)
    assert t.smoothed_empirical_risk == pytest.approx(float(x.mean()))
    # (n_params, bits) route gives the same C when N*b equals the code length
    t2 = decomposed_bound(r_h, r_q, x, y, vocab_size=vocab, delta=delta, n_train_tokens=d,
                          n_params=1250, bits=4, grid_size=grid)
    assert t2.bound == pytest.approx(t.bound, rel=1e-12)


@SETTINGS
@given(
    seed=st.integers(0, 2**31),
    vocab=st.integers(2, 60),
    n=st.integers(1, 80),
    noise=st.floats(0.0, 2.0),
    code_bits=st.floats(0.0, 3e4),
    d_scale=st.integers(1, 1000),
    delta=st.floats(1e-6, 0.5),
    grid=st.sampled_from([1, 10, 1000]),
)
def test_direct_at_most_decomposed_and_both_above_empirical(seed, vocab, n, noise, code_bits,
                                                           d_scale, delta, grid):
    d = n * d_scale
    c = complexity_from_code_length(code_bits, d, delta, grid)
    if c >= vocab - 1:
        return
    c, alpha, x, y, r_h, r_q = _prepare(seed, vocab, n, noise, code_bits, d, delta, grid)
    dec = decomposed_bound(r_h, r_q, x, y, vocab_size=vocab, delta=delta, n_train_tokens=d,
                           code_length_bits=code_bits, grid_size=grid)
    same = direct_bound(x, y, c, alpha, vocab, delta, grid, d, loss_range="worst_case")
    # same alpha, C, Delta = log(V/alpha), grid and sample: Lemma 3.3 is the only difference
    assert same.sigma == pytest.approx(dec.sigma, rel=1e-9)
    assert same.bound <= dec.bound + 1e-12
    assert same.tightening_vs(dec).absolute >= -1e-12
    # the bound is on R_sq: it sits above R_sq_hat and R_q_hat (not necessarily above R_h_hat,
    # since the quantization gap may be negative on a sample)
    assert dec.bound >= max(dec.smoothed_empirical_risk, dec.empirical_risk_q)
    assert same.bound >= same.smoothed_empirical_risk
    tight = direct_bound(x, y, c, alpha, vocab, delta, grid, d)
    assert tight.loss_range_kind == "tight"
    assert tight.loss_range == pytest.approx(tight_loss_range(alpha, vocab))
    assert tight.bound >= tight.smoothed_empirical_risk


@SETTINGS
@given(seed=st.integers(0, 2**31), d1=st.floats(1e-5, 0.5), d2=st.floats(1e-5, 0.5),
       kind=st.sampled_from(["tight", "worst_case"]))
def test_direct_monotone_in_delta_with_alpha_fixed(seed, d1, d2, kind):
    vocab, n, d, grid = 32, 60, 600, 1000
    c0, alpha, x, y, _, _ = _prepare(seed, vocab, n, 0.7, 100.0, d, 0.01, grid)
    lo, hi = sorted((d1, d2))
    b_lo = direct_bound(x, y, complexity_from_code_length(100.0, d, lo, grid), alpha, vocab, lo,
                        grid, d, kind)
    b_hi = direct_bound(x, y, complexity_from_code_length(100.0, d, hi, grid), alpha, vocab, hi,
                        grid, d, kind)
    assert b_lo.bound >= b_hi.bound - 1e-12


def test_direct_bound_terms_and_tightening():
    vocab, n, d, delta, grid = 100, 500, 10**4, 0.01, 1000
    c, alpha, x, y, r_h, r_q = _prepare(7, vocab, n, 0.3, 300.0, d, delta, grid)
    dec = decomposed_bound(r_h, r_q, x, y, vocab_size=vocab, delta=delta, n_train_tokens=d,
                           code_length_bits=300.0, grid_size=grid)
    db = direct_bound(x, y, c, alpha, vocab, delta, grid, d)
    assert isinstance(db, DirectBound)
    assert db.complexity == pytest.approx(c, rel=1e-12)
    assert db.bound == pytest.approx(db.smoothed_empirical_risk + db.range_term + db.loss_variation,
                                     rel=1e-12)
    assert db.range_term == pytest.approx(tight_loss_range(alpha, vocab) * c, rel=1e-12)
    gain = db.tightening_vs(dec)
    assert gain.absolute == pytest.approx(dec.bound - db.bound)
    assert gain.relative_to_bound == pytest.approx(gain.absolute / dec.bound)
    assert gain.relative_to_gap == pytest.approx(gain.absolute / (dec.bound - r_h))
    other = decomposed_bound(r_h, r_q, x, y, vocab_size=vocab, delta=delta, n_train_tokens=d,
                             code_length_bits=300.0, grid_size=grid)
    assert db.tightening_vs(other) == gain
    # an explicit grid with the same t-values as the worst-case-range bound reproduces it exactly
    worst = direct_bound(x, y, c, alpha, vocab, delta, grid, d, "worst_case")
    scale = tight_loss_range(alpha, vocab) / math.log(vocab / alpha)
    s_grid = np.arange(1, grid + 1) / (grid + 1) * scale
    matched = direct_bound(x, y, c, alpha, vocab, delta, grid, d, "tight", grid=s_grid)
    assert matched.bound == pytest.approx(worst.bound, rel=1e-12)


# ---------------------------------------------------------------- validation

def _good():
    vocab, n, d, delta, grid = 16, 30, 3000, 0.05, 100
    c, alpha, x, y, r_h, r_q = _prepare(3, vocab, n, 0.4, 50.0, d, delta, grid)
    return dict(vocab=vocab, d=d, delta=delta, grid=grid, c=c, alpha=alpha, x=x, y=y, r_h=r_h,
                r_q=r_q)


def _dec(g, **kw):
    args = dict(empirical_risk_h=g["r_h"], empirical_risk_q=g["r_q"], smoothed_q_losses=g["x"],
                smoothed_q_entropies=g["y"], vocab_size=g["vocab"], delta=g["delta"],
                n_train_tokens=g["d"], code_length_bits=50.0, grid_size=g["grid"])
    args.update(kw)
    return decomposed_bound(**args)


def _dir(g, **kw):
    args = dict(smoothed_q_losses=g["x"], smoothed_q_entropies=g["y"], complexity=g["c"],
                alpha=g["alpha"], vocab_size=g["vocab"], delta=g["delta"], grid_size=g["grid"],
                n_train_tokens=g["d"])
    args.update(kw)
    return direct_bound(**args)


NAN = float("nan")


@pytest.mark.parametrize(
    "fn, kw, name",
    [
        (_dec, dict(empirical_risk_h=NAN), "empirical_risk_h"),
        (_dec, dict(empirical_risk_q=-1.0), "empirical_risk_q"),
        (_dec, dict(smoothed_q_losses=[]), "smoothed_q_losses"),
        (_dec, dict(smoothed_q_losses=[NAN] * 30), "smoothed_q_losses"),
        (_dec, dict(smoothed_q_entropies=[1.0] * 29), "smoothed_q_losses=30, smoothed_q_entropies=29"),
        (_dec, dict(smoothed_q_losses=[100.0] * 30), "smoothed_q_losses"),
        (_dec, dict(smoothed_q_entropies=[-1.0] * 30), "smoothed_q_entropies"),
        (_dec, dict(delta=0.0), "delta"),
        (_dec, dict(delta=1.0), "delta"),
        (_dec, dict(vocab_size=1), "vocab_size"),
        (_dec, dict(n_train_tokens=0), "n_train_tokens"),
        (_dec, dict(code_length_bits=-5.0), "code_length_bits"),
        (_dec, dict(code_length_bits=None), "code_length_bits"),
        (_dec, dict(n_params=10, bits=4), "code_length_bits"),
        (_dec, dict(code_length_bits=None, n_params=10), "n_params and bits"),
        (_dec, dict(code_length_bits=None, n_params=0, bits=4), "n_params"),
        (_dec, dict(code_length_bits=None, n_params=10, bits=0.0), "bits"),
        (_dec, dict(grid_size=0), "grid_size"),
        (_dec, dict(alpha=0.5), "alpha"),
        (_dec, dict(code_length_bits=1e9), "complexity"),
        (_dir, dict(complexity=-0.1), "complexity"),
        (_dir, dict(complexity=1e-12), "complexity"),
        (_dir, dict(alpha=0.0), "alpha"),
        (_dir, dict(alpha=NAN), "alpha"),
        (_dir, dict(loss_range=-2.0), "loss_range"),
        (_dir, dict(loss_range="loose"), "loss_range"),
        (_dir, dict(loss_range=1e-3), "loss_range"),   # X - Y exceeds it: A_k < -1
        (_dir, dict(delta=2.0), "delta"),
        (_dir, dict(n_train_tokens=-1), "n_train_tokens"),
        (_dir, dict(grid_size=1.5), "grid_size"),
        (_dir, dict(grid=[0.5, 1.5]), "grid"),
        (_dir, dict(smoothed_q_entropies=[NAN] * 30), "smoothed_q_entropies"),
    ],
)
def test_bad_inputs_name_the_argument(fn, kw, name):
    g = _good()
    with pytest.raises(ValueError, match=name):
        fn(g, **kw)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: theorem34_complexity(0, 10, 4, 0.1), "n_params"),
        (lambda: theorem34_complexity(10, 10, -4, 0.1), "bits"),
        (lambda: theorem34_complexity(10, 0, 4, 0.1), "n_train_tokens"),
        (lambda: theorem34_complexity(10, 10, 4, 0.0), "delta"),
        (lambda: complexity_from_code_length(NAN, 10, 0.1), "code_length_bits"),
        (lambda: theorem34_terms(2.0, 2.1, -0.1, 0.1, 100), "sigma"),
        (lambda: theorem34_terms(2.0, 2.1, 0.1, 0.0, 100), "complexity"),
        (lambda: theorem34_terms(2.0, 2.1, 0.1, 0.1, 1), "vocab_size"),
    ],
)
def test_bad_scalar_inputs_name_the_argument(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_tightening_requires_matching_inputs():
    g = _good()
    db = _dir(g)
    with pytest.raises(ValueError, match="decomposed"):
        db.tightening_vs("not a bound")
    dec = _dec(g, code_length_bits=500.0, smoothed_q_losses=np.minimum(g["x"], 1.0))
    with pytest.raises(ValueError, match="alpha"):
        db.tightening_vs(dec)
