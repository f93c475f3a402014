import numpy as np
import pytest
import statsmodels.api as sm

from genbound_assets.fits.power_law import fit_offset_power_law, fit_power_law

PYTHIA_N = np.array([70426624, 162322944, 405334016, 1011781632, 1414647808, 2775208960,
                     6857302016], dtype=float)


def test_power_law_recovers_exact_data_and_matches_statsmodels():
    x = np.geomspace(1e7, 1e10, 12)
    y = 6e5 * x**0.5
    f = fit_power_law(x, y)
    assert f.params["a"] == pytest.approx(6e5, rel=1e-9)
    assert f.params["c"] == pytest.approx(0.5, rel=1e-9)
    assert f.r_squared == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    y = 3.0 * x**-0.3 * np.exp(rng.normal(0, 0.1, len(x)))
    f = fit_power_law(x, y)
    ref = sm.OLS(np.log(y), sm.add_constant(np.log(x))).fit()
    assert f.params["c"] == pytest.approx(ref.params[1])
    assert f.params["a"] == pytest.approx(np.exp(ref.params[0]))
    assert f.std_errors["c"] == pytest.approx(ref.bse[1])
    assert f.std_errors["a"] == pytest.approx(np.exp(ref.params[0]) * ref.bse[0])
    assert np.allclose(f.residuals, ref.resid)
    assert f.n == len(x)
    p = f.predict([1e11, 1e12])
    frame = ref.get_prediction(np.array([[1, np.log(1e11)], [1, np.log(1e12)]])).summary_frame(
        alpha=0.05)
    assert np.allclose(np.log(p.pi_high), frame["obs_ci_upper"])
    assert np.allclose(np.log(p.ci_low), frame["mean_ci_lower"])
    assert (p.pi_low < p.ci_low).all() and (p.ci_low < p.y).all() and (p.y < p.ci_high).all()
    assert "a x^c" in f.summary()


def test_offset_power_law_recovers_paper_sigma_fit():
    """Sigma(N) = 0.27 + 8337 N^-0.54 (paper_figures.json) on the Pythia sizes."""
    rng = np.random.default_rng(1)
    y = 0.27 + 8337 * PYTHIA_N**-0.54 + rng.normal(0, 1e-7, len(PYTHIA_N))
    f = fit_offset_power_law(PYTHIA_N, y)
    assert f.params["a"] == pytest.approx(0.27, rel=1e-4)
    assert f.params["b"] == pytest.approx(8337, rel=1e-3)
    assert f.params["c"] == pytest.approx(0.54, rel=1e-4)
    assert f.r_squared > 0.999999
    for k in "abc":
        lo, hi = f.conf_int[k]
        assert lo < f.params[k] < hi
    assert "a + b x^-c" in f.summary()


def test_power_law_coverage_lognormal_noise():
    rng = np.random.default_rng(2)
    x = np.geomspace(1.0, 1e4, 40)
    a, c = 2.0, -0.5
    reps = 500
    hit = {"a": 0, "c": 0}
    for _ in range(reps):
        f = fit_power_law(x, a * x**c * np.exp(rng.normal(0, 0.2, len(x))))
        hit["a"] += f.conf_int["a"][0] <= a <= f.conf_int["a"][1]
        hit["c"] += f.conf_int["c"][0] <= c <= f.conf_int["c"][1]
    for k, h in hit.items():
        assert abs(h / reps - 0.95) <= 0.03, (k, h / reps)


def test_power_law_prediction_interval_coverage_when_extrapolating():
    rng = np.random.default_rng(3)
    x = np.geomspace(1.0, 1e4, 40)
    reps, hits = 300, 0
    for _ in range(reps):
        f = fit_power_law(x, 2.0 * x**-0.5 * np.exp(rng.normal(0, 0.2, len(x))))
        p = f.predict(1e6)
        new = 2.0 * 1e6**-0.5 * np.exp(rng.normal(0, 0.2))
        hits += p.pi_low[0] <= new <= p.pi_high[0]
    assert abs(hits / reps - 0.95) <= 0.035


def test_offset_power_law_coverage_gaussian_noise():
    rng = np.random.default_rng(4)
    x = np.geomspace(1e7, 1e10, 40)
    true = {"a": 0.27, "b": 8337.0, "c": 0.54}
    curve = true["a"] + true["b"] * x ** -true["c"]
    reps = 400
    hit = dict.fromkeys(true, 0)
    curve_hits = 0
    x0 = np.array([3e8])
    for _ in range(reps):
        f = fit_offset_power_law(x, curve + rng.normal(0, 0.01, len(x)))
        for k, val in true.items():
            hit[k] += f.conf_int[k][0] <= val <= f.conf_int[k][1]
        p = f.predict(x0)
        y0 = true["a"] + true["b"] * x0[0] ** -true["c"]
        curve_hits += p.ci_low[0] <= y0 <= p.ci_high[0]
    for k, h in hit.items():
        assert abs(h / reps - 0.95) <= 0.03, (k, h / reps)
    assert abs(curve_hits / reps - 0.95) <= 0.03


@pytest.mark.parametrize("fit", [fit_power_law, fit_offset_power_law])
def test_validation(fit):
    with pytest.raises(ValueError, match="mismatched"):
        fit([1, 2, 3, 4], [1, 2, 3])
    with pytest.raises(ValueError, match="x"):
        fit([1, 2, np.nan, 4], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="x must be > 0"):
        fit([-1, 2, 3, 4], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="at least"):
        fit([1, 2], [1, 2])
    with pytest.raises(ValueError, match="y"):
        fit([1, 2, 3, 4], [1, 2, np.inf, 4])
    with pytest.raises(ValueError, match="distinct"):
        fit([2, 2, 2, 2], [1, 2, 3, 4])


def test_power_law_needs_positive_y_and_predict_validates():
    with pytest.raises(ValueError, match="y must be > 0"):
        fit_power_law([1, 2, 3], [1, 0, 3])
    f = fit_power_law([1, 2, 3, 4], [1, 2.1, 2.9, 4.2])
    with pytest.raises(ValueError, match="x_new"):
        f.predict([0.0])
