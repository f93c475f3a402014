import math

import numpy as np
import pytest

from genbound_assets.bounds.freedman import freedman_bound
from genbound_assets.bounds.prequential import (
    PrequentialComplexity,
    prequential_bound,
    prequential_complexity,
)
from genbound_assets.bounds.subsample import SubsampledBound

E, B, BETA, T0 = 1.7, 400.0, 0.37, 1000.0


def _loss(t):
    """Chinchilla-style loss of the model after t tokens, on tokens it has not seen."""
    return E + B * (np.asarray(t, dtype=float) + T0) ** (-BETA)


def _integral(d):
    f = lambda t: E * t + B * (t + T0) ** (1 - BETA) / (1 - BETA)  # noqa: E731
    return f(d) - f(0)


def test_left_riemann_sum_and_second_term():
    t = [0, 10, 30, 100]
    losses = [5.0, 4.0, 3.5, 3.0]
    c = prequential_complexity(t, losses, 200, 2.5)
    area = 10 * 5 + 20 * 4 + 70 * 3.5 + 100 * 3.0
    assert c.prequential_nats == pytest.approx(area)
    assert c.final_nats == pytest.approx(500.0)
    assert c.nats == pytest.approx(area - 500)
    assert c.bits == pytest.approx((area - 500) / math.log(2))
    assert not c.certified and c.n_intervals == 4
    # checkpoints at/after D are ignored, the interval straddling D is cut at D
    c2 = prequential_complexity(t + [300], losses + [1.0], 50, 2.5)
    assert c2.prequential_nats == pytest.approx(10 * 5 + 20 * 4 + 20 * 3.5)
    assert c2.n_intervals == 3


def test_conservative_and_matches_eq6_asymptotics():
    d = 2**24
    fine_t = np.arange(0, d, 256)
    fine = prequential_complexity(fine_t, _loss(fine_t), d, float(_loss(d)))
    coarse_t = np.r_[0, 2.0 ** np.arange(0, 24)]
    coarse = prequential_complexity(coarse_t, _loss(coarse_t), d, float(_loss(d)))
    exact = _integral(d) - d * float(_loss(d))
    # left sums of a decreasing curve over-estimate; coarser checkpoints over-estimate more
    assert exact < fine.nats < coarse.nats
    assert fine.nats == pytest.approx(exact, rel=1e-3)
    # eq. (6): sum_k R(k) - D R(D) ~ B beta/(1-beta) D^(1-beta) for D >> T0
    asym = B * BETA / (1 - BETA) * d ** (1 - BETA)
    assert exact == pytest.approx(asym, rel=0.05)


def test_heldout_loss_would_be_anti_conservative():
    t = [0, 100, 200]
    losses = [6.0, 4.0, 3.5]
    train = prequential_complexity(t, losses, 300, 3.0)
    heldout = prequential_complexity(t, losses, 300, 3.3)  # held-out loss > training loss
    assert heldout.nats < train.nats


def test_prequential_bound_feeds_freedman():
    rng = np.random.default_rng(0)
    w = math.log(50304 / 0.01)
    y = rng.uniform(1, 4, 2000)
    x = np.clip(y + rng.normal(0, 0.8, 2000), 0, w)
    pc = prequential_complexity([0, 10**6, 10**7], [10.8, 5.0, 3.5], 10**8, 3.0)
    res = prequential_bound(x, y, w, 0.01, pc)
    direct = freedman_bound(x, y, w, 0.01, complexity_nats=pc.nats, n_tokens=10**8)
    assert res.bound == pytest.approx(direct.bound)
    assert not res.certified
    assert pc.complexity(0.01) == pytest.approx(direct.complexity)
    sub = prequential_bound(x, y, w, 0.01, pc, loss_bounds=(0, w), grid_size=200)
    assert isinstance(sub.result, SubsampledBound) and not sub.certified
    assert not sub.result.certified   # review: the nested result must not claim a certificate
    assert sub.result.complexity_nats == pc.nats
    assert sub.bound > sub.result.freedman_part


@pytest.mark.parametrize("args, match", [
    (([1, 2], [3, 3], 10, 1.0), "start at 0"),
    (([0, 2, 2], [3, 3, 3], 10, 1.0), "strictly increasing"),
    (([0, 2], [3], 10, 1.0), "mismatched"),
    (([0, 2], [3, -1], 10, 1.0), "next_chunk_losses"),
    (([0, 2], [3, np.inf], 10, 1.0), "next_chunk_losses"),
    (([0, 2], [3, 3], 0, 1.0), "n_tokens"),
    (([0, 2], [3, 3], 10, -1.0), "train_loss"),
    (([0, 2], [3, 3], 10, 5.0), "train_loss"),
    (([], [], 10, 1.0), "tokens_seen"),
])
def test_validation(args, match):
    with pytest.raises(ValueError, match=match):
        prequential_complexity(*args)


def test_bound_validation():
    with pytest.raises(ValueError, match="complexity"):
        prequential_bound([1.0], [1.0], 1.0, 0.1, 5.0)
    pc = PrequentialComplexity(1.0, 1.0, 2.0, 1.0, 10, 1)
    with pytest.raises(ValueError, match="unexpected"):
        prequential_bound([1.0], [1.0], 1.0, 0.1, pc, delta_split=0.5)
