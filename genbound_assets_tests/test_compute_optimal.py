import json
import math
from pathlib import Path

import numpy as np
import pytest

from genbound_assets.bounds.compute_optimal import (
    DEFAULT_G2,
    interpolate_row,
    select_compute_optimal,
)

REF = Path("/work/shared/reference")


def _pythia():
    if (REF / "pythia.json").exists():
        p = json.loads((REF / "pythia.json").read_text())
        return p["tokens_per_step"], {m["size"]: m["total_params"] for m in p["models"]}
    return 2097152, {"70m": 70426624, "160m": 162322944, "410m": 405334016}


def _steps():
    return [0] + [2**i for i in range(10)] + list(range(1000, 143001, 1000))


def test_default_g2_matches_reference():
    if (REF / "paper_figures.json").exists():
        fig = json.loads((REF / "paper_figures.json").read_text())
        assert DEFAULT_G2 == fig["compute_optimal_ratio_G2"]


def test_pythia_revisions():
    assert len(_steps()) == 154


def test_pythia70m_needs_interpolation_between_step512_and_step1000():
    per_step, sizes = _pythia()
    n = sizes["70m"]
    steps = _steps()
    tokens = [s * per_step for s in steps]
    sel = select_compute_optimal(n, tokens)
    assert sel.target_tokens == pytest.approx(20 * n)
    assert sel.target_tokens / per_step == pytest.approx(671.6, abs=0.05)
    assert not sel.certified
    assert steps[sel.lo_index] == 512 and steps[sel.hi_index] == 1000
    # the weights reproduce N/D = G^2 and are not the weights of interpolation in D
    r = lambda st: n / (st * per_step)  # noqa: E731
    assert sel.weight_lo * r(512) + sel.weight_hi * r(1000) == pytest.approx(DEFAULT_G2)
    assert sel.weight_lo + sel.weight_hi == pytest.approx(1.0)
    w_in_d = (sel.target_tokens - 512 * per_step) / (488 * per_step)
    assert abs(sel.weight_hi - w_in_d) > 0.1


def test_pythia410m_has_a_checkpoint_within_5_percent():
    per_step, sizes = _pythia()
    n = sizes["410m"]
    steps = _steps()
    sel = select_compute_optimal(n, [s * per_step for s in steps])
    assert sel.certified
    assert steps[sel.index] == 4000
    assert sel.relative_error == pytest.approx(abs(4000 * per_step - 20 * n) / (20 * n))
    # a stricter tolerance forces interpolation between step3000 and step4000
    strict = select_compute_optimal(n, [s * per_step for s in steps], tolerance=0.01)
    assert not strict.certified
    assert (steps[strict.lo_index], steps[strict.hi_index]) == (3000, 4000)


def test_select_validation():
    with pytest.raises(ValueError, match="extrapolate"):
        select_compute_optimal(10**6, [0, 10**5, 10**6])
    with pytest.raises(ValueError, match="extrapolate"):  # step0 (N/D = inf) is not a bracket
        select_compute_optimal(10**6, [0, 10**9])
    with pytest.raises(ValueError, match="duplicate"):
        select_compute_optimal(10, [1, 1])
    with pytest.raises(ValueError, match="tokens_seen"):
        select_compute_optimal(10, [-1, 300])
    with pytest.raises(ValueError, match="n_params"):
        select_compute_optimal(0, [1, 300])
    with pytest.raises(ValueError, match="tolerance"):
        select_compute_optimal(10, [1, 300], tolerance=-0.1)


def test_interpolate_row_linear_in_n_over_d_and_recomputes_c_alpha():
    per_step, sizes = _pythia()
    n = sizes["70m"]
    lo = {"tokens": 512 * per_step, "R_h": 3.9, "R_q": 4.1, "sigma": 2.4}
    hi = {"tokens": 1000 * per_step, "R_h": 3.6, "R_q": 3.75, "sigma": 2.2}
    bits, delta, v, k = 4, 0.01, 50304, 1000
    l_h = bits * n * math.log(2)
    row = interpolate_row(lo, hi, n, complexity_nats=l_h, delta=delta, vocab_size=v)
    assert not row.certified
    sel = select_compute_optimal(n, [lo["tokens"], hi["tokens"]])
    assert row.weight_hi == pytest.approx(sel.weight_hi)
    for key in ("R_h", "R_q", "sigma", "tokens"):
        # linear in r = N/D: the interpolant through (r_lo, lo), (r_hi, hi) evaluated at G^2
        r = [n / lo["tokens"], n / hi["tokens"]]
        expected = np.interp(DEFAULT_G2, r[::-1], [hi[key], lo[key]])
        assert row.values[key] == pytest.approx(expected)
    d_star = n / DEFAULT_G2
    c = (l_h + math.log(k / delta)) / d_star
    assert row.complexity == pytest.approx(c)
    assert row.complexity == pytest.approx(bits * DEFAULT_G2 * math.log(2), rel=1e-6)
    assert row.alpha == pytest.approx(v * c / ((v - 1) * (1 + c)))
    # interpolated D differs from D*: C must use D*, not the interpolated D
    assert abs(row.values["tokens"] - d_star) / d_star > 0.01


def test_interpolate_row_validation():
    kw = dict(complexity_nats=1.0, delta=0.01, vocab_size=100)
    with pytest.raises(ValueError, match="different keys"):
        interpolate_row({"tokens": 10, "a": 1}, {"tokens": 30}, 1, **kw)
    with pytest.raises(ValueError, match="tokens"):
        interpolate_row({"a": 1}, {"a": 2}, 1, **kw)
    with pytest.raises(ValueError, match="extrapolate"):
        interpolate_row({"tokens": 10}, {"tokens": 15}, 1, **kw)
    with pytest.raises(ValueError, match="row_hi\\['a'\\]"):
        interpolate_row({"tokens": 10, "a": 1}, {"tokens": 30, "a": np.nan}, 1, **kw)
    with pytest.raises(ValueError, match="delta"):
        interpolate_row({"tokens": 10}, {"tokens": 30}, 1, complexity_nats=1.0, delta=2,
                        vocab_size=100)
    with pytest.raises(ValueError, match="complexity_nats"):
        interpolate_row({"tokens": 10}, {"tokens": 30}, 1, complexity_nats=-1, delta=0.1,
                        vocab_size=100)
