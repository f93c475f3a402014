import math

import numpy as np
import pytest

from genbound_assets.bounds.choices import (
    Choice,
    best_with_price,
    choice_cost_nats,
    split_delta,
)
from genbound_assets.bounds.freedman import freedman_bound


def test_cost_is_log_options():
    assert choice_cost_nats(1) == 0.0
    assert choice_cost_nats(8) == pytest.approx(3 * math.log(2))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_options"):
            choice_cost_nats(bad)


def test_best_with_price_adds_log_m_to_each_candidate_complexity():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 5, 400)
    y = x + rng.normal(0, 0.3, 400)
    bits = {"b2": 2.0, "b3": 3.0, "b4": 4.0}
    seen = {}

    def cand(name, b):
        def f(extra):
            seen[name] = extra
            return freedman_bound(x, y, 10.0, 0.01, complexity_nats=b * 20 * math.log(2) + extra)
        return f

    choice = best_with_price({k: cand(k, b) for k, b in bits.items()})
    assert isinstance(choice, Choice)
    assert all(e == pytest.approx(math.log(3)) for e in seen.values())
    direct = {k: freedman_bound(x, y, 10.0, 0.01,
                                complexity_nats=b * 20 * math.log(2) + math.log(3)).bound
              for k, b in bits.items()}
    assert choice.name == min(direct, key=direct.get)
    assert choice.value == pytest.approx(min(direct.values()))
    assert choice.values == pytest.approx(direct)
    # the priced bound is worse than the same candidate evaluated as if fixed in advance
    unpriced = freedman_bound(x, y, 10.0, 0.01,
                              complexity_nats=bits[choice.name] * 20 * math.log(2)).bound
    assert choice.value > unpriced


def test_nesting_equals_flat_product():
    def leaf(c):
        return lambda extra: c + extra

    inner = {"g64": leaf(1.0), "g128": leaf(0.5), "g256": leaf(0.7)}
    nested = best_with_price({
        "gptq": lambda e: best_with_price(inner, extra_nats=e),
        "rtn": lambda e: best_with_price({k: leaf(v + 0.1) for k, v in
                                          {"g64": 1.0, "g128": 0.9, "g256": 0.8}.items()},
                                         extra_nats=e),
    })
    flat = best_with_price({f"{m}-{g}": leaf(c) for m, d in
                            {"gptq": {"g64": 1.0, "g128": 0.5, "g256": 0.7},
                             "rtn": {"g64": 1.1, "g128": 1.0, "g256": 0.9}}.items()
                            for g, c in d.items()})
    assert nested.value == pytest.approx(flat.value)
    assert nested.result.price_nats == pytest.approx(math.log(6))
    assert flat.name == "gptq-g128"


def test_union_cost_restores_coverage_monte_carlo():
    """Picking the min of M Hoeffding bounds under-covers unless log M is paid."""
    rng = np.random.default_rng(1)
    m, n, delta, p = 20, 50, 0.1, 0.5
    reps = 1500
    cover_priced = cover_naive = 0
    for _ in range(reps):
        means = rng.binomial(n, p, size=m) / n  # M hypotheses, each with its own sample

        def cand(i, means=means):
            return lambda extra: means[i] + math.sqrt((extra + math.log(1 / delta)) / (2 * n))

        cands = {str(i): cand(i) for i in range(m)}
        cover_priced += best_with_price(cands).value >= p
        cover_naive += min(f(0.0) for f in cands.values()) >= p
    assert cover_priced / reps >= 1 - delta
    assert cover_naive / reps < 1 - delta  # the test can tell the difference


def test_best_with_price_validation():
    with pytest.raises(ValueError, match="candidates is empty"):
        best_with_price({})
    with pytest.raises(ValueError, match="not callable"):
        best_with_price({"a": 1.0})
    with pytest.raises(ValueError, match="extra_nats"):
        best_with_price({"a": lambda e: 1.0}, extra_nats=-1)
    with pytest.raises(ValueError, match="candidate bound"):
        best_with_price({"a": lambda e: float("inf")})


def test_split_delta():
    parts = split_delta(0.01, [1, 1, 2])
    assert sum(parts) == pytest.approx(0.01)
    assert parts[2] == pytest.approx(2 * parts[0])
    d = split_delta(0.05, {"martingale": 1.0, "subsample": 4.0})
    assert d["subsample"] == pytest.approx(0.04)
    # equal split over M costs log M inside log(1/delta): same as the union cost
    assert math.log(1 / split_delta(0.01, [1] * 7)[0]) == pytest.approx(
        math.log(1 / 0.01) + choice_cost_nats(7))
    with pytest.raises(ValueError, match="delta"):
        split_delta(1.0, [1])
    with pytest.raises(ValueError, match="weights"):
        split_delta(0.1, [1, 0])
    with pytest.raises(ValueError, match="weights"):
        split_delta(0.1, [])
    with pytest.raises(ValueError, match="weights"):
        split_delta(0.1, [1, float("nan")])
